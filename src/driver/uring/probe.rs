//! Start-up checks: can this process use io_uring, with every opcode and feature the driver
//! relies on? A failure names the likely cause so `--io auto` can fall back to epoll and
//! `--io uring` can tell the user why not.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, types, IoUring, Probe};

use super::bufring::BufRing;

/// How a ring was set up: which optional set-up flags the kernel accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setup {
    /// `SINGLE_ISSUER | DEFER_TASKRUN`, created disabled and enabled by the thread that
    /// first turns the loop (6.1+).
    DeferTaskrun,
    /// `COOP_TASKRUN` (5.19+).
    CoopTaskrun,
    /// No optional flags.
    Plain,
}

/// Opcodes the driver submits, with their names for error messages.
const OPCODES: &[(u8, &str)] = &[
    (opcode::AcceptMulti::CODE, "ACCEPT"),
    (opcode::Connect::CODE, "CONNECT"),
    (opcode::RecvMulti::CODE, "RECV"),
    (opcode::SendMsg::CODE, "SENDMSG"),
    (opcode::Read::CODE, "READ"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
];

/// Builds a ring of `sq` submission entries and a completion queue twice as large, with the
/// best optional flags the kernel accepts.
pub(crate) fn build_ring(sq: u32) -> io::Result<(IoUring, Setup)> {
    let cq = sq * 2;
    let mut builder = IoUring::builder();
    builder
        .setup_cqsize(cq)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_r_disabled();
    if let Ok(ring) = builder.build(sq) {
        return Ok((ring, Setup::DeferTaskrun));
    }
    let mut builder = IoUring::builder();
    builder.setup_cqsize(cq).setup_coop_taskrun();
    if let Ok(ring) = builder.build(sq) {
        return Ok((ring, Setup::CoopTaskrun));
    }
    let mut builder = IoUring::builder();
    builder.setup_cqsize(cq);
    builder.build(sq).map(|ring| (ring, Setup::Plain))
}

fn setup_error(e: &io::Error) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "absent".into());
    match e.raw_os_error() {
        Some(libc::ENOSYS) => format!(
            "io_uring is not available: the kernel has no io_uring_setup (older than 5.1, or \
             built without CONFIG_IO_URING) ({e})"
        ),
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "io_uring is refused ({e}): kernel.io_uring_disabled is {sysctl} (0 allows it for \
             everyone, 1 only for the io_uring_group, 2 for no one), or a seccomp profile \
             blocks it (Docker's default profile does; run with --security-opt \
             seccomp=unconfined or use --io epoll)"
        ),
        _ => format!("cannot set up an io_uring instance: {e}"),
    }
}

/// Checks that io_uring works here with everything the driver uses: set-up, the opcodes,
/// `IORING_FEAT_NODROP` and `IORING_FEAT_EXT_ARG`, a provided buffer ring, and a multishot
/// receive that actually delivers a byte into it (the opcode table cannot show multishot
/// support, which came in 6.0). Takes a few hundred microseconds.
pub fn probe() -> Result<(), String> {
    let (ring, setup) = build_ring(8).map_err(|e| setup_error(&e))?;
    if setup == Setup::DeferTaskrun {
        ring.submitter()
            .register_enable_rings()
            .map_err(|e| format!("cannot enable the io_uring instance: {e}"))?;
    }
    check(ring)
}

fn check(mut ring: IoUring) -> Result<(), String> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring has no opcode probe (kernel older than 5.6): {e}"))?;
    let missing: Vec<&str> = OPCODES
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "io_uring lacks opcodes this driver needs: {} (kernel too old)",
            missing.join(", ")
        ));
    }
    if !ring.params().is_feature_nodrop() {
        return Err("io_uring lacks IORING_FEAT_NODROP (kernel older than 5.5)".into());
    }
    if !ring.params().is_feature_ext_arg() {
        return Err("io_uring lacks IORING_FEAT_EXT_ARG (kernel older than 5.11)".into());
    }
    let mut bufs = BufRing::new(&ring, 0, 2, 4096).map_err(|e| {
        format!("io_uring cannot register a provided buffer ring (kernel older than 5.19): {e}")
    })?;

    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(format!(
            "socketpair for the io_uring self-test failed: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: socketpair succeeded, so both are fresh descriptors that we alone own.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let recv = opcode::RecvMulti::new(types::Fd(a.as_raw_fd()), bufs.group())
        .build()
        .user_data(1);
    let cancel = opcode::AsyncCancel::new(1).build().user_data(2);
    // SAFETY: a multishot receive names no memory of ours except through the buffer group;
    // `bufs` is unmapped only after this receive's final completion has been seen (or, if
    // that never comes, it is leaked), see the end of this function.
    unsafe {
        ring.submission()
            .push(&recv)
            .map_err(|_| "io_uring submission queue full".to_string())?;
    }
    ring.submit()
        .map_err(|e| format!("io_uring submit failed: {e}"))?;
    // SAFETY: writes one byte from a valid static buffer to a descriptor we own.
    if unsafe { libc::write(b.as_raw_fd(), b"x".as_ptr().cast(), 1) } != 1 {
        return Err("write for the io_uring self-test failed".into());
    }
    let ts = types::Timespec::from(Duration::from_secs(1));
    let args = types::SubmitArgs::new().timespec(&ts);
    match ring.submitter().submit_with_args(1, &args) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
        Err(e) => return Err(format!("io_uring wait failed: {e}")),
    }
    let cqe: Option<cqueue::Entry> = ring.completion().next();
    let first = cqe.as_ref().map(|c| c.flags());
    let result = match cqe {
        None => Err("io_uring multishot receive delivered nothing within 1 s".to_string()),
        Some(c) if c.result() == 1 && cqueue::more(c.flags()) => {
            match cqueue::buffer_select(c.flags()) {
                Some(bid) => {
                    // SAFETY: `bid` was just handed to us by this completion, with 1 byte.
                    let ok = &unsafe { bufs.take(bid, 1) }[..] == b"x";
                    if ok {
                        Ok(())
                    } else {
                        Err("io_uring provided buffer holds the wrong byte".to_string())
                    }
                }
                None => Err("io_uring receive did not use the provided buffer".to_string()),
            }
        }
        Some(c) => Err(format!(
            "io_uring multishot receive is not supported (kernel older than 6.0?): result {}",
            c.result()
        )),
    };
    // SAFETY: a cancellation names only a user_data value, no memory.
    unsafe {
        let _ = ring.submission().push(&cancel);
    }
    // Wait for the receive's final completion so no buffer can be selected after we unmap.
    let mut finished = first.is_some_and(|f| !cqueue::more(f));
    for _ in 0..100 {
        if finished {
            break;
        }
        let ts = types::Timespec::from(Duration::from_millis(10));
        let args = types::SubmitArgs::new().timespec(&ts);
        let _ = ring.submitter().submit_with_args(1, &args);
        for c in ring.completion() {
            if c.user_data() == 1 && !cqueue::more(c.flags()) {
                finished = true;
            }
        }
    }
    drop(ring);
    if finished {
        drop(bufs);
    } else {
        // The kernel may still own a buffer: leaking 8 KiB beats a write into freed memory.
        std::mem::forget(bufs);
    }
    result
}
