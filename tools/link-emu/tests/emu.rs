//! The emulator measured from outside: round trips across it match the delay asked, loss and
//! reordering match their rates over enough packets, a bulk TCP flow runs near the rate limit
//! and never far above it, and it stops by itself (deadline, parent gone, SIGTERM). Every
//! process is bounded in time and ended by its handle.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const EMU: &str = env!("CARGO_BIN_EXE_link-emu");

/// A running emulator and the PIDs that stand for its two sides.
struct Link {
    child: Child,
    a: u32,
    b: u32,
}

impl Link {
    fn start(spec: &str, seconds: u32) -> Link {
        let mut child = Command::new(EMU)
            .args(["run", "--link", spec, "--duration", &seconds.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = |key: &str| -> u32 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        let (a, b) = (pid("a="), pid("b="));
        Link { child, a, b }
    }

    /// `link-emu ARGS` run on side `pid`.
    fn tool(&self, pid: u32, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "-t",
            &pid.to_string(),
            "-U",
            "-n",
            "--preserve-credentials",
            EMU,
        ])
        .args(args);
        cmd
    }

    /// Ends the emulator with SIGTERM and returns its counters (stderr).
    fn stop(mut self) -> String {
        // SAFETY: kill on the PID of our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let out = wait_bounded(&mut self.child, Duration::from_secs(5));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` for at most `limit`, killing it past that (and failing).
fn wait_bounded(child: &mut Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            if let Some(mut s) = child.stdout.take() {
                s.read_to_end(&mut stdout).unwrap();
            }
            if let Some(mut s) = child.stderr.take() {
                s.read_to_end(&mut stderr).unwrap();
            }
            return Output {
                status,
                stdout,
                stderr,
            };
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_bounded(cmd: &mut Command, limit: Duration) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(&mut child, limit);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A helper process, ended by its handle when the test is done with it.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a `udp-echo` on side A and waits until it listens.
fn echo_on_a(link: &Link, seconds: u32) -> Helper {
    let mut echo = link
        .tool(
            link.a,
            &[
                "udp-echo",
                "10.77.0.1:7000",
                "--duration",
                &seconds.to_string(),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(echo.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening"), "{line:?}");
    Helper(echo)
}

/// What `udp-probe` reported.
#[derive(Debug)]
struct Probe {
    sent: f64,
    received: f64,
    reordered: f64,
    min: f64,
    median: f64,
    max: f64,
}

fn probe(link: &Link, count: u32, interval_us: u32) -> Probe {
    let out = run_bounded(
        &mut link.tool(
            link.b,
            &[
                "udp-probe",
                "10.77.0.1:7000",
                "--count",
                &count.to_string(),
                "--interval-us",
                &interval_us.to_string(),
            ],
        ),
        Duration::from_secs(30),
    );
    let field = |key: &str| -> f64 {
        let words: Vec<&str> = out.split_whitespace().collect();
        let i = words
            .iter()
            .position(|w| *w == key)
            .unwrap_or_else(|| panic!("no {key} in {out:?}"));
        words[i + 1].parse().unwrap()
    };
    Probe {
        sent: field("sent"),
        received: field("received"),
        reordered: field("reordered"),
        min: field("min"),
        median: field("median"),
        max: field("max"),
    }
}

/// A counter from the emulator's report of direction `dir` (`a->b:` or `b->a:`).
fn counter(report: &str, dir: &str, key: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.starts_with(dir))
        .unwrap_or_else(|| panic!("no {dir} in {report:?}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == key).unwrap();
    words[i + 1].parse().unwrap()
}

#[test]
fn round_trips_take_twice_the_one_way_delay() {
    let link = Link::start("20ms", 30);
    let _echo = echo_on_a(&link, 20);
    let p = probe(&link, 300, 2000);
    assert_eq!(p.received, p.sent, "{p:?}");
    assert_eq!(p.reordered, 0.0, "{p:?}");
    // 2 x 20 ms, never less; a loaded machine adds a little, not 10 ms in the median.
    assert!(p.min >= 40.0, "{p:?}");
    assert!(p.median < 50.0, "{p:?}");
    let report = link.stop();
    assert!(report.contains("stopped (signal)"), "{report}");
    assert_eq!(counter(&report, "a->b:", "lost"), 0.0);
}

#[test]
fn jitter_spreads_the_delay_without_reordering() {
    let link = Link::start("20ms,jitter=5ms", 30);
    let _echo = echo_on_a(&link, 20);
    let p = probe(&link, 300, 5000);
    assert_eq!(p.received, p.sent, "{p:?}");
    assert_eq!(p.reordered, 0.0, "{p:?}");
    // Each way 15 to 25 ms: round trips from 30 to 50 ms, spread over more than 5 ms.
    assert!(p.min >= 30.0 && p.median < 50.0, "{p:?}");
    assert!(p.max - p.min > 5.0, "{p:?}");
}

#[test]
fn loss_matches_the_rate_asked() {
    let link = Link::start("5ms,loss=10%,seed=42", 30);
    let _echo = echo_on_a(&link, 20);
    let p = probe(&link, 4000, 500);
    // 10% each way: 81% of the probes come back (standard deviation about 0.6 points).
    let back = p.received / p.sent;
    assert!((0.77..0.85).contains(&back), "{back} {p:?}");
    let report = link.stop();
    for dir in ["a->b:", "b->a:"] {
        let lost = counter(&report, dir, "lost") / counter(&report, dir, "offered");
        assert!((0.08..0.12).contains(&lost), "{dir} {lost}\n{report}");
    }
}

#[test]
fn reordering_happens_when_asked() {
    let link = Link::start("10ms,reorder=10%,gap=5ms", 30);
    let _echo = echo_on_a(&link, 20);
    let p = probe(&link, 2000, 500);
    assert_eq!(p.received, p.sent, "{p:?}");
    // About one probe in ten held back on each way, each overtaken by the next ones.
    let late = p.reordered / p.received;
    assert!((0.08..0.30).contains(&late), "{late} {p:?}");
}

#[test]
fn a_bulk_tcp_flow_runs_near_the_rate_and_never_far_above() {
    let link = Link::start("20ms,10mbit", 40);
    let mut sink = Helper(
        link.tool(
            link.b,
            &[
                "tcp-sink",
                "10.77.0.2:7001",
                "--duration",
                "20",
                "--progress-ms",
                "1000",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let mut lines = BufReader::new(sink.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("listening"), "{first:?}");
    run_bounded(
        &mut link.tool(link.a, &["tcp-source", "10.77.0.2:7001", "--seconds", "6"]),
        Duration::from_secs(20),
    );
    // Progress lines (bytes so far, never going back) until the connection's summary.
    let mut so_far = Vec::new();
    let line = loop {
        let line = lines.next().unwrap().unwrap();
        match line.strip_prefix("progress ") {
            Some(rest) => so_far.push(rest.split(' ').next().unwrap().parse::<u64>().unwrap()),
            None => break line,
        }
    };
    drop(sink);
    assert!(so_far.len() >= 4, "{so_far:?}");
    assert!(so_far.windows(2).all(|w| w[0] <= w[1]), "{so_far:?}");
    // "received BYTES from ADDR in SECS s = MBIT mbit/s"
    let mbit: f64 = line.split_whitespace().nth(8).unwrap().parse().unwrap();
    // 10 Mbit/s of IP packets carry about 9.6 of TCP payload.
    assert!((8.0..10.2).contains(&mbit), "{line}");
    let bytes: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(bytes > 5e6, "{line}");
}

#[test]
fn it_stops_at_its_deadline_and_takes_its_sides_with_it() {
    let start = Instant::now();
    let mut link = Link::start("1ms", 1);
    let (a, b) = (link.a, link.b);
    assert!(std::path::Path::new(&format!("/proc/{a}")).exists());
    let out = wait_bounded(&mut link.child, Duration::from_secs(10));
    assert!(out.status.success());
    assert!(start.elapsed() < Duration::from_secs(5));
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("stopped (deadline)"), "{report}");
    assert!(gone(a) && gone(b));
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet) within 5 s.
fn gone(pid: u32) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return true
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

#[test]
fn it_stops_when_its_parent_exits() {
    // A shell starts it in the background and exits; the emulator notices within 100 ms.
    let out = run_bounded(
        Command::new("sh").args([
            "-c",
            "\"$0\" run --link 1ms --duration 60 & sleep 1; echo emu=$!",
            EMU,
        ]),
        Duration::from_secs(20),
    );
    let pid: u32 = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("emu="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let sides: Vec<u32> = ["a=", "b="]
        .iter()
        .map(|k| {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{out}"))
        })
        .collect();
    assert!(gone(pid), "{out}");
    assert!(sides.iter().all(|p| gone(*p)), "{out}");
}

#[test]
fn bad_specs_are_refused_with_the_reason() {
    let out = Command::new(EMU)
        .args(["run", "--link", "50ms,fast"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"fast\""));
}

#[test]
fn each_side_has_its_address_as_soon_as_it_is_ready() {
    // Joined the instant "ready" is printed, each side can bind its own address (and only it).
    for _ in 0..5 {
        let link = Link::start("1ms", 20);
        for (pid, own, other) in [
            (link.a, "10.77.0.1:0", "10.77.0.2:0"),
            (link.b, "10.77.0.2:0", "10.77.0.1:0"),
        ] {
            run_bounded(
                &mut link.tool(pid, &["udp-echo", own, "--duration", "0"]),
                Duration::from_secs(10),
            );
            let out = link
                .tool(pid, &["udp-echo", other, "--duration", "0"])
                .output()
                .unwrap();
            assert!(!out.status.success());
        }
    }
}
