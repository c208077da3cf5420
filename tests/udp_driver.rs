//! The loops' UDP socket on both backends, with a tiny protocol that echoes datagrams back:
//! what starts with `d` reaches the protocol (IPv4-mapped senders unmapped), anything else is
//! counted and dropped, replies go out, and one turn reads a bounded number of datagrams.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringtorrent::core::api::{Action, ConnId, Event};
use ringtorrent::core::Time;
use ringtorrent::dht::Transmit;
use ringtorrent::driver::{resolve, Backend, Driver, IoChoice, Protocol};
use ringtorrent::storage::{DiskPool, DiskPoolConfig};

/// Echoes every datagram, prefixed with `e`, and keeps where each came from.
#[derive(Default)]
struct Echo {
    from: Vec<SocketAddr>,
    out: Vec<Transmit>,
}

impl Protocol for Echo {
    fn accept(&mut self, _: SocketAddr, _: Time) -> Option<ConnId> {
        None
    }
    fn handle_connected(&mut self, _: ConnId, _: Time) {}
    fn handle_recv(&mut self, _: ConnId, _: &[u8], _: Time) {}
    fn handle_sent(&mut self, _: ConnId, _: usize, _: Time) {}
    fn handle_closed(&mut self, _: ConnId, _: Time) {}
    fn send_chunks(&mut self, _: ConnId) -> Vec<&[u8]> {
        Vec::new()
    }
    fn take_send(&mut self, _: ConnId, _: usize) -> Vec<Bytes> {
        Vec::new()
    }
    fn handle_timeout(&mut self, _: Time) {}
    fn poll_action(&mut self) -> Option<Action> {
        None
    }
    fn poll_event(&mut self) -> Option<Event> {
        None
    }
    fn poll_timeout(&self) -> Option<Time> {
        None
    }
    fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], _: Time) {
        self.from.push(from);
        let mut payload = b"e".to_vec();
        payload.extend_from_slice(data);
        self.out.push(Transmit { to: from, payload });
    }
    fn poll_datagram(&mut self) -> Option<Transmit> {
        self.out.pop()
    }
}

fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Epoll];
    // io_uring where this machine allows it; the test says which ran.
    if resolve(IoChoice::Uring).is_ok() {
        b.push(Backend::Uring);
    } else {
        eprintln!("io_uring unavailable here: epoll only");
    }
    b
}

fn driver(backend: Backend, bind: &str) -> Driver<Echo> {
    let pool = Arc::new(DiskPool::new(DiskPoolConfig::default()).unwrap());
    let mut d = Driver::new(backend, Echo::default(), None, pool, Instant::now()).unwrap();
    d.set_udp(UdpSocket::bind(bind).unwrap()).unwrap();
    d
}

/// Turns the loop until `done` or five seconds.
fn turn_until(d: &mut Driver<Echo>, mut done: impl FnMut(&mut Driver<Echo>) -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !done(d) {
        assert!(Instant::now() < end, "timed out");
        d.turn(Duration::from_millis(20), &mut |_| {}).unwrap();
    }
}

#[test]
fn dictionaries_are_delivered_and_answered_the_rest_dropped() {
    for backend in backends() {
        let mut d = driver(backend, "127.0.0.1:0");
        let addr = d.udp_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(b"xnot krpc", addr).unwrap();
        client.send_to(b"d1:ad2:id20:e", addr).unwrap();
        turn_until(&mut d, |d| d.session().from.len() == 1);
        assert_eq!(d.session().from, vec![client.local_addr().unwrap()]);
        let mut buf = [0u8; 64];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"ed1:ad2:id20:e"[..], addr),
            "{backend}"
        );
        let stats = d.loop_stats();
        assert_eq!(stats.datagrams_received, 2, "{backend}");
        assert_eq!(stats.datagrams_dropped, 1, "{backend}");
        assert_eq!(stats.datagrams_sent, 1, "{backend}");
    }
}

#[test]
fn ipv4_senders_on_a_dual_stack_socket_are_unmapped() {
    for backend in backends() {
        let Ok(socket) = UdpSocket::bind("[::]:0") else {
            panic!("no IPv6 socket on this machine");
        };
        let port = socket.local_addr().unwrap().port();
        let pool = Arc::new(DiskPool::new(DiskPoolConfig::default()).unwrap());
        let mut d = Driver::new(backend, Echo::default(), None, pool, Instant::now()).unwrap();
        d.set_udp(socket).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(b"de", ("127.0.0.1", port)).unwrap();
        turn_until(&mut d, |d| !d.session().from.is_empty());
        let from = d.session().from[0];
        assert_eq!(from, client.local_addr().unwrap(), "{backend}: unmapped");
        // And the reply to a plain IPv4 address goes out on the IPv6 socket.
        let mut buf = [0u8; 16];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ede", "{backend}");
    }
}

#[test]
fn a_flood_is_read_a_bounded_batch_per_turn() {
    for backend in backends() {
        let mut d = driver(backend, "127.0.0.1:0");
        let addr = d.udp_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..1000 {
            client.send_to(b"de", addr).unwrap();
        }
        d.turn(Duration::from_millis(200), &mut |_| {}).unwrap();
        let first = d.session().from.len();
        assert!(
            (1..=128).contains(&first),
            "{backend}: {first} datagrams in one turn"
        );
        // The rest follow over later turns (the kernel's buffer dropped what overflowed it).
        let mut idle = 0;
        let mut seen = first;
        turn_until(&mut d, |d| {
            let now = d.session().from.len();
            idle = if now == seen { idle + 1 } else { 0 };
            seen = now;
            idle > 10
        });
        assert!(seen > first, "{backend}: later turns read the rest");
    }
}
