//! [`Server`]: hyper's HTTP/1.1 server on one dedicated thread (`rt-api`) running a
//! current-thread tokio runtime, with every resource a client can hold bounded:
//!
//! - connections: at most [`ServerConfig::max_connections`] open; past that a new one
//!   closes the oldest idle one (one with a request in progress is never closed; when all
//!   are, the newcomer is), so idle clients cannot lock the API out;
//! - time: a request head must arrive within [`ServerConfig::header_timeout`] (this also
//!   closes idle keep-alive connections), its body within [`ServerConfig::body_timeout`], and
//!   a write that makes no progress for [`ServerConfig::write_timeout`] closes the
//!   connection;
//! - memory: a head is at most [`ServerConfig::max_header_bytes`], a body at most
//!   [`ServerConfig::max_body`] (413), and the bodies being read at once share
//!   [`ServerConfig::body_budget`] (a request waits for its share, else 503);
//! - threads: the one, plus tokio's blocking pool for password hashing, at most
//!   [`MAX_BLOCKING_THREADS`].
//!
//! An accept that fails for want of descriptors (`EMFILE`, `ENFILE`) or memory is retried
//! with back-off (10 ms doubling to 1 s) and logged once, with a line when accepting works
//! again: the API outlives descriptor exhaustion.
//!
//! A [`Handler`] sees each request's [`Head`] before the body is read ([`Handler::admit`]:
//! refuse unauthenticated uploads before they cost anything), then the [`Request`].

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::Method;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};

/// Threads of tokio's blocking pool (password hashing).
pub const MAX_BLOCKING_THREADS: usize = 2;

/// The listen backlog: clients beyond the connection bound wait here.
const BACKLOG: u32 = 1024;

/// The bounds a [`Server`] holds its clients to.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections open at once; past this a new one closes the oldest idle one.
    pub max_connections: usize,
    /// The time a request head may take to arrive, counted from when the connection is
    /// ready for one (so also how long an idle keep-alive connection stays open).
    pub header_timeout: Duration,
    /// The time a request body may take to arrive, from the end of its head.
    pub body_timeout: Duration,
    /// How long a write may make no progress before the connection is closed.
    pub write_timeout: Duration,
    /// The largest request body (a `.torrent` file of the largest torrent is a few MiB;
    /// `limits::MAX_PIECES` x 20 bytes of hashes is 40 MB).
    pub max_body: usize,
    /// Bytes of request bodies being read at once, all connections together.
    pub body_budget: usize,
    /// The largest request head (request line and headers).
    pub max_header_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 128,
            header_timeout: Duration::from_secs(20),
            body_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_body: 64 << 20,
            body_budget: 128 << 20,
            max_header_bytes: 64 << 10,
        }
    }
}

/// A request's head: what is known before its body is read.
#[derive(Debug, Clone)]
pub struct Head {
    /// The method.
    pub method: Method,
    /// The path, as sent (percent escapes left in).
    pub path: String,
    /// The query string without its `?` ("" for none).
    pub query: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The client's address.
    pub peer: SocketAddr,
    /// The body's announced length (`Content-Length`), if any.
    pub content_length: Option<u64>,
}

/// A request, its body read whole.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its head.
    pub head: Head,
    /// Its body.
    pub body: Bytes,
}

/// An answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The HTTP status (an invalid one is sent as 500).
    pub status: u16,
    /// Headers, `Content-Type` among them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a content type.
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        }
    }

    /// A JSON body (pretty, with a final line end).
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Response::new(status, "application/json", body)
    }

    /// `{"error": message}`.
    pub fn error(status: u16, message: impl std::fmt::Display) -> Response {
        Response::json(status, &serde_json::json!({ "error": message.to_string() }))
    }

    /// The response with a header added (one whose name is not valid is left out).
    pub fn header(mut self, name: &str, value: HeaderValue) -> Response {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            self.headers.push((name, value));
        }
        self
    }

    fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let mut b = hyper::Response::builder().status(self.status);
        for (k, v) in self.headers {
            b = b.header(k, v);
        }
        b.body(Full::new(Bytes::from(self.body)))
            .unwrap_or_else(|_| {
                let mut r =
                    hyper::Response::new(Full::new(Bytes::from_static(b"invalid response\n")));
                *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                r
            })
    }
}

/// A boxed future of a [`Response`].
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// What answers requests.
pub trait Handler: Send + Sync + 'static {
    /// Called with each request's head before its body is read: `Err` is sent at once and
    /// the body never read (the connection then closes). Must not block.
    fn admit(&self, head: &Head) -> Result<(), Response>;

    /// Answers a request whose head was admitted.
    fn handle(&self, request: Request) -> ResponseFuture;
}

/// A running server; dropping it stops it (connections are closed).
pub struct Server {
    local: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local", &self.local)
            .finish()
    }
}

