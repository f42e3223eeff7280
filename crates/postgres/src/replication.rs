//! A blocking client of PostgreSQL's physical streaming replication protocol: what
//! `pg_receivewal` speaks to a walsender.
//!
//! Lives here: [`ReplicationConn`] (a connection in `replication=true` mode: connecting over
//! TCP or a Unix socket, authentication by trust, cleartext password, md5 or SCRAM-SHA-256,
//! and the replication commands `IDENTIFY_SYSTEM`, `SHOW`, `CREATE_REPLICATION_SLOT`,
//! `READ_REPLICATION_SLOT`, `TIMELINE_HISTORY`, `START_REPLICATION`), [`WalStream`] (the
//! copy-both stream of WAL and keepalives, and standby status updates), and the message
//! framing under both. Messages are encoded and decoded with `postgres-protocol`; the socket
//! I/O is ours, so that reads can time out without losing a byte and buffers are reused.
//!
//! Never here: TLS, logical replication, deciding what to do with the WAL (writing segment
//! files, storing them in a repository), and passwords in any error or `Debug` output.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use lifeboat_types::Lsn;
use postgres::config::{ChannelBinding as DsnChannelBinding, Host, SslMode};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend, frontend};

/// A failure of the replication protocol. Messages name the server (`host:port` or the
/// socket path), never a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The connection string could not be parsed or asks for something unsupported.
    #[error("invalid PostgreSQL connection string: {0}")]
    Dsn(String),
    /// No server named by the connection string could be reached.
    #[error("could not connect to PostgreSQL: {attempts}")]
    Connect {
        /// Every server tried, each with why it failed.
        attempts: String,
    },
    /// Reading from or writing to the server failed.
    #[error("PostgreSQL {target}: {what}")]
    Io {
        /// The server.
        target: String,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The server did not answer in time.
    #[error("PostgreSQL {target}: no answer within {timeout:?} while {what}")]
    Timeout {
        /// The server.
        target: String,
        /// What was being done.
        what: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The server closed the connection.
    #[error("PostgreSQL {target} closed the connection while {what}")]
    Closed {
        /// The server.
        target: String,
        /// What was being done.
        what: String,
    },
    /// The server refused the user (wrong or missing password, no `pg_hba.conf` entry).
    #[error("PostgreSQL {target}: authentication of user {user:?} failed: {message}")]
    Auth {
        /// The server.
        target: String,
        /// The database user.
        user: String,
        /// Why, in the server's words where it gave some.
        message: String,
    },
    /// The server answered with an error.
    #[error("PostgreSQL {target}: {error}")]
    Server {
        /// The server.
        target: String,
        /// What it said.
        error: Box<ServerError>,
    },
    /// The server asks for something this client does not do (TLS, GSSAPI, ...).
    #[error("PostgreSQL {target}: {what} is not supported by Lifeboat")]
    Unsupported {
        /// The server.
        target: String,
        /// What was asked for.
        what: String,
    },
    /// The server sent something the protocol does not allow here.
    #[error("PostgreSQL {target}: protocol error: {message}")]
    Protocol {
        /// The server.
        target: String,
        /// What was wrong.
        message: String,
    },
    /// The caller asked for something that cannot work (a bad slot name, a stream used
    /// after it failed).
    #[error("{0}")]
    Invalid(String),
}

impl ReplicationError {
    /// Whether trying again (with a new connection) may succeed: I/O failures, timeouts,
    /// closed connections, and server errors of the classes connection exception (08),
    /// insufficient resources (53) and operator intervention (57, e.g. a shutdown).
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicationError::Connect { .. }
            | ReplicationError::Io { .. }
            | ReplicationError::Timeout { .. }
            | ReplicationError::Closed { .. } => true,
            ReplicationError::Server { error, .. } => {
                let c = &error.code;
                c.starts_with("08") || c.starts_with("53") || c.starts_with("57")
            }
            _ => false,
        }
    }

    /// The server's SQLSTATE, when the server sent an error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ReplicationError::Server { error, .. } => Some(&error.code),
            _ => None,
        }
    }
}

/// An error as PostgreSQL reports it (`ErrorResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL` or `PANIC`.
    pub severity: String,
    /// The SQLSTATE, e.g. `42710`.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// The detail message, when the server sent one.
    pub detail: Option<String>,
    /// The hint, when the server sent one.
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " (detail: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

type Result<T, E = ReplicationError> = std::result::Result<T, E>;

/// SQLSTATE `duplicate_object`: a slot of that name exists.
const DUPLICATE_OBJECT: &str = "42710";

/// The largest message accepted from the server. WAL arrives in messages of at most
/// 128 KiB; this bound only stops a broken server from making us buffer without end.
const MAX_MESSAGE: usize = 64 << 20;

/// The read buffer's starting size: several full WAL messages.
const READ_BUFFER: usize = 512 << 10;

/// Below this much free space after the buffered bytes, move them to the front before
/// reading, so reads stay large.
const MIN_READ: usize = 64 << 10;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// What `IDENTIFY_SYSTEM` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's system identifier (decimal, as `pg_control_system()` prints it).
    pub system_id: String,
    /// The server's current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
}

/// What `READ_REPLICATION_SLOT` tells about an existing slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// The oldest WAL position the slot keeps, when it keeps any.
    pub restart_lsn: Option<Lsn>,
    /// The timeline of `restart_lsn`.
    pub timeline: Option<u32>,
}

/// One thing that arrived on a [`WalStream`].
#[derive(Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// WAL bytes (`XLogData`), to be written at `start`.
    Data {
        /// The WAL position of the first byte.
        start: Lsn,
        /// The WAL bytes.
        data: Bytes,
    },
    /// A keepalive: the server's WAL end, and whether it wants a status update at once.
    Keepalive {
        /// The server's current end of WAL.
        server_end: Lsn,
        /// Whether the server asks for a [`WalStream::send_status`] now (it disconnects
        /// after `wal_sender_timeout` without one).
        reply_requested: bool,
    },
    /// Nothing complete arrived within the timeout given to [`WalStream::next`].
    Idle,
    /// The server sent all WAL of the requested timeline: it continues on `next_timeline`
    /// from `next_start`. Call [`WalStream::finish`], then start again on the new timeline.
    TimelineEnded {
        /// The timeline that follows.
        next_timeline: u32,
        /// Where it branched off (the end of the streamed timeline).
        next_start: Lsn,
    },
}

