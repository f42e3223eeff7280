//! How an [`S3Location`] becomes an OpenDAL S3 backend.
//! Lives here: addressing style, region default, and which credential sources OpenDAL may try.
//! Never here: reading the process environment (that is `Location::parse`'s caller's job)
//! or printing any credential.

use crate::location::S3Location;
use crate::Error;

/// Region used when none is given; S3-compatible servers usually ignore it, and AWS
/// redirects-with-error rather than guessing, so the message names `AWS_REGION`.
const DEFAULT_REGION: &str = "us-east-1";

/// Builds the OpenDAL S3 service for `s3`.
///
/// - Addressing is **path style** (`http://host:port/bucket/key`), OpenDAL's default. It
///   works for AWS, Garage, MinIO and Ceph alike and needs no wildcard DNS on a local
///   endpoint; virtual-host style is never switched on.
/// - With explicit keys, OpenDAL is told not to look anywhere else: no `AWS_*` variables,
///   no `~/.aws/config` or `credentials`, and no EC2 instance metadata (IMDS), whose
///   endpoint would otherwise be probed and can hang off EC2.
/// - Without keys, OpenDAL's default chain runs (environment, profile, web identity,
///   IMDS) so an EC2 instance role works; every attempt is still bounded by the timeout
///   layer.
/// - TLS for `https://` endpoints comes from reqwest with rustls (workspace feature
///   `http-transport-reqwest-rustls`).
///
/// # Errors
/// [`crate::ErrorKind::Config`] when only one half of a key pair is given.
pub(crate) fn s3_builder(s3: &S3Location) -> Result<opendal::services::S3, Error> {
    let mut b = opendal::services::S3::default()
        .bucket(&s3.bucket)
        .root(&format!("/{}", s3.prefix))
        .region(s3.region.as_deref().unwrap_or(DEFAULT_REGION));
    if let Some(ep) = &s3.endpoint {
        b = b.endpoint(ep.trim_end_matches('/'));
    }
    match (&s3.access_key_id, &s3.secret_access_key) {
        (Some(k), Some(s)) => {
            b = b
                .access_key_id(k)
                .secret_access_key(s.expose_secret())
                .disable_config_load()
                .disable_ec2_metadata();
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(Error::config(
                &s3.to_string(),
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not; set both or neither",
            ))
        }
        (None, Some(_)) => {
            return Err(Error::config(
                &s3.to_string(),
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not; set both or neither",
            ))
        }
    }
    Ok(b)
}