impl Server {
    /// Binds `addr` (port 0: any free port) and serves `handler` on a thread of its own.
    /// Errors are the bind's.
    pub fn start(
        addr: SocketAddr,
        config: ServerConfig,
        handler: Arc<dyn Handler>,
    ) -> io::Result<Server> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name("rt-api-blocking")
            .build()?;
        let listener = rt.block_on(async {
            let socket = match addr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(BACKLOG)
        })?;
        let local = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("rt-api".into())
            .spawn(move || {
                rt.block_on(accept_loop(listener, config, handler, stop_rx));
                rt.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Server {
            local,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether an accept error concerns only the connection being accepted (retry at once), not
/// the process (descriptors, memory: back off).
fn connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// One open connection, as the accept loop sees it.
#[derive(Default)]
struct Conn {
    /// Requests being handled on it (a head was read); 0 means idle, or a head on its way.
    busy: std::sync::atomic::AtomicUsize,
    /// Set when it has closed.
    closed: std::sync::atomic::AtomicBool,
    /// Told to close (gracefully: only while idle) to make room.
    evict: tokio::sync::Notify,
}

/// Counts a request as in progress on its connection while it lives.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: &Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Busy(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: ServerConfig,
    handler: Arc<dyn Handler>,
    mut stop: oneshot::Receiver<()>,
) {
    use std::sync::atomic::Ordering;
    let max_connections = config.max_connections.max(1);
    // Open connections, oldest first.
    let mut open: std::collections::VecDeque<Arc<Conn>> = std::collections::VecDeque::new();
    let budget = Arc::new(Semaphore::new(budget_total(&config)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        .half_close(true)
        .keep_alive(true);
    let config = Arc::new(config);
    let mut failures: u64 = 0;
    let mut backoff = Duration::from_millis(10);
    let mut full_logged = false;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stop => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                if failures > 0 {
                    tracing::info!(
                        "control API: accepting connections again after {failures} failed accepts"
                    );
                    failures = 0;
                    backoff = Duration::from_millis(10);
                }
                a
            }
            Err(e) if connection_error(&e) => continue,
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(
                        "control API: cannot accept connections ({e}); retrying with back-off \
                         until it can (raise the descriptor limit, `ulimit -n`, if it lasts)"
                    );
                }
                failures += 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = &mut stop => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        // At the bound, the longest-idle connection makes room (one with a request in
        // progress is never closed); if every one is busy, the newcomer is closed.
        open.retain(|c| !c.closed.load(Ordering::Relaxed));
        if open.len() >= max_connections {
            if !full_logged {
                tracing::info!(
                    "control API: {max_connections} connections open, the most allowed; \
                     closing idle ones to make room"
                );
                full_logged = true;
            }
            match open
                .iter()
                .position(|c| c.busy.load(Ordering::Relaxed) == 0)
            {
                Some(i) => {
                    if let Some(c) = open.remove(i) {
                        c.evict.notify_one();
                    }
                }
                None => {
                    drop(stream);
                    continue;
                }
            }
        } else if open.len() < max_connections / 2 {
            full_logged = false;
        }
        let state = Arc::new(Conn::default());
        open.push_back(state.clone());
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Stalling::new(stream, config.write_timeout));
        let (handler, config, budget) = (handler.clone(), config.clone(), budget.clone());
        let on_conn = state.clone();
        let service = hyper::service::service_fn(move |req| {
            let (handler, config, budget) = (handler.clone(), config.clone(), budget.clone());
            let busy = Busy::new(&on_conn);
            async move {
                let response = serve_one(req, peer, &*handler, &config, &budget).await;
                drop(busy);
                Ok::<_, Infallible>(response.into_hyper())
            }
        });
        let conn = http.serve_connection(io, service);
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = state.evict.notified() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                }
            }
            state.closed.store(true, Ordering::Relaxed);
        });
    }
}

/// Reads one request (head checks, then the body within its bounds) and answers it.
async fn serve_one(
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    handler: &dyn Handler,
    config: &ServerConfig,
    budget: &Arc<Semaphore>,
) -> Response {
    let (parts, body) = req.into_parts();
    let content_length = body.size_hint().exact();
    let head = Head {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        peer,
        content_length,
    };
    // An answer sent with the body unread (or half read) ends the connection: hyper would
    // otherwise wait for the rest of the body before the next request.
    let unread = content_length != Some(0);
    let closing = |r: Response| match unread {
        true => r.header("connection", HeaderValue::from_static("close")),
        false => r,
    };
    if let Err(refused) = handler.admit(&head) {
        return closing(refused);
    }
    let max = config.max_body as u64;
    if content_length.is_some_and(|n| n > max) {
        return closing(Response::error(
            413,
            format!("the body is over {max} bytes"),
        ));
    }
    // Its share of the body budget: the announced length, or the most a body may be.
    let total = budget_total(config);
    let need = content_length
        .unwrap_or(max)
        .div_ceil(1024)
        .clamp(1, total as u64) as u32;
    let body = if content_length == Some(0) {
        Bytes::new()
    } else {
        let share =
            tokio::time::timeout(config.body_timeout, budget.clone().acquire_many_owned(need));
        let _share = match share.await {
            Ok(Ok(s)) => s,
            _ => return closing(Response::error(503, "too many uploads at once; try again")),
        };
        match tokio::time::timeout(config.body_timeout, read_body(body, config.max_body)).await {
            Err(_) => {
                return closing(Response::error(
                    408,
                    format!(
                        "the body did not arrive within {} s",
                        config.body_timeout.as_secs()
                    ),
                ))
            }
            Ok(Err(BodyError::TooLarge)) => {
                return closing(Response::error(
                    413,
                    format!("the body is over {max} bytes"),
                ))
            }
            Ok(Err(BodyError::Cut(got))) => {
                return closing(Response::error(
                    400,
                    match content_length {
                        Some(n) => format!("the body ended after {got} of its {n} bytes"),
                        None => format!("the body ended after {got} bytes, unfinished"),
                    },
                ))
            }
            Ok(Ok(b)) => b,
        }
    };
    handler.handle(Request { head, body }).await
}