impl fmt::Debug for StreamEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamEvent::Data { start, data } => f
                .debug_struct("Data")
                .field("start", &format_args!("{start}"))
                .field("len", &data.len())
                .finish(),
            StreamEvent::Keepalive {
                server_end,
                reply_requested,
            } => f
                .debug_struct("Keepalive")
                .field("server_end", &format_args!("{server_end}"))
                .field("reply_requested", reply_requested)
                .finish(),
            StreamEvent::Idle => f.write_str("Idle"),
            StreamEvent::TimelineEnded {
                next_timeline,
                next_start,
            } => f
                .debug_struct("TimelineEnded")
                .field("next_timeline", next_timeline)
                .field("next_start", &format_args!("{next_start}"))
                .finish(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Framing

/// Splits the first message off `buf`: `Ok(Some((tag, body_len)))` when a whole message is
/// there (it takes `5 + body_len` bytes), `Ok(None)` when more bytes are needed.
///
/// # Errors
/// A length below 4 or above [`MAX_MESSAGE`].
fn split_frame(buf: &[u8]) -> Result<Option<(u8, usize)>, String> {
    let Some(header) = backend::Header::parse(buf).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let body_len = usize::try_from(header.len())
        .map_err(|_| "negative message length".to_string())?
        .saturating_sub(4);
    if body_len > MAX_MESSAGE {
        return Err(format!(
            "message {:?} claims {body_len} bytes, more than the {MAX_MESSAGE} allowed",
            char::from(header.tag())
        ));
    }
    Ok((buf.len() >= 5 + body_len).then_some((header.tag(), body_len)))
}

/// The bytes a message needs in the buffer, when its header is there.
fn frame_len(buf: &[u8]) -> usize {
    match buf.get(1..5) {
        Some(&[a, b, c, d]) => 1 + u32::from_be_bytes([a, b, c, d]) as usize,
        _ => 5,
    }
}

/// A message inside the copy-both stream.
#[derive(Debug, PartialEq, Eq)]
enum CopyMessage<'a> {
    /// `XLogData`: start position and the WAL bytes.
    XLogData { start: Lsn, data: &'a [u8] },
    /// Primary keepalive.
    Keepalive {
        server_end: Lsn,
        reply_requested: bool,
    },
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Decodes the body of a `CopyData` message of a physical replication stream.
fn decode_copy_data(body: &[u8]) -> Result<CopyMessage<'_>, String> {
    match body.first() {
        // 'w', dataStart, walEnd, sendTime, data
        Some(b'w') => {
            let start = be_u64(body, 1).ok_or("XLogData shorter than its header")?;
            let data = body.get(25..).ok_or("XLogData shorter than its header")?;
            Ok(CopyMessage::XLogData {
                start: Lsn(start),
                data,
            })
        }
        // 'k', walEnd, sendTime, replyRequested
        Some(b'k') => {
            if body.len() != 18 {
                return Err(format!("keepalive of {} bytes, not 18", body.len()));
            }
            let end = be_u64(body, 1).ok_or("short keepalive")?;
            Ok(CopyMessage::Keepalive {
                server_end: Lsn(end),
                reply_requested: body[17] != 0,
            })
        }
        Some(&t) => Err(format!("unknown replication message {:?}", char::from(t))),
        None => Err("empty CopyData message".into()),
    }
}

/// Decodes a whole message with `postgres-protocol` (copying it; not for WAL data).
fn decode_message(tag: u8, body: &[u8]) -> Result<backend::Message, String> {
    let mut buf = BytesMut::with_capacity(body.len() + 5);
    buf.put_u8(tag);
    buf.put_u32(u32::try_from(body.len() + 4).map_err(|_| "message too long")?);
    buf.put_slice(body);
    match backend::Message::parse(&mut buf) {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(format!("truncated message {:?}", char::from(tag))),
        Err(e) => Err(format!("message {:?}: {e}", char::from(tag))),
    }
}

/// The fields of an `ErrorResponse` or `NoticeResponse`.
#[derive(Debug, Default)]
struct ServerMessage {
    severity: String,
    code: String,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

fn server_message(mut fields: backend::ErrorFields<'_>) -> Result<ServerMessage, String> {
    let mut m = ServerMessage::default();
    let mut localized_severity = String::new();
    while let Some(f) = fields.next().map_err(|e| format!("error fields: {e}"))? {
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'V' => m.severity = v,
            b'S' => localized_severity = v,
            b'C' => m.code = v,
            b'M' => m.message = v,
            b'D' => m.detail = Some(v),
            b'H' => m.hint = Some(v),
            _ => {}
        }
    }
    if m.severity.is_empty() {
        m.severity = localized_severity;
    }
    Ok(m)
}

/// The values of a `DataRow`, `None` for NULL.
fn row_values(body: &backend::DataRowBody) -> Result<Vec<Option<Vec<u8>>>, String> {
    let buf = body.buffer();
    body.ranges()
        .map(|r| {
            Ok(match r {
                Some(r) => Some(
                    buf.get(r)
                        .ok_or_else(|| io::Error::other("bad DataRow range"))?
                        .to_vec(),
                ),
                None => None,
            })
        })
        .collect()
        .map_err(|e: io::Error| format!("DataRow: {e}"))
}

// ---------------------------------------------------------------------------------------
// Sockets

/// A TCP or Unix-domain socket.
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_read_timeout(t),
            Socket::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_write_timeout(t),
            Socket::Unix(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.flush(),
            Socket::Unix(s) => s.flush(),
        }
    }
}

/// A socket with a read buffer that keeps unparsed bytes across timeouts, and a reused
/// write buffer.
struct Wire {
    sock: Socket,
    /// `host:port` or the socket path.
    target: String,
    /// Always initialized; `buf[start..end]` holds bytes not yet parsed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Outgoing messages, written by [`Wire::send`].
    out: BytesMut,
    /// How long writes may block.
    write_timeout: Duration,
}

/// How to wait in [`Wire::read_frame`].
#[derive(Clone, Copy)]
struct Wait<'a> {
    deadline: Instant,
    what: &'a str,
}

impl Wire {
    fn new(sock: Socket, target: String, write_timeout: Duration) -> Result<Self> {
        let write_timeout = write_timeout.max(Duration::from_millis(1));
        sock.set_write_timeout(Some(write_timeout))
            .map_err(|source| ReplicationError::Io {
                target: target.clone(),
                what: "set the socket's write timeout".into(),
                source,
            })?;
        Ok(Wire {
            sock,
            target,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            out: BytesMut::with_capacity(1024),
            write_timeout,
        })
    }

    fn protocol(&self, message: impl Into<String>) -> ReplicationError {
        ReplicationError::Protocol {
            target: self.target.clone(),
            message: message.into(),
        }
    }

