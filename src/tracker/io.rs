//! [`TrackerIo`]: the socket work for [`Announcer`]s. One non-blocking UDP socket per address
//! family shared by every announcer, HTTP and HTTPS exchanges on short-lived worker threads
//! (blocking sockets with time-outs, at most [`MAX_HTTP_IN_FLIGHT`] at once; TLS by rustls,
//! verified against the Mozilla roots of `webpki-roots` plus any the caller adds), and host
//! names resolved on worker threads and cached, so the event loop that calls
//! [`TrackerIo::pump`] never blocks.
//!
//! UDP replies are routed by transaction id to the announcer and tracker that sent the
//! request, and only when they come from the address the request went to; anything else is
//! dropped here and counted.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::announcer::{Announcer, LinkId, Request, TrackerEvent};
use super::http::{parse_reply, HttpProgress};
use super::url::{Scheme, TrackerUrl};
use super::TrackerError;
use crate::core::Time;
use crate::limits;

/// HTTP exchanges running at once; more wait their turn. Each is a thread blocked on a
/// socket for at most its time-out, so this bounds threads, not throughput that matters.
pub const MAX_HTTP_IN_FLIGHT: usize = 16;

/// How long a resolved host name is reused before it is looked up again.
const DNS_CACHE_TTL: Duration = Duration::from_secs(300);

/// Datagrams read per socket per pump, so a flood cannot starve the caller's loop.
const MAX_DATAGRAMS_PER_PUMP: usize = 256;

/// How long name resolution for UDP trackers may take before the request fails.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Who owns a request: the caller's number for an announcer, and the tracker within it.
type Route = (u64, LinkId);

enum Inbound {
    Udp {
        link: LinkId,
        ipv6: bool,
        packet: Vec<u8>,
    },
    Http {
        link: LinkId,
        id: u64,
        reply: Result<(u16, Vec<u8>), TrackerError>,
    },
    Failure {
        link: LinkId,
        error: TrackerError,
    },
}

struct Datagram {
    route: Route,
    transaction: u32,
    packet: Vec<u8>,
}

struct HttpJob {
    route: Route,
    id: u64,
    url: TrackerUrl,
    request: Vec<u8>,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
}

type HttpDone = (Route, u64, Result<(u16, Vec<u8>), TrackerError>);
type Resolved = ((String, u16), Result<SocketAddr, TrackerError>);

/// Sockets, worker threads and routing for any number of [`Announcer`]s.
pub struct TrackerIo {
    udp4: UdpSocket,
    udp6: Option<UdpSocket>,
    buf: Vec<u8>,
    dns: HashMap<(String, u16), (SocketAddr, Instant)>,
    resolving: HashMap<(String, u16), (Vec<Datagram>, Instant)>,
    dns_tx: Sender<Resolved>,
    dns_rx: Receiver<Resolved>,
    http_tx: Sender<HttpDone>,
    http_rx: Receiver<HttpDone>,
    http_queue: VecDeque<HttpJob>,
    http_in_flight: usize,
    by_transaction: HashMap<u32, (Route, SocketAddr)>,
    by_route: HashMap<Route, u32>,
    inbox: HashMap<u64, Vec<Inbound>>,
    dropped: u64,
    tls: Arc<rustls::ClientConfig>,
}

impl TrackerIo {
    /// Binds the UDP sockets on every interface (an ephemeral port each; IPv6 only where
    /// the host has it).
    pub fn new() -> io::Result<TrackerIo> {
        Self::bind("0.0.0.0:0".parse().expect("literal"), true)
    }

    /// Binds the IPv4 UDP socket to `udp4` (e.g. `127.0.0.1:0` in tests) and, if `ipv6`,
    /// an IPv6 one on `[::]:0`.
    pub fn bind(udp4: SocketAddr, ipv6: bool) -> io::Result<TrackerIo> {
        let udp4 = UdpSocket::bind(udp4)?;
        udp4.set_nonblocking(true)?;
        let udp6 = if ipv6 {
            UdpSocket::bind("[::]:0")
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .ok()
        } else {
            None
        };
        let (dns_tx, dns_rx) = channel();
        let (http_tx, http_rx) = channel();
        Ok(TrackerIo {
            udp4,
            udp6,
            buf: vec![0; 64 * 1024],
            dns: HashMap::new(),
            resolving: HashMap::new(),
            dns_tx,
            dns_rx,
            http_tx,
            http_rx,
            http_queue: VecDeque::new(),
            http_in_flight: 0,
            by_transaction: HashMap::new(),
            by_route: HashMap::new(),
            inbox: HashMap::new(),
            dropped: 0,
            tls: tls_config(&[]).map_err(|e| io::Error::other(e.to_string()))?,
        })
    }

