//! Debian's opentracker on loopback, for the tracker tests: whitelist-only, it refuses to run
//! as root and chroots, so it runs as `nobody` in a world-readable temporary folder.

use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{tcp_listener, udp_socket, Listener};

/// An opentracker process, killed by PID when dropped.
pub struct OpenTracker {
    child: Option<Child>,
    /// Its HTTP and UDP port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl OpenTracker {
    /// Starts it on 127.0.0.1 (HTTP and UDP on one port) with `info_hashes` (hex) as its
    /// whitelist, and waits until it accepts announces. opentracker must be given its port: a
    /// candidate is tried, and the tracker counts as started only once its own process holds
    /// the TCP listener and the UDP socket there; a bind that fails (the port taken since)
    /// means another try on a fresh candidate.
    pub fn start(info_hashes: &[String]) -> OpenTracker {
        let dir = tempfile::tempdir().unwrap();
        // It drops to `nobody` before reading the whitelist inside the chroot.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let whitelist = dir.path().join("whitelist");
        std::fs::write(&whitelist, info_hashes.join("\n") + "\n").unwrap();
        std::fs::set_permissions(&whitelist, std::fs::Permissions::from_mode(0o644)).unwrap();
        let root = dir.path().to_owned();
        // Guards each attempt's process from the moment it is spawned.
        let mut tracker = OpenTracker {
            child: None,
            port: 0,
            _dir: dir,
        };
        let mut why = Vec::new();
        for _ in 0..20 {
            let port = free_port();
            tracker.port = port;
            let child = tracker.child.insert(
                Command::new("opentracker")
                    .args([
                        "-i",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "-P",
                        &port.to_string(),
                    ])
                    .arg("-d")
                    .arg(&root)
                    .args(["-u", "nobody", "-w", "whitelist"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start opentracker (scripts/test.sh installs it)"),
            );
            let pid = child.id();
            let started = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                    why.push(format!("on {port} it exited ({status}): {err}"));
                    break;
                }
                let (tcp, udp) = (tcp_listener(pid, port), udp_socket(pid, port));
                if tcp == Listener::Other || udp == Listener::Other {
                    why.push(format!("{port} was taken (tcp {tcp:?}, udp {udp:?})"));
                    break;
                }
                if tcp == Listener::Ours
                    && udp == Listener::Ours
                    && whitelist_loaded(port, &info_hashes[0])
                {
                    return tracker;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    why.push(format!("on {port} not ready in 30 s"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tracker.stop();
        }
        panic!("opentracker did not start:\n{}", why.join("\n"));
    }

    /// Its HTTP announce URL.
    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    /// Its UDP announce URL.
    pub fn udp(&self) -> String {
        format!("udp://127.0.0.1:{}/announce", self.port)
    }
}

impl OpenTracker {
    /// Ends it (by PID).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OpenTracker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the tracker on `port` accepts announces for `hash` yet: opentracker loads its
/// whitelist on a thread of its own after it starts listening. The probe announces
/// `stopped`, which adds no peer.
fn whitelist_loaded(port: u16, hash: &str) -> bool {
    use std::io::Write;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let pct: String = hash
        .as_bytes()
        .chunks(2)
        .map(|c| format!("%{}", std::str::from_utf8(c).unwrap()))
        .collect();
    let request = format!(
        "GET /announce?info_hash={pct}&peer_id=-PROBE-0000000000000&port=1&uploaded=0\
         &downloaded=0&left=0&event=stopped&compact=1 HTTP/1.1\r\nHost: x\r\n\
         Connection: close\r\n\r\n"
    );
    let mut reply = Vec::new();
    s.write_all(request.as_bytes()).is_ok()
        && s.read_to_end(&mut reply).is_ok()
        && reply.starts_with(b"HTTP/1.")
        && !String::from_utf8_lossy(&reply).contains("failure reason")
}

/// A candidate port, free for both TCP and UDP on 127.0.0.1 just now (it may be taken again
/// before opentracker binds it: [`OpenTracker::start`] checks).
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