    /// Writes out everything in `out`.
    fn send(&mut self, what: &str) -> Result<()> {
        let r = self.sock.write_all(&self.out);
        self.out.clear();
        r.map_err(|source| match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ReplicationError::Timeout {
                target: self.target.clone(),
                what: what.to_string(),
                timeout: self.write_timeout,
            },
            _ => ReplicationError::Io {
                target: self.target.clone(),
                what: what.to_string(),
                source,
            },
        })
    }

    /// The next whole message: its tag and the range of its body in `self.buf` (valid
    /// until the next call). `Ok(None)` when none is complete by the deadline; the bytes
    /// of a partial message stay buffered for the next call.
    fn read_frame(&mut self, wait: Wait<'_>) -> Result<Option<(u8, Range<usize>)>> {
        loop {
            let pending = &self.buf[self.start..self.end];
            match split_frame(pending) {
                Ok(Some((tag, body_len))) => {
                    let body = self.start + 5..self.start + 5 + body_len;
                    self.start = body.end;
                    return Ok(Some((tag, body)));
                }
                Ok(None) => {}
                Err(e) => return Err(self.protocol(e)),
            }
            let needed = frame_len(pending);
            self.make_room(needed);
            let left = wait.deadline.saturating_duration_since(Instant::now());
            let timeout = left.max(Duration::from_millis(1));
            self.sock
                .set_read_timeout(Some(timeout))
                .map_err(|source| ReplicationError::Io {
                    target: self.target.clone(),
                    what: "set the socket's read timeout".into(),
                    source,
                })?;
            match self.sock.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    return Err(ReplicationError::Closed {
                        target: self.target.clone(),
                        what: wait.what.to_string(),
                    })
                }
                Ok(n) => self.end += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= wait.deadline {
                        return Ok(None);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ReplicationError::Io {
                        target: self.target.clone(),
                        what: wait.what.to_string(),
                        source,
                    })
                }
            }
        }
    }

    /// Makes `buf[start..]` hold at least `needed` bytes and leaves room to read.
    fn make_room(&mut self, needed: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // Give back a buffer grown for one huge message.
            if self.buf.len() > 4 * READ_BUFFER && needed <= READ_BUFFER {
                self.buf.truncate(READ_BUFFER);
                self.buf.shrink_to_fit();
            }
        }
        let fits = self.buf.len() - self.start >= needed;
        if self.start > 0 && (!fits || self.buf.len() - self.end < MIN_READ) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < needed || self.buf.len() == self.end {
            let size = needed.max(self.buf.len() * 2);
            self.buf.resize(size, 0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Connecting

/// One place to try, from the connection string.
enum Endpoint {
    Tcp {
        host: String,
        addr: Option<IpAddr>,
        port: u16,
    },
    Unix {
        dir: PathBuf,
        port: u16,
    },
}

impl Endpoint {
    fn target(&self) -> String {
        match self {
            Endpoint::Tcp { host, port, .. } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Tcp { host, port, .. } => format!("{host}:{port}"),
            Endpoint::Unix { dir, port } => {
                dir.join(format!(".s.PGSQL.{port}")).display().to_string()
            }
        }
    }
}

/// The endpoints of a parsed connection string, in order.
fn endpoints(config: &postgres::Config) -> Result<Vec<Endpoint>> {
    let mut hosts: Vec<Host> = config.get_hosts().to_vec();
    let addrs = config.get_hostaddrs();
    if hosts.is_empty() && addrs.is_empty() {
        // libpq's default: the Unix socket in the usual places.
        hosts = vec![
            Host::Unix(PathBuf::from("/var/run/postgresql")),
            Host::Unix(PathBuf::from("/tmp")),
        ];
    }
    let count = hosts.len().max(addrs.len());
    if !addrs.is_empty() && !hosts.is_empty() && addrs.len() != hosts.len() {
        return Err(ReplicationError::Dsn(format!(
            "{} hostaddr values for {} hosts",
            addrs.len(),
            hosts.len()
        )));
    }
    let ports = config.get_ports();
    let port = |i: usize| -> Result<u16> {
        match ports.len() {
            0 => Ok(5432),
            1 => Ok(ports[0]),
            n if n == count => Ok(ports[i]),
            n => Err(ReplicationError::Dsn(format!(
                "{n} ports for {count} hosts"
            ))),
        }
    };
    (0..count)
        .map(|i| {
            let port = port(i)?;
            let addr = addrs.get(i).copied();
            Ok(match hosts.get(i) {
                Some(Host::Unix(dir)) if addr.is_none() => Endpoint::Unix {
                    dir: dir.clone(),
                    port,
                },
                Some(Host::Tcp(host)) => Endpoint::Tcp {
                    host: host.clone(),
                    addr,
                    port,
                },
                _ => Endpoint::Tcp {
                    host: addr.map(|a| a.to_string()).unwrap_or_default(),
                    addr,
                    port,
                },
            })
        })
        .collect()
}

/// Opens the socket of one endpoint before `deadline`.
fn open_socket(ep: &Endpoint, deadline: Instant, timeout: Duration) -> Result<Socket> {
    let target = ep.target();
    let io_err = |what: &str, source: io::Error| ReplicationError::Io {
        target: target.clone(),
        what: what.to_string(),
        source,
    };
    match ep {
        Endpoint::Unix { dir, port } => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            UnixStream::connect(path)
                .map(Socket::Unix)
                .map_err(|e| io_err("connect", e))
        }
        Endpoint::Tcp { host, addr, port } => {
            let addrs: Vec<SocketAddr> = match addr {
                Some(a) => vec![SocketAddr::new(*a, *port)],
                None => (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| io_err("resolve the host name", e))?
                    .collect(),
            };
            let mut last = None;
            for a in addrs {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match TcpStream::connect_timeout(&a, left) {
                    Ok(s) => {
                        s.set_nodelay(true)
                            .map_err(|e| io_err("set TCP_NODELAY", e))?;
                        return Ok(Socket::Tcp(s));
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        last = Some(ReplicationError::Timeout {
                            target: target.clone(),
                            what: "connecting".into(),
                            timeout,
                        })
                    }
                    Err(e) => last = Some(io_err("connect", e)),
                }
            }
            Err(last.unwrap_or_else(|| ReplicationError::Timeout {
                target: target.clone(),
                what: "connecting".into(),
                timeout,
            }))
        }
    }
}

/// The text of a connection-string parse error, without echoing any of its characters
/// (the one that tripped the parser could belong to a password).
fn dsn_error(e: &postgres::Error) -> ReplicationError {
    let cause = std::error::Error::source(e)
        .map(|c| c.to_string())
        .unwrap_or_else(|| e.to_string());
    let cause = match cause.find(" but got") {
        Some(i) => cause[..i].to_string(),
        None => cause,
    };
    ReplicationError::Dsn(cause)
}

// ---------------------------------------------------------------------------------------
// The connection

/// A connection in physical replication mode (`replication=true`), ready for replication
/// commands. [`ReplicationConn::start_physical`] turns it into a [`WalStream`].
pub struct ReplicationConn {
    wire: Wire,
    user: String,
    /// How long a command may wait for its answer.
    timeout: Duration,
    /// Set after a failure that leaves the protocol state unknown.
    broken: bool,
}

impl fmt::Debug for ReplicationConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationConn")
            .field("target", &self.wire.target)
            .field("user", &self.user)
            .field("timeout", &self.timeout)
            .field("broken", &self.broken)
            .finish()
    }
}