    /// Also trusts the certificate authorities in `pem` (PEM, one or more `CERTIFICATE`
    /// blocks) for HTTPS trackers, e.g. a private tracker's own CA or a test's. Returns how
    /// many certificates were added.
    pub fn add_ca_pem(&mut self, pem: &[u8]) -> Result<usize, TrackerError> {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
            rustls::pki_types::CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| TrackerError::Io(format!("bad PEM: {e}")))?;
        if certs.is_empty() {
            return Err(TrackerError::Io("no certificate in the PEM data".into()));
        }
        self.tls = tls_config(&certs)?;
        Ok(certs.len())
    }

    /// Datagrams dropped because no request in flight matched their transaction id and
    /// source address.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Runs one announcer, named `owner` (any number unique among the announcers sharing
    /// this `TrackerIo`): reads what arrived, hands it over, fires its timers at `now` and
    /// carries out its requests. Call it every loop turn, and by [`Announcer::poll_timeout`].
    pub fn pump(&mut self, owner: u64, announcer: &mut Announcer, now: Time) {
        self.receive();
        for inbound in self.inbox.remove(&owner).unwrap_or_default() {
            match inbound {
                Inbound::Udp { link, ipv6, packet } => {
                    announcer.handle_udp(link, ipv6, &packet, now)
                }
                Inbound::Http { link, id, reply } => announcer.handle_http(link, id, reply, now),
                Inbound::Failure { link, error } => announcer.handle_failure(link, error, now),
            }
        }
        announcer.handle_timeout(now);
        // A failed send can make the announcer fall through to another tracker at once,
        // which makes new requests; the loop is bounded by the number of trackers.
        let mut rounds = 0;
        while let Some(request) = announcer.poll_request() {
            if let Some((link, error)) = self.start(owner, request) {
                announcer.handle_failure(link, error, now);
            }
            rounds += 1;
            if rounds > 4 * limits::MAX_TRACKERS {
                break;
            }
        }
    }

    /// Runs a one-shot announcer (`Mode::Once` or `Mode::Scrape`, started at `Time::ZERO`)
    /// until it is done, blocking, and returns every event it produced: `ringtorrent
    /// announce` and `scrape`. Its own timeouts bound the wait.
    pub fn run_to_end(&mut self, announcer: &mut Announcer) -> Vec<TrackerEvent> {
        let epoch = Instant::now();
        let mut events = Vec::new();
        loop {
            let now = Time::from_micros(epoch.elapsed().as_micros() as u64);
            self.pump(0, announcer, now);
            events.extend(std::iter::from_fn(|| announcer.poll_event()));
            if announcer.is_done() {
                return events;
            }
            let wait = announcer
                .poll_timeout()
                .map_or(Duration::from_millis(5), |t| t.saturating_since(now))
                .min(Duration::from_millis(5));
            std::thread::sleep(wait);
        }
    }

    /// Forgets an announcer's routes and undelivered replies (after it is dropped).
    pub fn forget(&mut self, owner: u64) {
        self.inbox.remove(&owner);
        self.by_route.retain(|&(o, _), _| o != owner);
        self.by_transaction.retain(|_, ((o, _), _)| *o != owner);
    }

    /// Starts a request; an error that stops it at once is returned for the announcer.
    fn start(&mut self, owner: u64, request: Request) -> Option<(LinkId, TrackerError)> {
        match request {
            Request::Udp {
                link,
                host,
                port,
                transaction,
                packet,
            } => {
                let datagram = Datagram {
                    route: (owner, link),
                    transaction,
                    packet,
                };
                let key = (host, port);
                if let Ok(ip) = key.0.parse::<std::net::IpAddr>() {
                    return self.send(datagram, SocketAddr::new(ip, port));
                }
                if let Some(&(addr, at)) = self.dns.get(&key) {
                    if at.elapsed() < DNS_CACHE_TTL {
                        return self.send(datagram, addr);
                    }
                }
                if let Some((waiting, _)) = self.resolving.get_mut(&key) {
                    waiting.retain(|d| d.route != datagram.route);
                    waiting.push(datagram);
                    return None;
                }
                let tx = self.dns_tx.clone();
                let k = key.clone();
                let spawned = std::thread::Builder::new()
                    .name("tracker-dns".into())
                    .spawn(move || {
                        let result = resolve(&k.0, k.1);
                        let _ = tx.send((k, result));
                    });
                if spawned.is_err() {
                    return Some((link, TrackerError::Io("cannot start a thread".into())));
                }
                self.resolving.insert(key, (vec![datagram], Instant::now()));
                None
            }
            Request::Http {
                link,
                id,
                url,
                request,
                timeout,
            } => {
                self.http_queue.push_back(HttpJob {
                    route: (owner, link),
                    id,
                    url,
                    request,
                    timeout,
                    tls: self.tls.clone(),
                });
                self.start_http();
                None
            }
        }
    }

    fn send(&mut self, d: Datagram, addr: SocketAddr) -> Option<(LinkId, TrackerError)> {
        let socket = match (addr, &self.udp6) {
            (SocketAddr::V4(_), _) => &self.udp4,
            (SocketAddr::V6(_), Some(s)) => s,
            (SocketAddr::V6(_), None) => {
                return Some((d.route.1, TrackerError::Io("no IPv6 socket".into())))
            }
        };
        if let Some(old) = self.by_route.insert(d.route, d.transaction) {
            if old != d.transaction {
                self.by_transaction.remove(&old);
            }
        }
        self.by_transaction.insert(d.transaction, (d.route, addr));
        match socket.send_to(&d.packet, addr) {
            Ok(_) => None,
            // A full send buffer: the retransmission timer sends it again.
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(e) => Some((d.route.1, TrackerError::Io(e.to_string()))),
        }
    }

    fn start_http(&mut self) {
        while self.http_in_flight < MAX_HTTP_IN_FLIGHT {
            let Some(job) = self.http_queue.pop_front() else {
                return;
            };
            let tx = self.http_tx.clone();
            let (route, id) = (job.route, job.id);
            let spawned = std::thread::Builder::new()
                .name("tracker-http".into())
                .spawn(move || {
                    let reply = http_exchange(&job.url, &job.request, job.timeout, job.tls);
                    let _ = tx.send((job.route, job.id, reply));
                });
            match spawned {
                Ok(_) => self.http_in_flight += 1,
                Err(e) => self.deliver(
                    route.0,
                    Inbound::Http {
                        link: route.1,
                        id,
                        reply: Err(TrackerError::Io(e.to_string())),
                    },
                ),
            }
        }
    }

    fn deliver(&mut self, owner: u64, inbound: Inbound) {
        self.inbox.entry(owner).or_default().push(inbound);
    }

    /// Moves everything that arrived (datagrams, HTTP replies, resolved names) into the
    /// inboxes.
    fn receive(&mut self) {
        while let Ok((route, id, reply)) = self.http_rx.try_recv() {
            self.http_in_flight -= 1;
            self.deliver(
                route.0,
                Inbound::Http {
                    link: route.1,
                    id,
                    reply,
                },
            );
        }
        self.start_http();
        while let Ok((key, result)) = self.dns_rx.try_recv() {
            let Some((waiting, _)) = self.resolving.remove(&key) else {
                continue;
            };
            match result {
                Ok(addr) => {
                    self.dns.insert(key, (addr, Instant::now()));
                    for d in waiting {
                        let owner = d.route.0;
                        if let Some((link, error)) = self.send(d, addr) {
                            self.deliver(owner, Inbound::Failure { link, error });
                        }
                    }
                }
                Err(error) => {
                    for d in waiting {
                        let (owner, link) = d.route;
                        self.deliver(
                            owner,
                            Inbound::Failure {
                                link,
                                error: error.clone(),
                            },
                        );
                    }
                }
            }
        }
        // A resolver stuck past its time-out fails its requests; the thread's late answer
        // is then ignored.
        let stuck: Vec<(String, u16)> = self
            .resolving
            .iter()
            .filter(|(_, (_, at))| at.elapsed() > RESOLVE_TIMEOUT)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stuck {
            if let Some((waiting, _)) = self.resolving.remove(&key) {
                for d in waiting {
                    let (owner, link) = d.route;
                    self.deliver(
                        owner,
                        Inbound::Failure {
                            link,
                            error: TrackerError::Resolve(key.0.clone()),
                        },
                    );
                }
            }
        }
        for v6 in [false, true] {
            for _ in 0..MAX_DATAGRAMS_PER_PUMP {
                let socket = if v6 {
                    match &self.udp6 {
                        Some(s) => s,
                        None => break,
                    }
                } else {
                    &self.udp4
                };
                let (n, from) = match socket.recv_from(&mut self.buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    // WouldBlock, or an ICMP error reported on the socket: nothing to read.
                    Err(_) => break,
                };
                let packet = &self.buf[..n];
                let route = super::udp::peek_transaction(packet)
                    .and_then(|t| self.by_transaction.get(&t))
                    .filter(|(_, addr)| *addr == from)
                    .map(|(route, _)| *route);
                match route {
                    Some((owner, link)) => {
                        let packet = packet.to_vec();
                        self.deliver(
                            owner,
                            Inbound::Udp {
                                link,
                                ipv6: from.is_ipv6(),
                                packet,
                            },
                        );
                    }
                    None => self.dropped += 1,
                }
            }
        }
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, TrackerError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|_| TrackerError::Resolve(host.to_string()))?
        .collect();
    // Prefer IPv4: every tracker has it, and our IPv6 socket may be missing.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| TrackerError::Resolve(host.to_string()))
}

