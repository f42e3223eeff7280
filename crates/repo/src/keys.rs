//! Key files: the master key wrapped by a key derived from a password with Argon2id.
//!
//! Lives here: [`KeyFile`] (JSON, one per password), [`KdfParams`], wrapping and unwrapping.
//! Never here: the password or key material in any message or log.

use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{KeyMaterial, MasterKey};
use crate::error::{Error, Result};
use crate::format::{aad, from_cbor, to_cbor};

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 19 MiB, 2 passes, 1 lane: OWASP's recommended Argon2id setting, ~30 ms here, so that
    /// every command (and `snapshots` on 100 snapshots within 0.1 s) stays fast. See
    /// docs/decisions/0004-kdf-cost.md.
    fn default() -> Self {
        KdfParams {
            m_cost: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// The least Argon2id memory (KiB) a key for a password a person chose may use: the
    /// default, OWASP's recommended setting (docs/decisions/0004-kdf-cost.md). Below it a
    /// stolen key file gives up a weak password to offline guessing too cheaply. Machine keys
    /// ([`KdfParams::machine`]) are exempt: their password is random.
    pub const PASSWORD_MIN_M_COST: u32 = 19 * 1024;
    /// The most Argon2id memory (KiB) a key file may ask for (1 GiB); `open` refuses more.
    pub const MAX_M_COST: u32 = MAX_M_COST;

    /// Cheap parameters for tests only (never for real repositories).
    pub fn insecure_for_tests() -> Self {
        KdfParams {
            m_cost: 256,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// The cheapest parameters Argon2id allows (8 KiB, one pass), for machine keys: their
    /// password is a random 256-bit secret, which no amount of guessing can find, so
    /// stretching it buys nothing and would cost every `pg wal-push` its run time.
    pub fn machine() -> Self {
        KdfParams {
            m_cost: 8,
            t_cost: 1,
            p_cost: 1,
        }
    }

    fn argon2(&self) -> Result<Argon2<'static>> {
        let params = Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::Invalid(format!("key derivation parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// A new random password for a machine key: 32 bytes from the OS, as 64 hex digits.
///
/// # Errors
/// When the OS random source fails.
pub fn machine_password() -> Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(&mut bytes[..])
        .map_err(|_| Error::Invalid("the OS random number generator failed".into()))?;
    Ok(Zeroizing::new(hex::encode(&bytes[..])))
}

/// A key file: everything needed to unwrap the master key with one password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// Key file format version (1).
    pub version: u32,
    /// When the key was added (RFC 3339).
    pub created: String,
    /// Host that added it.
    pub hostname: String,
    /// User that added it.
    pub username: String,
    /// Always `argon2id`.
    pub kdf: String,
    /// Argon2id costs.
    pub params: KdfParams,
    /// Salt, hex.
    pub salt: String,
    /// The sealed key material, hex.
    pub data: String,
}

/// Largest key file accepted (they are a few hundred bytes).
const MAX_KEY_FILE: usize = 64 * 1024;
/// Largest Argon2 memory cost accepted from a key file (1 GiB), so a hostile key file cannot
/// make `open` exhaust memory or stall.
const MAX_M_COST: u32 = 1024 * 1024;

impl KeyFile {
    /// Wraps `material` with `password`.
    ///
    /// # Errors
    /// When the parameters are invalid or the random generator fails.
    pub fn wrap(
        material: &KeyMaterial,
        password: &[u8],
        params: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<Self> {
        let mut salt = [0u8; 32];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| Error::Invalid("the system random generator failed".into()))?;
        let kek = derive(&params, password, &salt)?;
        let sealed = kek.seal_stored(aad::KEY, &to_cbor(material));
        Ok(KeyFile {
            version: 1,
            created: jiff::Timestamp::now().to_string(),
            hostname: hostname.into(),
            username: username.into(),
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            data: hex::encode(sealed),
        })
    }

    /// Decodes a key file read from storage, checking its fields are sane.
    ///
    /// # Errors
    /// [`crate::format::DecodeError`] wrapped as a message when malformed.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() > MAX_KEY_FILE {
            return Err(format!("{} bytes is too large for a key file", bytes.len()));
        }
        let k: KeyFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if k.version != 1 || k.kdf != "argon2id" {
            return Err(format!(
                "unsupported key file (version {}, kdf {:?})",
                k.version, k.kdf
            ));
        }
        if k.params.m_cost > MAX_M_COST || k.params.t_cost > 16 || k.params.p_cost > 16 {
            return Err("key derivation costs are out of range".into());
        }
        Ok(k)
    }

    /// Encodes the key file as JSON.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        #[allow(clippy::expect_used)]
        serde_json::to_vec_pretty(self).expect("key file JSON")
    }

    /// Unwraps the key material with `password`; `Ok(None)` when the password does not fit.
    ///
    /// # Errors
    /// When the key file is malformed (bad hex, bad parameters).
    pub fn unwrap_key(&self, password: &[u8]) -> std::result::Result<Option<KeyMaterial>, String> {
        let salt = hex::decode(&self.salt).map_err(|e| format!("salt: {e}"))?;
        let data = hex::decode(&self.data).map_err(|e| format!("data: {e}"))?;
        let kek = derive(&self.params, password, &salt).map_err(|e| e.to_string())?;
        match kek.open(aad::KEY, &data) {
            Ok(plain) => {
                let plain = Zeroizing::new(plain);
                from_cbor::<KeyMaterial>("key material", &plain)
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            Err(_) => Ok(None),
        }
    }
}

fn derive(params: &KdfParams, password: &[u8], salt: &[u8]) -> Result<MasterKey> {
    let mut out = Zeroizing::new([0u8; 32]);
    params
        .argon2()?
        .hash_password_into(password, salt, out.as_mut())
        .map_err(|e| Error::Invalid(format!("key derivation: {e}")))?;
    Ok(MasterKey::new(KeyMaterial {
        enc: *out,
        id: [0; 32],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_wrong_password() {
        let m = KeyMaterial::random().unwrap();
        let kf = KeyFile::wrap(&m, b"s3cret", KdfParams::insecure_for_tests(), "h", "u").unwrap();
        let kf = KeyFile::decode(&kf.encode()).unwrap();
        let back = kf.unwrap_key(b"s3cret").unwrap().unwrap();
        assert_eq!(back.enc, m.enc);
        assert_eq!(back.id, m.id);
        assert!(kf.unwrap_key(b"wrong").unwrap().is_none());
        let text = String::from_utf8(kf.encode()).unwrap();
        assert!(!text.contains("s3cret"));
    }

    #[test]
    fn hostile_key_files_are_refused() {
        assert!(KeyFile::decode(b"{").is_err());
        let m = KeyMaterial::random().unwrap();
        let mut kf = KeyFile::wrap(&m, b"p", KdfParams::insecure_for_tests(), "h", "u").unwrap();
        kf.params.m_cost = u32::MAX;
        assert!(KeyFile::decode(&kf.encode()).is_err());
    }
}