impl ReplicationConn {
    /// Connects in physical replication mode to the first server of `dsn` (a libpq
    /// `key=value` string or a `postgresql://` URL) that answers, trying its hosts in
    /// order. A host starting with `/` is a Unix socket directory. `application_name` is
    /// used unless the DSN names one (libpq's `fallback_application_name`). `timeout`
    /// bounds connecting (unless the DSN sets `connect_timeout`) and every command's wait
    /// for its answer.
    ///
    /// Without a host the Unix sockets in `/var/run/postgresql` and `/tmp` are tried;
    /// without a user, `$USER`. The password comes from the DSN only (not `PGPASSWORD` or
    /// `.pgpass`). `sslmode=prefer` (the default) connects without TLS.
    ///
    /// # Errors
    /// [`ReplicationError::Dsn`] for an unparsable DSN or one requiring TLS or channel
    /// binding; [`ReplicationError::Auth`] when the server refuses the user (the remaining
    /// hosts are not tried, like libpq); with one host, that host's error; with several,
    /// [`ReplicationError::Connect`] naming each failure.
    pub fn connect(dsn: &str, application_name: &str, timeout: Duration) -> Result<Self> {
        let config: postgres::Config = dsn.parse().map_err(|e| dsn_error(&e))?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(ReplicationError::Dsn(
                "sslmode=require: Lifeboat connects without TLS (loopback or Unix socket)".into(),
            ));
        }
        if config.get_channel_binding() == DsnChannelBinding::Require {
            return Err(ReplicationError::Dsn(
                "channel_binding=require needs TLS, which Lifeboat does not use".into(),
            ));
        }
        let user = match config.get_user() {
            Some(u) => u.to_string(),
            None => std::env::var("USER")
                .ok()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| ReplicationError::Dsn("no user given".into()))?,
        };
        let app = config
            .get_application_name()
            .unwrap_or(application_name)
            .to_string();
        let connect_timeout = config.get_connect_timeout().copied().unwrap_or(timeout);
        let eps = endpoints(&config)?;
        let mut failures = Vec::new();
        for ep in &eps {
            let deadline = Instant::now() + connect_timeout;
            let attempt = open_socket(ep, deadline, connect_timeout).and_then(|sock| {
                let wire = Wire::new(sock, ep.target(), timeout)?;
                let mut conn = ReplicationConn {
                    wire,
                    user: user.clone(),
                    timeout,
                    broken: false,
                };
                conn.startup(&app, config.get_password(), deadline, connect_timeout)?;
                Ok(conn)
            });
            match attempt {
                Ok(conn) => return Ok(conn),
                Err(e @ ReplicationError::Auth { .. }) => return Err(e),
                Err(e) => failures.push(e),
            }
        }
        if failures.len() == 1 {
            if let Some(e) = failures.pop() {
                return Err(e);
            }
        }
        Err(ReplicationError::Connect {
            attempts: failures
                .iter()
                .map(|e| {
                    let mut s = e.to_string();
                    if let Some(src) = std::error::Error::source(e) {
                        s = format!("{s}: {src}");
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    /// The server this connection talks to (`host:port` or the socket path).
    pub fn target(&self) -> &str {
        &self.wire.target
    }

    fn auth_error(&self, message: impl Into<String>) -> ReplicationError {
        ReplicationError::Auth {
            target: self.wire.target.clone(),
            user: self.user.clone(),
            message: message.into(),
        }
    }

    fn unsupported(&self, what: &str) -> ReplicationError {
        ReplicationError::Unsupported {
            target: self.wire.target.clone(),
            what: what.to_string(),
        }
    }

    /// The error for an `ErrorResponse`: [`ReplicationError::Auth`] for class 28
    /// (invalid authorization), [`ReplicationError::Server`] otherwise.
    fn server_error(&self, body: &backend::ErrorResponseBody) -> ReplicationError {
        let m = match server_message(body.fields()) {
            Ok(m) => m,
            Err(e) => return self.wire.protocol(e),
        };
        if m.code.starts_with("28") {
            let mut message = format!("{} ({})", m.message, m.code);
            if m.message.contains("no encryption") {
                message.push_str(
                    "; Lifeboat connects without TLS: pg_hba.conf needs a `host` (not \
                     `hostssl`) replication line for this client",
                );
            }
            return self.auth_error(message);
        }
        ReplicationError::Server {
            target: self.wire.target.clone(),
            error: Box::new(ServerError {
                severity: m.severity,
                code: m.code,
                message: m.message,
                detail: m.detail,
                hint: m.hint,
            }),
        }
    }

    fn notice(&self, body: &backend::NoticeResponseBody) {
        if let Ok(m) = server_message(body.fields()) {
            tracing::debug!(server = %self.wire.target, code = %m.code, "{}: {}", m.severity, m.message);
        }
    }

    /// Reads the next message before `deadline`, decoded with `postgres-protocol`
    /// (`None` for `CopyBothResponse`, which it does not know).
    fn read_message(&mut self, deadline: Instant, what: &str) -> Result<Option<backend::Message>> {
        let wait = Wait { deadline, what };
        let Some((tag, body)) = self.wire.read_frame(wait)? else {
            return Err(ReplicationError::Timeout {
                target: self.wire.target.clone(),
                what: what.to_string(),
                timeout: self.timeout,
            });
        };
        if tag == b'W' {
            return Ok(None);
        }
        decode_message(tag, &self.wire.buf[body])
            .map(Some)
            .map_err(|e| self.wire.protocol(format!("{e} while {what}")))
    }

    /// The startup message, authentication, and the messages up to `ReadyForQuery`.
    fn startup(
        &mut self,
        app: &str,
        password: Option<&[u8]>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<()> {
        let mut params = vec![("user", self.user.as_str()), ("replication", "true")];
        if !app.is_empty() {
            params.push(("application_name", app));
        }
        frontend::startup_message(params, &mut self.wire.out)
            .map_err(|e| ReplicationError::Invalid(format!("startup message: {e}")))?;
        self.wire.send("sending the startup message")?;
        let saved = self.timeout;
        self.timeout = timeout;
        let r = self.authenticate(password, deadline);
        self.timeout = saved;
        r?;
        loop {
            match self.read_message(deadline, "starting up")? {
                Some(backend::Message::ReadyForQuery(_)) => return Ok(()),
                Some(backend::Message::BackendKeyData(_))
                | Some(backend::Message::ParameterStatus(_)) => {}
                Some(backend::Message::NoticeResponse(n)) => self.notice(&n),
                Some(backend::Message::ErrorResponse(e)) => return Err(self.server_error(&e)),
                _ => return Err(self.wire.protocol("unexpected message while starting up")),
            }
        }
    }

    fn need_password<'p>(&self, password: Option<&'p [u8]>) -> Result<&'p [u8]> {
        password.ok_or_else(|| {
            self.auth_error("the server asks for a password and the connection string has none")
        })
    }

    fn authenticate(&mut self, password: Option<&[u8]>, deadline: Instant) -> Result<()> {
        let what = "authenticating";
        let mut scram: Option<ScramSha256> = None;
        let send_err = |e: io::Error| ReplicationError::Invalid(format!("encode: {e}"));
        loop {
            let Some(msg) = self.read_message(deadline, what)? else {
                return Err(self.wire.protocol("CopyBothResponse while authenticating"));
            };
            match msg {
                backend::Message::AuthenticationOk => return Ok(()),
                backend::Message::AuthenticationCleartextPassword => {
                    let pw = self.need_password(password)?;
                    frontend::password_message(pw, &mut self.wire.out).map_err(send_err)?;
                    self.wire.send(what)?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let pw = self.need_password(password)?;
                    let hash = md5_hash(self.user.as_bytes(), pw, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.wire.out)
                        .map_err(send_err)?;
                    self.wire.send(what)?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut scram_offered = false;
                    while let Some(m) = mechanisms
                        .next()
                        .map_err(|e| self.wire.protocol(format!("SASL mechanisms: {e}")))?
                    {
                        scram_offered |= m == SCRAM_SHA_256;
                    }
                    if !scram_offered {
                        return Err(self.unsupported("a SASL mechanism other than SCRAM-SHA-256"));
                    }
                    let pw = self.need_password(password)?;
                    let s = ScramSha256::new(pw, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.wire.out)
                        .map_err(send_err)?;
                    scram = Some(s);
                    self.wire.send(what)?;
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let Some(s) = scram.as_mut() else {
                        return Err(self.wire.protocol("SASL continue without SASL start"));
                    };
                    if let Err(e) = s.update(body.data()) {
                        return Err(self
                            .wire
                            .protocol(format!("SCRAM server-first message: {e}")));
                    }
                    frontend::sasl_response(s.message(), &mut self.wire.out).map_err(send_err)?;
                    self.wire.send(what)?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let Some(mut s) = scram.take() else {
                        return Err(self.wire.protocol("SASL final without SASL start"));
                    };
                    s.finish(body.data()).map_err(|e| {
                        self.auth_error(format!(
                            "the server's SCRAM proof does not verify ({e}); is this the right server?"
                        ))
                    })?;
                }
                backend::Message::ErrorResponse(e) => return Err(self.server_error(&e)),
                backend::Message::NoticeResponse(n) => self.notice(&n),
                backend::Message::AuthenticationGss
                | backend::Message::AuthenticationGssContinue(_)
                | backend::Message::AuthenticationSspi
                | backend::Message::AuthenticationKerberosV5
                | backend::Message::AuthenticationScmCredential => {
                    return Err(self.unsupported("GSSAPI/SSPI/Kerberos authentication"))
                }
                _ => {
                    return Err(self
                        .wire
                        .protocol("unexpected message while authenticating"))
                }
            }
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.broken {
            return Err(ReplicationError::Invalid(format!(
                "the replication connection to {} failed earlier; connect again",
                self.wire.target
            )));
        }
        Ok(())
    }

    /// Runs one replication command and returns its rows. A server error leaves the
    /// connection usable; any other failure breaks it.
    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<Vec<u8>>>>> {
        self.check_usable()?;
        let r = self.query_inner(sql);
        if matches!(&r, Err(e) if !matches!(e, ReplicationError::Server { .. })) {
            self.broken = true;
        }
        r
    }

    fn query_inner(&mut self, sql: &str) -> Result<Vec<Vec<Option<Vec<u8>>>>> {
        let what = format!("running {sql}");
        frontend::query(sql, &mut self.wire.out)
            .map_err(|e| ReplicationError::Invalid(format!("encode {sql}: {e}")))?;
        self.wire.send(&what)?;
        let deadline = Instant::now() + self.timeout;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read_message(deadline, &what)? {
                Some(backend::Message::RowDescription(_))
                | Some(backend::Message::CommandComplete(_))
                | Some(backend::Message::EmptyQueryResponse)
                | Some(backend::Message::ParameterStatus(_)) => {}
                Some(backend::Message::DataRow(row)) => {
                    rows.push(row_values(&row).map_err(|e| self.wire.protocol(e))?)
                }
                Some(backend::Message::ErrorResponse(e)) => error = Some(self.server_error(&e)),
                Some(backend::Message::NoticeResponse(n)) => self.notice(&n),
                Some(backend::Message::ReadyForQuery(_)) => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    }
                }
                _ => {
                    return Err(self
                        .wire
                        .protocol(format!("unexpected message while {what}")))
                }
            }
        }
    }

    /// Runs a command that must return exactly one row.
    fn query_one(&mut self, sql: &str) -> Result<Vec<Option<Vec<u8>>>> {
        let mut rows = self.query(sql)?;
        if rows.len() != 1 {
            return Err(self
                .wire
                .protocol(format!("{sql} returned {} rows, not 1", rows.len())));
        }
        Ok(rows.swap_remove(0))
    }

    /// Column `i` of `row` as text (`None` for NULL).
    fn text(&self, row: &[Option<Vec<u8>>], i: usize, what: &str) -> Result<Option<String>> {
        match row.get(i) {
            Some(Some(v)) => String::from_utf8(v.clone())
                .map(Some)
                .map_err(|_| self.wire.protocol(format!("{what} is not UTF-8"))),
            Some(None) => Ok(None),
            None => Err(self.wire.protocol(format!("no column for {what}"))),
        }
    }

    fn required<T>(&self, v: Option<String>, what: &str) -> Result<T>
    where
        T: std::str::FromStr,
    {
        let v = v.ok_or_else(|| self.wire.protocol(format!("{what} is NULL")))?;
        v.trim()
            .parse()
            .map_err(|_| self.wire.protocol(format!("{what} {v:?} does not parse")))
    }

    /// Runs `IDENTIFY_SYSTEM`: the system identifier, current timeline and WAL flush
    /// position of the server.
    ///
    /// # Errors
    /// Server, I/O and protocol errors.
    pub fn identify_system(&mut self) -> Result<SystemInfo> {
        let row = self.query_one("IDENTIFY_SYSTEM")?;
        let system_id: String = self.required(self.text(&row, 0, "systemid")?, "systemid")?;
        if system_id.is_empty() || !system_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self
                .wire
                .protocol(format!("systemid {system_id:?} is not a number")));
        }
        Ok(SystemInfo {
            system_id,
            timeline: self.required(self.text(&row, 1, "timeline")?, "timeline")?,
            xlogpos: self.required(self.text(&row, 2, "xlogpos")?, "xlogpos")?,
        })
    }

    /// Runs `SHOW setting` and returns the value as the server prints it (`16MB` for
    /// `wal_segment_size`).
    ///
    /// # Errors
    /// [`ReplicationError::Invalid`] for a name that is not a setting name; server errors
    /// (an unknown setting), I/O and protocol errors.
    pub fn show(&mut self, setting: &str) -> Result<String> {
        if setting.is_empty()
            || !setting
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(ReplicationError::Invalid(format!(
                "{setting:?} is not a PostgreSQL setting name"
            )));
        }
        let row = self.query_one(&format!("SHOW {setting}"))?;
        self.required(self.text(&row, 0, setting)?, setting)
    }

    /// Creates a physical replication slot that reserves WAL at once
    /// (`CREATE_REPLICATION_SLOT name PHYSICAL RESERVE_WAL`). Returns `false` when a slot
    /// of that name already exists (it is left as it is).
    ///
    /// # Errors
    /// [`ReplicationError::Invalid`] for a name PostgreSQL would refuse (it allows lower
    /// case letters, digits and `_`, at most 63); server errors (`max_replication_slots`
    /// reached), I/O and protocol errors.
    pub fn create_physical_slot(&mut self, name: &str) -> Result<bool> {
        check_slot_name(name)?;
        match self.query(&format!(
            "CREATE_REPLICATION_SLOT {name} PHYSICAL RESERVE_WAL"
        )) {
            Ok(_) => Ok(true),
            Err(e) if e.sqlstate() == Some(DUPLICATE_OBJECT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads a replication slot (`READ_REPLICATION_SLOT`, PostgreSQL 15 and later):
    /// `None` when there is no slot of that name.
    ///
    /// # Errors
    /// [`ReplicationError::Invalid`] for a bad slot name; server errors (a logical slot,
    /// a server before 15), I/O and protocol errors.
    pub fn read_slot(&mut self, name: &str) -> Result<Option<SlotInfo>> {
        check_slot_name(name)?;
        let row = self.query_one(&format!("READ_REPLICATION_SLOT {name}"))?;
        if self.text(&row, 0, "slot_type")?.is_none() {
            return Ok(None);
        }
        let restart_lsn = match self.text(&row, 1, "restart_lsn")? {
            Some(v) => Some(self.required(Some(v), "restart_lsn")?),
            None => None,
        };
        let timeline = match self.text(&row, 2, "restart_tli")? {
            Some(v) => Some(self.required(Some(v), "restart_tli")?),
            None => None,
        };
        Ok(Some(SlotInfo {
            restart_lsn,
            timeline,
        }))
    }

    /// Fetches the history file of `timeline` (`TIMELINE_HISTORY`): its file name
    /// (`00000002.history`) and its bytes.
    ///
    /// # Errors
    /// Server errors (no such timeline), I/O and protocol errors.
    pub fn timeline_history(&mut self, timeline: u32) -> Result<(String, Vec<u8>)> {
        let mut row = self.query_one(&format!("TIMELINE_HISTORY {timeline}"))?;
        let name: String = self.required(self.text(&row, 0, "filename")?, "filename")?;
        if name.contains('/') || name.contains("..") {
            return Err(self.wire.protocol(format!("history file name {name:?}")));
        }
        let content = row
            .get_mut(1)
            .and_then(Option::take)
            .ok_or_else(|| self.wire.protocol("history file content is missing"))?;
        Ok((name, content))
    }

    /// Starts streaming WAL of `timeline` from `start` (`START_REPLICATION [SLOT slot]
    /// PHYSICAL start TIMELINE timeline`). `start` should be at a segment boundary, as
    /// `pg_receivewal` does, so that segment files can be written whole.
    ///
    /// # Errors
    /// [`ReplicationError::Invalid`] for a bad slot name; server errors (WAL already
    /// removed, a start ahead of the server, an unknown timeline), I/O and protocol errors.
    /// The connection is gone after an error.
    pub fn start_physical(
        mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: u32,
    ) -> Result<WalStream> {
        self.check_usable()?;
        let mut sql = String::from("START_REPLICATION ");
        if let Some(slot) = slot {
            check_slot_name(slot)?;
            sql.push_str(&format!("SLOT {slot} "));
        }
        sql.push_str(&format!("PHYSICAL {start} TIMELINE {timeline}"));
        let what = format!("running {sql}");
        frontend::query(&sql, &mut self.wire.out)
            .map_err(|e| ReplicationError::Invalid(format!("encode {sql}: {e}")))?;
        self.wire.send(&what)?;
        let deadline = Instant::now() + self.timeout;
        // When `start` is exactly where `timeline` ended, the server skips copy mode and
        // answers with the next timeline's row at once.
        let mut next = None;
        let mut error = None;
        loop {
            match self.read_message(deadline, &what)? {
                None => {
                    if let Some(e) = error {
                        return Err(e);
                    }
                    return Ok(WalStream {
                        conn: self,
                        state: State::Copy,
                    });
                }
                Some(backend::Message::RowDescription(_))
                | Some(backend::Message::CommandComplete(_))
                | Some(backend::Message::ParameterStatus(_)) => {}
                Some(backend::Message::DataRow(row)) => {
                    next = Some(self.next_timeline_row(&row)?);
                }
                Some(backend::Message::NoticeResponse(n)) => self.notice(&n),
                Some(backend::Message::ErrorResponse(e)) => error = Some(self.server_error(&e)),
                Some(backend::Message::ReadyForQuery(_)) => {
                    if let Some(e) = error {
                        return Err(e);
                    }
                    let Some((next_timeline, next_start)) = next else {
                        return Err(self.wire.protocol(format!(
                            "{sql} ended without streaming or a next timeline"
                        )));
                    };
                    return Ok(WalStream {
                        conn: self,
                        state: State::Ended {
                            next_timeline,
                            next_start,
                        },
                    });
                }
                _ => {
                    return Err(self
                        .wire
                        .protocol(format!("unexpected message while {what}")))
                }
            }
        }
    }

    /// Parses the `(next_tli, next_tli_startpos)` row sent when a timeline ends.
    fn next_timeline_row(&self, row: &backend::DataRowBody) -> Result<(u32, Lsn)> {
        let row = row_values(row).map_err(|e| self.wire.protocol(e))?;
        let tli = self.required(self.text(&row, 0, "next_tli")?, "next_tli")?;
        let lsn = self.required(
            self.text(&row, 1, "next_tli_startpos")?,
            "next_tli_startpos",
        )?;
        Ok((tli, lsn))
    }
}

/// Refuses slot names PostgreSQL would refuse (and anything that could change the
/// command): lower case letters, digits and `_`, 1 to 63 characters.
fn check_slot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ReplicationError::Invalid(format!(
            "{name:?} is not a valid replication slot name: use 1 to 63 lower case letters, \
             digits and underscores"
        )))
    }
}

