//! Load generators: `tracker-load` (UDP and HTTP trackers) and `swarm-load` (peers). They
//! share the report format and its merge ([`report`]), and the small pieces of system glue
//! below (the generator's own CPU time, a microsecond poll).
//!
//! ```text
//!   report.rs          LoadReport: counters + lossless HDR histograms + params, JSON, merge
//!   swarm/             swarm-load: pattern payloads, synthetic peers on the engine's loops
//!   tracker/mod.rs     tracker-load: settings, worker threads, phases, --find-knee
//!   tracker/model.rs   torrents, Zipf popularity, peers and their lifecycle, reply checks
//!   tracker/udp.rs     BEP 15 worker: sockets, connection ids, retransmission, late replies
//!   tracker/http.rs    HTTP worker: keep-alive connections (reconnecting when closed)
//! ```
//!
//! Generators never aim at an address outside loopback unless the user says so
//! (`--allow-remote`); the check is the CLI's ([`is_loopback_target`]).

pub mod report;
pub mod swarm;
pub mod tracker;

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

/// Whether a generator may aim at `addr` without `--allow-remote`.
pub fn is_loopback_target(addr: &SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(a) => a.ip().is_loopback(),
        SocketAddr::V6(a) => {
            a.ip().is_loopback() || a.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// This process's CPU time so far: (user, system), microseconds.
pub fn cpu_time_us() -> (u64, u64) {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we own; it cannot fail
    // for RUSAGE_SELF with a valid pointer.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime), us(ru.ru_stime))
}

/// Waits until one of `fds` is ready for `events` (`libc::POLLIN` etc., per fd) or `timeout`
/// passes, with microsecond resolution (`poll` has milliseconds). Returns the readiness
/// (`revents`) per fd; errors other than EINTR are returned as all-ready so callers find them
/// by reading.
pub fn wait(fds: &mut [libc::pollfd], timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the call's duration
    // and its length is passed with it; `ts` lives on our stack; a null sigmask leaves the
    // signal mask unchanged.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        );
    }
}

/// A pollfd for `fd` waiting for `events`.
pub fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Sets a socket's receive buffer (best effort: the kernel caps it at `rmem_max`).
pub fn set_recv_buffer(fd: RawFd, bytes: usize) {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: `fd` is an open socket owned by the caller; the option value is a c_int on our
    // stack whose size is passed with it.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_targets() {
        for (a, ok) in [
            ("127.0.0.1:6969", true),
            ("127.8.0.1:1", true),
            ("[::1]:6969", true),
            ("[::ffff:127.0.0.1]:1", true),
            ("10.0.0.1:6969", false),
            ("[2001:db8::1]:1", false),
            ("0.0.0.0:1", false),
        ] {
            assert_eq!(super::is_loopback_target(&a.parse().unwrap()), ok, "{a}");
        }
        let (u, s) = super::cpu_time_us();
        assert!(u + s > 0);
    }
}