/// The TLS client configuration: ring's provider, TLS 1.2 and 1.3, the Mozilla roots plus
/// `extra`.
fn tls_config(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, TrackerError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| TrackerError::Io(format!("unusable CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TrackerError::Io(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A byte stream to a tracker, plain or TLS, whose socket time-outs can be set.
trait Conn: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Conn for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// One blocking HTTP(S) exchange, bounded by `timeout` overall.
fn http_exchange(
    url: &TrackerUrl,
    request: &[u8],
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(u16, Vec<u8>), TrackerError> {
    // A time-out past the clock's range (a user's typo) means "a day".
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(TrackerError::Timeout(timeout))
    };
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|_| TrackerError::Resolve(url.host.clone()))?
        .collect();
    let mut last = TrackerError::Resolve(url.host.clone());
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = TrackerError::Io(e.to_string()),
        }
    }
    let stream = stream.ok_or(last)?;
    if url.scheme != Scheme::Https {
        return exchange(stream, request, timeout, &left);
    }
    let name = rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|_| TrackerError::InvalidUrl("host is not a valid TLS server name"))?;
    let conn = rustls::ClientConnection::new(tls, name)
        .map_err(|e| TrackerError::Io(format!("TLS: {e}")))?;
    exchange(
        rustls::StreamOwned::new(conn, stream),
        request,
        timeout,
        &left,
    )
}

fn exchange(
    mut stream: impl Conn,
    request: &[u8],
    timeout: Duration,
    left: &dyn Fn() -> Result<Duration, TrackerError>,
) -> Result<(u16, Vec<u8>), TrackerError> {
    let io_err = |e: io::Error| {
        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            TrackerError::Timeout(timeout)
        } else {
            TrackerError::Io(e.to_string())
        }
    };
    stream
        .tcp()
        .set_write_timeout(Some(left()?))
        .map_err(io_err)?;
    stream.write_all(request).map_err(io_err)?;
    stream.flush().map_err(io_err)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        stream
            .tcp()
            .set_read_timeout(Some(left()?))
            .map_err(io_err)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A TLS server that closes without close_notify: the end of the reply, which
            // `parse_reply` still checks against its length.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io_err(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        match parse_reply(&buf, n == 0)? {
            HttpProgress::Done { status, body } => return Ok((status, body)),
            HttpProgress::Incomplete if n == 0 => {
                return Err(TrackerError::MalformedHttp("connection closed early"))
            }
            HttpProgress::Incomplete => {}
        }
    }
}