// ---------------------------------------------------------------------------------------
// Streaming

/// Where a [`WalStream`] is.
#[derive(Debug, Clone, Copy)]
enum State {
    /// In copy-both mode.
    Copy,
    /// The copy is over (both sides sent CopyDone); reading the result up to
    /// ReadyForQuery. `next` holds the next-timeline row once it arrived.
    Draining { next: Option<(u32, Lsn)> },
    /// Back in command mode after the end of a timeline.
    Ended { next_timeline: u32, next_start: Lsn },
    /// After an error: unusable.
    Failed,
}

/// A stream of WAL from [`ReplicationConn::start_physical`]: read it with
/// [`WalStream::next`], acknowledge it with [`WalStream::send_status`].
pub struct WalStream {
    conn: ReplicationConn,
    state: State,
}

impl fmt::Debug for WalStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalStream")
            .field("conn", &self.conn)
            .field("state", &self.state)
            .finish()
    }
}

impl WalStream {
    /// Waits up to `timeout` for the next message: WAL, a keepalive, or the end of the
    /// timeline. Returns [`StreamEvent::Idle`] when nothing complete arrived in time; the
    /// bytes of a message that arrived in part are kept for the next call. After
    /// [`StreamEvent::TimelineEnded`] every call returns it again. A zero `timeout` still
    /// waits up to a millisecond.
    ///
    /// # Errors
    /// Server errors (e.g. WAL removed), [`ReplicationError::Closed`] when the server ends
    /// the connection (e.g. it shuts down), I/O and protocol errors. The stream is unusable
    /// after an error.
    pub fn next(&mut self, timeout: Duration) -> Result<StreamEvent> {
        let r = self.next_inner(timeout);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn next_inner(&mut self, timeout: Duration) -> Result<StreamEvent> {
        // A timeout too long for the clock to represent waits "for ever", not a panic.
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + crate::backup::FOREVER);
        loop {
            match self.state {
                State::Failed => return Err(self.failed()),
                State::Ended {
                    next_timeline,
                    next_start,
                } => {
                    return Ok(StreamEvent::TimelineEnded {
                        next_timeline,
                        next_start,
                    })
                }
                State::Draining { .. } => {
                    if !self.drain_step(deadline, "reading the end of a timeline")? {
                        return Ok(StreamEvent::Idle);
                    }
                }
                State::Copy => {
                    let wait = Wait {
                        deadline,
                        what: "streaming WAL",
                    };
                    let wire = &mut self.conn.wire;
                    let Some((tag, body)) = wire.read_frame(wait)? else {
                        return Ok(StreamEvent::Idle);
                    };
                    if tag == b'd' {
                        return match decode_copy_data(&wire.buf[body]) {
                            Ok(CopyMessage::XLogData { start, data }) => Ok(StreamEvent::Data {
                                start,
                                data: Bytes::copy_from_slice(data),
                            }),
                            Ok(CopyMessage::Keepalive {
                                server_end,
                                reply_requested,
                            }) => Ok(StreamEvent::Keepalive {
                                server_end,
                                reply_requested,
                            }),
                            Err(e) => Err(wire.protocol(e)),
                        };
                    }
                    self.copy_control(tag, body)?;
                }
            }
        }
    }

