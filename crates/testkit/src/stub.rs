//! Network stubs on 127.0.0.1 for failure tests: a server that never answers and one that
//! answers every HTTP request with a fixed status.
//! Never here: protocol logic beyond reading one HTTP/1.1 request and writing one response.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::{Error, Result};

/// An accept loop on 127.0.0.1 that stops when dropped.
struct Acceptor {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    fn start(mut on_conn: impl FnMut(TcpStream) + Send + 'static) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind 127.0.0.1:0"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("read local address"))?
            .port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("testkit-stub-{port}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(c) = conn {
                        on_conn(c);
                    }
                }
            })
            .map_err(Error::io("spawn stub thread"))?;
        Ok(Acceptor {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts TCP connections on 127.0.0.1 and never sends a byte: what a wedged server or a
/// black-holed route looks like to a client. Counts connections so tests can see retries.
pub struct HangingServer {
    acceptor: Acceptor,
    accepted: Arc<AtomicUsize>,
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl HangingServer {
    /// Starts listening on a free port.
    ///
    /// # Errors
    /// When the socket or thread cannot be created.
    pub fn start() -> Result<Self> {
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (a, h) = (Arc::clone(&accepted), Arc::clone(&held));
        let acceptor = Acceptor::start(move |c| {
            a.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut v) = h.lock() {
                v.push(c);
            }
        })?;
        Ok(HangingServer {
            acceptor,
            accepted,
            _held: held,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.acceptor.port)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Answers every HTTP request with one status code and an S3-style XML error body, then
/// closes the connection. Counts requests so tests can tell retries from fail-fast.
pub struct StatusServer {
    acceptor: Acceptor,
    requests: Arc<AtomicUsize>,
}

impl StatusServer {
    /// Starts answering with `status` (e.g. 503 for a transient failure, 403 for a
    /// permanent one).
    ///
    /// # Errors
    /// When the socket or thread cannot be created.
    pub fn start(status: u16) -> Result<Self> {
        let requests = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&requests);
        let acceptor = Acceptor::start(move |c| {
            let r = Arc::clone(&r);
            // One thread per connection so a slow client cannot block the others.
            let _ = std::thread::Builder::new()
                .name("testkit-status-conn".into())
                .spawn(move || answer(c, status, &r));
        })?;
        Ok(StatusServer { acceptor, requests })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.acceptor.port)
    }

    /// Complete requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer(mut c: TcpStream, status: u16, count: &AtomicUsize) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < body_len {
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
    }
    count.fetch_add(1, Ordering::SeqCst);
    let (code, reason) = match status {
        403 => ("AccessDenied", "Forbidden"),
        404 => ("NoSuchKey", "Not Found"),
        500 => ("InternalError", "Internal Server Error"),
        503 => ("SlowDown", "Service Unavailable"),
        _ => ("Error", "Error"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>stub</Message></Error>"
    );
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = c.write_all(resp.as_bytes());
}