fn budget_total(config: &ServerConfig) -> usize {
    (config.body_budget / 1024).clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize))
}

enum BodyError {
    TooLarge,
    /// The client stopped (or sent garbage) after this many bytes.
    Cut(usize),
}

async fn read_body(mut body: Incoming, max: usize) -> Result<Bytes, BodyError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Cut(buf.len()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A TCP stream whose writes fail with `TimedOut` once one has made no progress for a while:
/// a client that stops reading its answers cannot hold a connection forever.
struct Stalling {
    stream: TcpStream,
    timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stalling {
    fn new(stream: TcpStream, timeout: Duration) -> Stalling {
        Stalling {
            stream,
            timeout,
            deadline: None,
        }
    }

    /// A write op's outcome: progress clears the deadline; `Pending` starts it (or fails
    /// once it passed).
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl tokio::io::AsyncRead for Stalling {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Stalling {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Answers every admitted request with its body's length; refuses `/refused` before the
    /// body is read.
    struct Echo;

    impl Handler for Echo {
        fn admit(&self, head: &Head) -> Result<(), Response> {
            match head.path.as_str() {
                "/refused" => Err(Response::error(401, "no")),
                _ => Ok(()),
            }
        }

        fn handle(&self, request: Request) -> ResponseFuture {
            let n = request.body.len();
            Box::pin(async move { Response::new(200, "text/plain", n.to_string().into_bytes()) })
        }
    }

    fn server(config: ServerConfig) -> Server {
        Server::start("127.0.0.1:0".parse().unwrap(), config, Arc::new(Echo)).unwrap()
    }

    /// Sends `bytes` and reads until the server closes (or 10 s pass): what came back.
    fn exchange(s: &Server, bytes: &[u8]) -> String {
        let mut c = std::net::TcpStream::connect(s.local_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn bodies_are_bounded_in_size_and_time_and_refused_ones_never_read() {
        let s = server(ServerConfig {
            body_timeout: Duration::from_millis(300),
            max_body: 1000,
            ..ServerConfig::default()
        });
        let ok = exchange(
            &s,
            b"POST / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("\r\n\r\n5"),
            "{ok}"
        );
        let big = exchange(
            &s,
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n",
        );
        assert!(big.starts_with("HTTP/1.1 413"), "{big}");
        let chunked = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            1001,
            "x".repeat(1001)
        );
        let big = exchange(&s, chunked.as_bytes());
        assert!(big.starts_with("HTTP/1.1 413"), "{big}");
        let start = std::time::Instant::now();
        let slow = exchange(
            &s,
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc",
        );
        assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
        assert!(start.elapsed() < Duration::from_secs(5));
        let refused = exchange(
            &s,
            b"POST /refused HTTP/1.1\r\nHost: h\r\nContent-Length: 999\r\n\r\n",
        );
        assert!(
            refused.starts_with("HTTP/1.1 401"),
            "answered before the body came: {refused}"
        );
    }

    #[test]
    fn silent_and_oversized_heads_are_cut_off() {
        let s = server(ServerConfig {
            header_timeout: Duration::from_millis(300),
            max_header_bytes: 8192,
            ..ServerConfig::default()
        });
        let start = std::time::Instant::now();
        assert_eq!(exchange(&s, b""), "", "closed without an answer");
        assert_eq!(exchange(&s, b"GET / HTTP/1.1\r\nHost:"), "", "half a head");
        assert!(start.elapsed() < Duration::from_secs(5));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        let answer = exchange(&s, huge.as_bytes());
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
        // Garbage is an error answer or a close, never a crash: the server still answers.
        let _ = exchange(&s, b"\x00\xff\r\n\r\n");
        let ok = exchange(
            &s,
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }

    #[test]
    fn at_the_bound_an_idle_connection_makes_room() {
        let s = server(ServerConfig {
            max_connections: 2,
            ..ServerConfig::default()
        });
        let idle: Vec<_> = (0..5)
            .map(|_| std::net::TcpStream::connect(s.local_addr()).unwrap())
            .collect();
        for _ in 0..3 {
            let ok = exchange(
                &s,
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            );
            assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        }
        // The oldest idle ones were closed.
        let mut first = &idle[0];
        first
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(first.read(&mut [0; 16]).unwrap_or(0), 0);
    }
}