    /// Handles a message other than CopyData in copy mode.
    fn copy_control(&mut self, tag: u8, body: Range<usize>) -> Result<()> {
        let msg = decode_message(tag, &self.conn.wire.buf[body])
            .map_err(|e| self.conn.wire.protocol(e))?;
        match msg {
            backend::Message::CopyDone => {
                // The server is done with this timeline; end our half of the copy too.
                frontend::copy_done(&mut self.conn.wire.out);
                self.conn.wire.send("ending the copy")?;
                self.state = State::Draining { next: None };
                Ok(())
            }
            backend::Message::CommandComplete(_) => Err(ReplicationError::Closed {
                target: self.conn.wire.target.clone(),
                what: "streaming WAL (it ended replication: shutting down?)".into(),
            }),
            backend::Message::ErrorResponse(e) => Err(self.conn.server_error(&e)),
            backend::Message::NoticeResponse(n) => {
                self.conn.notice(&n);
                Ok(())
            }
            backend::Message::ParameterStatus(_) => Ok(()),
            _ => Err(self.conn.wire.protocol(format!(
                "unexpected message {:?} while streaming WAL",
                char::from(tag)
            ))),
        }
    }

    /// Reads one message after the copy ended. `Ok(false)` on timeout.
    fn drain_step(&mut self, deadline: Instant, what: &str) -> Result<bool> {
        let State::Draining { next } = self.state else {
            return Ok(true);
        };
        let wait = Wait { deadline, what };
        let Some((tag, body)) = self.conn.wire.read_frame(wait)? else {
            return Ok(false);
        };
        let msg = decode_message(tag, &self.conn.wire.buf[body])
            .map_err(|e| self.conn.wire.protocol(e))?;
        match msg {
            // WAL still in flight when we ended the copy ourselves.
            backend::Message::CopyData(_) | backend::Message::CopyDone => {}
            backend::Message::RowDescription(_)
            | backend::Message::CommandComplete(_)
            | backend::Message::ParameterStatus(_) => {}
            backend::Message::DataRow(row) => {
                let n = self.conn.next_timeline_row(&row)?;
                self.state = State::Draining { next: Some(n) };
            }
            backend::Message::NoticeResponse(n) => self.conn.notice(&n),
            backend::Message::ErrorResponse(e) => return Err(self.conn.server_error(&e)),
            backend::Message::ReadyForQuery(_) => {
                let Some((next_timeline, next_start)) = next else {
                    return Err(self
                        .conn
                        .wire
                        .protocol("the server ended the stream without naming the next timeline"));
                };
                self.state = State::Ended {
                    next_timeline,
                    next_start,
                };
            }
            _ => {
                return Err(self.conn.wire.protocol(format!(
                    "unexpected message {:?} after the copy ended",
                    char::from(tag)
                )))
            }
        }
        Ok(true)
    }

