//! What a driver runs. The peer-wire [`Session`] is the engine; a load generator's synthetic
//! peers (`swarm-load`) are another sans-IO state machine with the same contract, so both run
//! on the same io_uring and epoll loops.
//!
//! The contract is the session's (see [`crate::core::session`]): inputs are the `handle_*`
//! calls, each with `now`; after any input the driver drains [`Protocol::poll_action`], then
//! [`Protocol::poll_event`], then waits no longer than [`Protocol::poll_timeout`].

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use crate::core::api::{Action, ConnId, DiskDone, Event};
use crate::core::session::HandOff;
use crate::core::{Session, Time};
use crate::dht::Transmit;

/// A sans-IO state machine over TCP connections (and, on the loop that owns it, the UDP
/// socket's datagrams) that a driver can run.
pub trait Protocol {
    /// The port the driver listens on, once known.
    fn set_listen_port(&mut self, _port: u16) {}
    /// An incoming connection was accepted; `None` closes it.
    fn accept(&mut self, addr: SocketAddr, now: Time) -> Option<ConnId>;
    /// A connection another loop handed over; `None` closes it. Only sessions shard.
    fn adopt(&mut self, _handoff: HandOff, _now: Time) -> Option<ConnId> {
        None
    }
    /// The state of a connection announced by [`Action::HandOff`].
    fn take_handoff(&mut self, _conn: ConnId) -> Option<HandOff> {
        None
    }
    /// An outgoing connection came up.
    fn handle_connected(&mut self, conn: ConnId, now: Time);
    /// Bytes arrived.
    fn handle_recv(&mut self, conn: ConnId, data: &[u8], now: Time);
    /// Lends `conn`'s receive buffer for the driver to read into (see
    /// [`Session::recv_buffer`]); the driver extends its length by what it read and reports
    /// it with [`Protocol::handle_recv_in_place`]. `None`: read elsewhere and call
    /// [`Protocol::handle_recv`].
    fn recv_buffer(&mut self, _conn: ConnId) -> Option<&mut BytesMut> {
        None
    }
    /// `n` bytes were read into the end of the buffer [`Protocol::recv_buffer`] lent.
    fn handle_recv_in_place(&mut self, _conn: ConnId, _n: usize, _now: Time) {}
    /// Bytes arrived in a buffer the driver gives away (see [`Session::handle_recv_owned`]).
    fn handle_recv_owned(&mut self, conn: ConnId, chunk: BytesMut, now: Time) {
        self.handle_recv(conn, &chunk, now)
    }
    /// The socket has nothing more to read for now (see [`Session::recv_drained`]).
    fn recv_drained(&mut self, _conn: ConnId) {}
    /// `n` bytes from the front of what is queued on `conn` were sent: bytes taken with
    /// [`Protocol::take_send`] first, then those of [`Protocol::send_chunks`]. A driver that
    /// takes reports every taken byte this way once the kernel accepted it; until then the
    /// protocol still counts it as memory the connection holds.
    fn handle_sent(&mut self, conn: ConnId, n: usize, now: Time);
    /// The socket closed or failed.
    fn handle_closed(&mut self, conn: ConnId, now: Time);
    /// The bytes waiting to go out on `conn`, in order.
    fn send_chunks(&mut self, conn: ConnId) -> Vec<&[u8]>;
    /// Takes up to about `max` bytes of whole chunks queued on `conn` (reported later with
    /// [`Protocol::handle_sent`]).
    fn take_send(&mut self, conn: ConnId, max: usize) -> Vec<Bytes>;
    /// Whether the driver should keep reading `conn`'s socket. Once false, the driver stops
    /// reading it for good (the kernel's receive buffer fills and the remote's sends stall):
    /// how `swarm-load`'s slow readers hold a target's send queues full. A session always
    /// reads (its back-pressure is to stop reading blocks from disk, never to stop reading
    /// a peer, which could deadlock two peers that both wait for the other to read).
    fn wants_recv(&self, _conn: ConnId) -> bool {
        true
    }
    /// A disk operation finished.
    fn handle_disk(&mut self, _done: DiskDone, _now: Time) {}
    /// Timers: called every turn; does nothing until [`Protocol::poll_timeout`] is due.
    fn handle_timeout(&mut self, now: Time);
    /// The next thing for the driver to do.
    fn poll_action(&mut self) -> Option<Action>;
    /// The next event.
    fn poll_event(&mut self) -> Option<Event>;
    /// When [`Protocol::handle_timeout`] wants to run next.
    fn poll_timeout(&self) -> Option<Time>;
    /// A datagram arrived on the loop's UDP socket whose first byte is `d` (a bencoded
    /// dictionary: KRPC, the DHT's). The driver counts and drops anything else, and unmaps
    /// IPv4-mapped IPv6 sources to `SocketAddr::V4` first.
    fn handle_datagram(&mut self, _from: SocketAddr, _data: &[u8], _now: Time) {}
    /// The next datagram to send on the loop's UDP socket; drained with the actions.
    fn poll_datagram(&mut self) -> Option<Transmit> {
        None
    }
}

impl Protocol for Session {
    fn set_listen_port(&mut self, port: u16) {
        Session::set_listen_port(self, port)
    }
    fn accept(&mut self, addr: SocketAddr, now: Time) -> Option<ConnId> {
        Session::accept(self, addr, now)
    }
    fn adopt(&mut self, handoff: HandOff, now: Time) -> Option<ConnId> {
        Session::adopt(self, handoff, now)
    }
    fn take_handoff(&mut self, conn: ConnId) -> Option<HandOff> {
        Session::take_handoff(self, conn)
    }
    fn handle_connected(&mut self, conn: ConnId, now: Time) {
        Session::handle_connected(self, conn, now)
    }
    fn handle_recv(&mut self, conn: ConnId, data: &[u8], now: Time) {
        Session::handle_recv(self, conn, data, now)
    }
    fn recv_buffer(&mut self, conn: ConnId) -> Option<&mut BytesMut> {
        Session::recv_buffer(self, conn)
    }
    fn handle_recv_in_place(&mut self, conn: ConnId, n: usize, now: Time) {
        Session::handle_recv_in_place(self, conn, n, now)
    }
    fn handle_recv_owned(&mut self, conn: ConnId, chunk: BytesMut, now: Time) {
        Session::handle_recv_owned(self, conn, chunk, now)
    }
    fn recv_drained(&mut self, conn: ConnId) {
        Session::recv_drained(self, conn)
    }
    fn handle_sent(&mut self, conn: ConnId, n: usize, now: Time) {
        Session::handle_sent(self, conn, n, now)
    }
    fn handle_closed(&mut self, conn: ConnId, now: Time) {
        Session::handle_closed(self, conn, now)
    }
    fn send_chunks(&mut self, conn: ConnId) -> Vec<&[u8]> {
        Session::send_chunks(self, conn)
    }
    fn take_send(&mut self, conn: ConnId, max: usize) -> Vec<Bytes> {
        Session::take_send(self, conn, max)
    }
    fn handle_disk(&mut self, done: DiskDone, now: Time) {
        Session::handle_disk(self, done, now)
    }
    fn handle_timeout(&mut self, now: Time) {
        Session::handle_timeout(self, now)
    }
    fn poll_action(&mut self) -> Option<Action> {
        Session::poll_action(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Session::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Time> {
        Session::poll_timeout(self)
    }
    fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Time) {
        Session::handle_datagram(self, from, data, now)
    }
    fn poll_datagram(&mut self) -> Option<Transmit> {
        Session::poll_datagram(self)
    }
}
