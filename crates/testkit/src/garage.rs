//! [`GarageServer`]: a real single-node Garage (S3-compatible) on free 127.0.0.1 ports, in
//! its own temp dir, stopped by PID when dropped.
//! Never here: installing Garage (that is `cargo xtask setup`) or skipping when it is absent.

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, Error, Result};

/// Environment variable naming the `garage` binary; `cargo xtask test` sets it.
pub const GARAGE_BIN_ENV: &str = "LIFEBOAT_GARAGE_BIN";

/// Where `cargo xtask setup` installs Garage when [`GARAGE_BIN_ENV`] is unset.
pub const DEFAULT_GARAGE_BIN: &str = "/var/cache/lifeboat/garage/bin/garage";

/// How long a fresh node may take to answer `garage status` and report healthy.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The `garage` binary to run: [`GARAGE_BIN_ENV`] or [`DEFAULT_GARAGE_BIN`].
///
/// # Errors
/// [`Error::MissingBinary`] naming `cargo xtask setup` when no file is there.
pub fn garage_bin() -> Result<PathBuf> {
    let path = std::env::var_os(GARAGE_BIN_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_GARAGE_BIN));
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            what: "garage",
            path: path.display().to_string(),
            env: GARAGE_BIN_ENV,
        })
    }
}

/// A running single-node Garage with one bucket and one key that owns it.
///
/// Use [`GarageServer::env`] as the environment lookup of `Location::parse` to point a
/// storage at it. Dropping it kills the server (by PID) and removes its data.
///
/// A test that starts one has `garage_` in its name: `cargo xtask test` runs those last,
/// once Garage (which it may be building meanwhile) is installed.
pub struct GarageServer {
    child: Child,
    bin: PathBuf,
    dir: tempfile::TempDir,
    endpoint: String,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
}

impl fmt::Debug for GarageServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GarageServer")
            .field("pid", &self.child.id())
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .finish()
    }
}

impl GarageServer {
    /// The S3 region Garage is configured with.
    pub const REGION: &'static str = "garage";

    /// Starts Garage and waits until it serves S3 with a bucket and key ready.
    ///
    /// # Errors
    /// [`Error::MissingBinary`] when Garage is not installed; [`Error::NotReady`] with the
    /// server's log tail when it does not come up within 60 s; [`Error::Command`] when a
    /// setup command fails.
    pub fn start() -> Result<Self> {
        let bin = garage_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-garage-")
            .tempdir()
            .map_err(Error::io("create garage temp dir"))?;
        let (rpc, s3, admin) = (free_port()?, free_port()?, free_port()?);
        let config = format!(
            r#"metadata_dir = "{root}/meta"
data_dir = "{root}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{region}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
            root = dir.path().display(),
            secret = random_hex(32)?,
            region = Self::REGION,
        );
        let config_path = dir.path().join("garage.toml");
        std::fs::write(&config_path, config).map_err(Error::io("write garage config"))?;
        let log = |name: &str| {
            std::fs::File::create(dir.path().join(name)).map_err(Error::io("create garage log"))
        };
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config_path)
            .arg("server")
            .env("RUST_LOG", "garage=info")
            .stdin(Stdio::null())
            .stdout(log("stdout.log")?)
            .stderr(log("stderr.log")?)
            .spawn()
            .map_err(Error::io(format!("start {}", bin.display())))?;
        let mut server = GarageServer {
            child,
            bin,
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "lifeboat-test".to_string(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
        };
        server.setup(admin)?;
        Ok(server)
    }

    fn setup(&mut self, admin_port: u16) -> Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        self.wait_until("garage status", deadline, |s| {
            s.try_garage(&["status"]).map(|_| ())
        })?;
        let out = self.garage(&["node", "id"])?;
        let node = out
            .lines()
            .find_map(|l| l.split_once('@').map(|(id, _)| id.trim().to_string()))
            .ok_or_else(|| Error::Command {
                what: "garage node id".into(),
                detail: format!("no node id in output: {out}"),
            })?;
        self.garage(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        self.garage(&["layout", "apply", "--version", "1"])?;
        self.wait_until("garage /health", deadline, |_| {
            http_status(admin_port, "/health").and_then(|code| {
                if code == 200 {
                    Ok(())
                } else {
                    Err(format!("/health answered {code}"))
                }
            })
        })?;
        let bucket = self.bucket.clone();
        self.garage(&["bucket", "create", &bucket])?;
        let out = self.garage(&["key", "create", "lifeboat-test-key"])?;
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim_start_matches(':').trim().to_string())
                .filter(|v| !v.is_empty())
        };
        match (field("Key ID"), field("Secret key")) {
            (Some(id), Some(secret)) => {
                self.access_key_id = id;
                self.secret_access_key = secret;
            }
            _ => {
                return Err(Error::Command {
                    what: "garage key create".into(),
                    detail: "output has no `Key ID:` and `Secret key:` lines".into(),
                })
            }
        }
        self.garage(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &bucket,
            "--key",
            "lifeboat-test-key",
        ])?;
        Ok(())
    }

    /// Polls `probe` until it succeeds, the server exits, or `deadline` passes.
    fn wait_until(
        &mut self,
        what: &str,
        deadline: Instant,
        mut probe: impl FnMut(&Self) -> std::result::Result<(), String>,
    ) -> Result<()> {
        loop {
            let last = match probe(self) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::NotReady {
                    what: format!("garage server ({what})"),
                    secs: READY_DEADLINE.as_secs(),
                    detail: format!("it exited with {status}; log:\n{}", self.log_tail()),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    what: format!("garage server ({what})"),
                    secs: READY_DEADLINE.as_secs(),
                    detail: format!("last error: {last}; log:\n{}", self.log_tail()),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Runs `garage -c CONFIG ARGS…`, returning stdout.
    fn garage(&self, args: &[&str]) -> Result<String> {
        self.try_garage(args).map_err(|detail| Error::Command {
            what: format!("garage {}", args.join(" ")),
            detail,
        })
    }

    /// Like [`GarageServer::garage`], with the failure as text (for polling).
    fn try_garage(&self, args: &[&str]) -> std::result::Result<String, String> {
        let out: Output = Command::new(&self.bin)
            .arg("-c")
            .arg(self.config_path())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run garage {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "garage {} exited with {}: {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `http://127.0.0.1:PORT` of the S3 API.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The S3 region ([`GarageServer::REGION`]).
    pub fn region(&self) -> &str {
        Self::REGION
    }

    /// The bucket created for the test.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The access key id that owns the bucket.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret of that key.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's working directory (config, metadata, data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An environment lookup with `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` for this server, for `Location::parse`.
    pub fn env(&self, key: &str) -> Option<String> {
        match key {
            "AWS_ENDPOINT_URL" => Some(self.endpoint.clone()),
            "AWS_REGION" => Some(Self::REGION.to_string()),
            "AWS_ACCESS_KEY_ID" => Some(self.access_key_id.clone()),
            "AWS_SECRET_ACCESS_KEY" => Some(self.secret_access_key.clone()),
            _ => None,
        }
    }
}

impl Drop for GarageServer {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this PID only; then reap it so no zombie remains.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` random bytes from the OS, as lowercase hex.
fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(Error::io("read /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The status code of `GET path` on 127.0.0.1:`port`.
fn http_status(port: u16, path: &str) -> std::result::Result<u16, String> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    c.read_exact(&mut head).map_err(|e| e.to_string())?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "not an HTTP response".to_string())
}