    fn failed(&self) -> ReplicationError {
        ReplicationError::Invalid(format!(
            "the WAL stream from {} failed earlier; connect again",
            self.conn.wire.target
        ))
    }

    /// Sends a standby status update: WAL up to `write` is written, up to `flush` is
    /// durable, up to `apply` is applied (for a slot, `flush` is what lets the server
    /// recycle WAL). `reply_requested` asks the server for a keepalive at once. Does
    /// nothing once the copy has ended.
    ///
    /// # Errors
    /// I/O errors (a write blocked longer than the connection's timeout), or a stream that
    /// failed earlier.
    pub fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<()> {
        match self.state {
            State::Copy => {}
            State::Failed => return Err(self.failed()),
            State::Draining { .. } | State::Ended { .. } => return Ok(()),
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0)
            .saturating_sub(PG_EPOCH_OFFSET_MICROS);
        let mut msg = [0u8; 34];
        msg[0] = b'r';
        msg[1..9].copy_from_slice(&write.0.to_be_bytes());
        msg[9..17].copy_from_slice(&flush.0.to_be_bytes());
        msg[17..25].copy_from_slice(&apply.0.to_be_bytes());
        msg[25..33].copy_from_slice(&now.to_be_bytes());
        msg[33] = u8::from(reply_requested);
        let copy = frontend::CopyData::new(&msg[..])
            .map_err(|e| ReplicationError::Invalid(format!("encode status update: {e}")))?;
        copy.write(&mut self.conn.wire.out);
        let r = self.conn.wire.send("sending a status update");
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    /// Returns to command mode. After [`StreamEvent::TimelineEnded`] this is immediate;
    /// while WAL is still streaming it ends the copy (discarding WAL still in flight) and
    /// waits up to the connection's timeout for the server to finish.
    ///
    /// # Errors
    /// A stream that failed earlier; server, I/O, protocol errors and timeouts while
    /// ending the copy.
    pub fn finish(mut self) -> Result<ReplicationConn> {
        let deadline = Instant::now() + self.conn.timeout;
        loop {
            match self.state {
                State::Ended { .. } => return Ok(self.conn),
                State::Failed => return Err(self.failed()),
                State::Copy => {
                    frontend::copy_done(&mut self.conn.wire.out);
                    self.conn.wire.send("ending the copy")?;
                    self.state = State::Draining { next: None };
                    // A copy we end ourselves has no next timeline: accept its absence.
                    return self.drain_to_command_mode(deadline);
                }
                State::Draining { .. } => {
                    if !self.drain_step(deadline, "ending the copy")? {
                        return Err(ReplicationError::Timeout {
                            target: self.conn.wire.target.clone(),
                            what: "ending the copy".into(),
                            timeout: self.conn.timeout,
                        });
                    }
                }
            }
        }
    }

    /// Reads up to ReadyForQuery after the client ended the copy.
    fn drain_to_command_mode(mut self, deadline: Instant) -> Result<ReplicationConn> {
        loop {
            let wait = Wait {
                deadline,
                what: "ending the copy",
            };
            let Some((tag, body)) = self.conn.wire.read_frame(wait)? else {
                return Err(ReplicationError::Timeout {
                    target: self.conn.wire.target.clone(),
                    what: "ending the copy".into(),
                    timeout: self.conn.timeout,
                });
            };
            if tag == b'd' {
                continue;
            }
            let msg = decode_message(tag, &self.conn.wire.buf[body])
                .map_err(|e| self.conn.wire.protocol(e))?;
            match msg {
                backend::Message::CopyDone
                | backend::Message::RowDescription(_)
                | backend::Message::DataRow(_)
                | backend::Message::CommandComplete(_)
                | backend::Message::ParameterStatus(_) => {}
                backend::Message::NoticeResponse(n) => self.conn.notice(&n),
                backend::Message::ErrorResponse(e) => return Err(self.conn.server_error(&e)),
                backend::Message::ReadyForQuery(_) => return Ok(self.conn),
                _ => {
                    return Err(self.conn.wire.protocol(format!(
                        "unexpected message {:?} while ending the copy",
                        char::from(tag)
                    )))
                }
            }
        }
    }
}

/// Runs every decoder this module runs on server bytes over the frames `bytes` holds, the
/// way a connection meets them (framing, `CopyData` bodies, other messages, error fields,
/// data rows); returns how many whole frames it found. Pure and panic-free on any input:
/// the fuzz target `replication_frames` and the property tests below drive it.
#[doc(hidden)]
pub fn decode_frames(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut frames = 0;
    while let Ok(Some((tag, len))) = split_frame(rest) {
        let Some(body) = rest.get(5..5 + len) else {
            break;
        };
        frames += 1;
        if tag == b'd' {
            if let Ok(CopyMessage::XLogData { data, .. }) = decode_copy_data(body) {
                debug_assert!(data.len() + 25 == body.len());
            }
        }
        if let Ok(m) = decode_message(tag, body) {
            match m {
                backend::Message::ErrorResponse(e) => {
                    let _ = server_message(e.fields());
                }
                backend::Message::NoticeResponse(n) => {
                    let _ = server_message(n.fields());
                }
                backend::Message::DataRow(r) => {
                    let _ = row_values(&r);
                }
                backend::Message::AuthenticationSasl(s) => {
                    let _ = s.mechanisms().count();
                }
                _ => {}
            }
        }
        rest = &rest[5 + len..];
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(bytes: &[u8]) {
        let _ = decode_frames(bytes);
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            parse_all(&bytes);
        }

        #[test]
        fn random_bodies_of_known_tags_never_panic(
            tag in prop::sample::select(b"RSKZTDCEN1HWdckcwIGn".to_vec()),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            parse_all(&frame(tag, &body));
            let mut copy = vec![b'w'];
            copy.extend_from_slice(&body);
            parse_all(&frame(b'd', &copy));
            copy[0] = b'k';
            parse_all(&frame(b'd', &copy));
        }
    }

    #[test]
    fn frames_split_and_decode() {
        let mut body = vec![b'w'];
        body.extend_from_slice(&0x0100_0000u64.to_be_bytes());
        body.extend_from_slice(&[0; 16]);
        body.extend_from_slice(b"wal");
        let f = frame(b'd', &body);
        assert_eq!(split_frame(&f[..4]), Ok(None));
        assert_eq!(split_frame(&f[..f.len() - 1]), Ok(None));
        assert_eq!(split_frame(&f), Ok(Some((b'd', body.len()))));
        assert_eq!(
            decode_copy_data(&body),
            Ok(CopyMessage::XLogData {
                start: Lsn(0x0100_0000),
                data: b"wal"
            })
        );
        assert!(split_frame(&[b'd', 0, 0, 0, 3]).is_err());
        assert!(split_frame(&[b'd', 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_copy_data(b"k123").is_err());
        assert!(decode_copy_data(b"").is_err());
        assert!(decode_copy_data(b"x").is_err());
    }

    #[test]
    fn slot_names() {
        assert!(check_slot_name("lifeboat_1").is_ok());
        for bad in ["", "Upper", "a b", "x;DROP", &"a".repeat(64)] {
            assert!(check_slot_name(bad).is_err(), "{bad:?}");
        }
    }

    /// A message that arrives in pieces, with timeouts between them, is kept and returned
    /// whole; a large message grows the buffer.
    #[test]
    fn partial_reads_survive_timeouts() {
        let (a, mut b) = UnixStream::pair().expect("socket pair");
        let mut wire =
            Wire::new(Socket::Unix(a), "test".into(), Duration::from_secs(5)).expect("wire");
        let big = vec![7u8; 3 * READ_BUFFER];
        let mut stream = frame(b'd', &big);
        stream.extend(frame(b'Z', b"I"));
        let chunks: Vec<Vec<u8>> = stream
            .chunks(stream.len() / 7 + 1)
            .map(<[u8]>::to_vec)
            .collect();
        let n_chunks = chunks.len();
        // The writer sends the next piece only after the reader timed out on the last one.
        let (go, wait_go) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            for chunk in chunks {
                if wait_go.recv().is_err() {
                    return;
                }
                b.write_all(&chunk).expect("write");
            }
            let _ = wait_go.recv();
            drop(b);
        });
        let wait = || Wait {
            deadline: Instant::now() + Duration::from_millis(20),
            what: "test",
        };
        let mut got = Vec::new();
        let mut timeouts = 0;
        let closed = loop {
            match wire.read_frame(wait()) {
                Ok(Some((tag, body))) => got.push((tag, wire.buf[body].to_vec())),
                Ok(None) => {
                    timeouts += 1;
                    let _ = go.send(());
                }
                Err(e) => break e,
            }
        };
        writer.join().expect("writer");
        assert!(
            matches!(closed, ReplicationError::Closed { .. }),
            "{closed:?}"
        );
        assert!(
            timeouts > n_chunks,
            "{timeouts} timeouts for {n_chunks} pieces"
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (b'd', big));
        assert_eq!(got[1], (b'Z', b"I".to_vec()));
    }
}
