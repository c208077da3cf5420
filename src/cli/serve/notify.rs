//! systemd's readiness protocol (sd_notify(3)), written by hand: one datagram of
//! `KEY=VALUE` lines to the unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract
//! name when it starts with `@`). Without the variable nothing is sent; a send that fails is
//! logged and otherwise ignored (the service manager's problem, never a reason to stop
//! seeding). `serve` sends `READY=1` once its API and listeners are up and its remembered
//! torrents re-added, `RELOADING=1` with `MONOTONIC_USEC` when SIGHUP starts a reload and
//! `READY=1` when it ends, `STOPPING=1` when it starts to stop, and `STATUS=` lines saying
//! what it does.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where notifications go, or nowhere.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The socket `$NOTIFY_SOCKET` names. The variable is removed from our environment, as
    /// `sd_notify(unset_environment=1)` does, so no child of ours notifies in our name.
    pub fn from_env() -> Notifier {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        // Called before `serve` starts any thread, so nothing reads the environment at once.
        std::env::remove_var("NOTIFY_SOCKET");
        let target = address(&name).and_then(|addr| {
            let sock = UnixDatagram::unbound()
                .map_err(|e| format!("cannot open a unix datagram socket: {e}"))?;
            Ok((sock, addr))
        });
        match target {
            Ok(t) => Notifier { target: Some(t) },
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={}: {e}", name.to_string_lossy());
                Notifier { target: None }
            }
        }
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments), if there is somewhere to.
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                tracing::warn!("cannot notify the service manager ({state:?}): {e}");
            }
        }
    }

    /// `READY=1` and a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1` with the time it starts, as sd_notify(3) asks for `Type=notify-reload`.
    pub fn reloading(&self) {
        self.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the config",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=stopping: saving resume data");
    }
}

/// A status is one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The address `$NOTIFY_SOCKET` names: `@name` is an abstract socket, `/path` a file.
fn address(name: &std::ffi::OsStr) -> Result<SocketAddr, String> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..]).map_err(|e| e.to_string())
        }
        Some(b'/') => SocketAddr::from_pathname(name).map_err(|e| e.to_string()),
        _ => Err("neither an absolute path nor an abstract name (@...)".into()),
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd reads.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abstract_and_path_names_are_told_apart() {
        use std::os::linux::net::SocketAddrExt;
        let a = address("@ringtorrent/notify".as_ref()).unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"ringtorrent/notify"[..]));
        let p = address("/run/systemd/notify".as_ref()).unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert!(address("relative".as_ref()).is_err());
        assert!(address("".as_ref()).is_err());
    }

    #[test]
    fn notifications_arrive_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
        };
        n.ready("serving\n3 torrents");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving 3 torrents");
        n.reloading();
        let len = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        let usec: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(text.starts_with("RELOADING=1\n") && usec > 0, "{text}");
    }
}
