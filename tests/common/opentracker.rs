//! Debian's opentracker on loopback, for the tracker tests: whitelist-only, it refuses to run
//! as root and chroots, so it runs as `nobody` in a world-readable temporary folder.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An opentracker process, killed by PID when dropped.
pub struct OpenTracker {
    child: Child,
    /// Its HTTP and UDP port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl OpenTracker {
    /// Starts it on 127.0.0.1 (HTTP and UDP on one free port) with `info_hashes` (hex) as its
    /// whitelist, and waits until it accepts announces.
    pub fn start(info_hashes: &[String]) -> OpenTracker {
        // Tests run in parallel: one start at a time, so two trackers never pick the same
        // free port (and a connect cannot reach another test's tracker).
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        // It drops to `nobody` before reading the whitelist inside the chroot.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let whitelist = dir.path().join("whitelist");
        std::fs::write(&whitelist, info_hashes.join("\n") + "\n").unwrap();
        std::fs::set_permissions(&whitelist, std::fs::Permissions::from_mode(0o644)).unwrap();
        for _ in 0..20 {
            let port = free_port();
            let mut child = Command::new("opentracker")
                .args([
                    "-i",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-P",
                    &port.to_string(),
                ])
                .arg("-d")
                .arg(dir.path())
                .args(["-u", "nobody", "-w", "whitelist"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start opentracker (scripts/test.sh installs it)");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
                    eprintln!("opentracker on {port} exited ({status}): {err}");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && child.try_wait().unwrap().is_none()
                    && whitelist_loaded(port, &info_hashes[0])
                {
                    return OpenTracker {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("opentracker did not start");
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
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    use std::io::{Read, Write};
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

/// A port free for both TCP and UDP on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
