//! LEDBAT congestion control as BEP 29 gives it: the window grows while the one-way queuing
//! delay is under the target and shrinks above it, in proportion to how far off it is, so a
//! uTP flow yields to TCP and to other uTP flows sharing the bottleneck.
//!
//! The one-way delay comes from the peer: every packet it sends carries
//! `timestamp_difference_microseconds`, its clock minus the timestamp of the last packet it
//! had from us. Clocks are not synchronised, so the delay that counts is that difference minus
//! the smallest one seen lately (the *base delay*, the path's delay with empty queues); the
//! base is the minimum over the current and the previous minute, so a route change or clock
//! drift is forgotten within two minutes. Each delay sample is the minimum of the last three
//! raw ones, which filters one-packet jitter.
//!
//! On each acknowledgement of `acked` bytes:
//!
//! ```text
//! off_target    = target - queuing_delay            (clamped to [-target, target])
//! scaled_gain   = gain * off_target / target * acked / window
//! window       += scaled_gain
//! ```
//!
//! with `gain` the most the window grows per round trip (3000 bytes, BEP 29's
//! `MAX_CWND_INCREASE_PACKETS_PER_RTT` in bytes as libutp has it). Before the first loss the
//! window also grows by `acked` (slow start, doubling per round trip) while the delay is under
//! half the target. A loss halves the window (at most once per window of data); a timeout
//! sets it to one packet. The window never goes under one packet nor over `max_window`, and
//! grows only when it was used (an application that sends little does not earn a window it
//! never tested).

use std::time::Duration;

use crate::core::Time;

/// The window and its delay measurements.
#[derive(Clone, Debug)]
pub struct Ledbat {
    window: f64,
    min_window: f64,
    max_window: f64,
    target_us: f64,
    gain: f64,
    slow_start: bool,
    base: Option<BaseDelay>,
    recent: [u32; 3],
    recent_len: usize,
}

#[derive(Clone, Copy, Debug)]
struct BaseDelay {
    current: u32,
    previous: u32,
    minute_started: Time,
}

/// `a < b` on the 32-bit wrapping microsecond clock.
fn wrapping_less(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl Ledbat {
    /// A window starting at `initial` bytes, kept within `[min, max]`.
    pub fn new(initial: usize, min: usize, max: usize, target: Duration, gain: usize) -> Ledbat {
        let min = min.max(1) as f64;
        let max = (max as f64).max(min);
        Ledbat {
            window: (initial as f64).clamp(min, max),
            min_window: min,
            max_window: max,
            target_us: target.as_micros().max(1) as f64,
            gain: gain as f64,
            slow_start: true,
            base: None,
            recent: [0; 3],
            recent_len: 0,
        }
    }

    /// The congestion window, in bytes.
    pub fn window(&self) -> usize {
        self.window as usize
    }

    /// Whether the window still doubles per round trip.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// Records a delay sample (the peer's `timestamp_difference_microseconds`; 0 means the
    /// peer had none to give and is ignored).
    pub fn sample(&mut self, diff: u32, now: Time) {
        if diff == 0 {
            return;
        }
        match &mut self.base {
            None => {
                self.base = Some(BaseDelay {
                    current: diff,
                    previous: diff,
                    minute_started: now,
                })
            }
            Some(b) => {
                if now.saturating_since(b.minute_started) >= Duration::from_secs(60) {
                    b.previous = b.current;
                    b.current = diff;
                    b.minute_started = now;
                } else if wrapping_less(diff, b.current) {
                    b.current = diff;
                }
            }
        }
        self.recent.rotate_right(1);
        self.recent[0] = diff;
        self.recent_len = (self.recent_len + 1).min(self.recent.len());
    }

    /// The queuing delay now (microseconds), if any sample was taken.
    pub fn queuing_delay(&self) -> Option<u32> {
        let b = self.base?;
        let base = if wrapping_less(b.previous, b.current) {
            b.previous
        } else {
            b.current
        };
        let newest = self
            .recent
            .get(..self.recent_len)?
            .iter()
            .copied()
            .reduce(|m, d| if wrapping_less(d, m) { d } else { m })?;
        let q = newest.wrapping_sub(base);
        // A sample under the base (the base was just lowered by another) is no delay.
        Some(if (q as i32) < 0 { 0 } else { q })
    }

    /// `acked` bytes were acknowledged; `window_was_full` says whether the bytes in flight
    /// before this ack filled the window (within a packet).
    pub fn on_ack(&mut self, acked: usize, window_was_full: bool) {
        if acked == 0 || !window_was_full {
            return;
        }
        let acked = acked as f64;
        let delay = self.queuing_delay().map(f64::from).unwrap_or(0.0);
        let off_target = (self.target_us - delay).clamp(-self.target_us, self.target_us);
        let delay_factor = off_target / self.target_us;
        let window_factor = (acked / self.window.max(acked)).min(1.0);
        let mut grow = self.gain * delay_factor * window_factor;
        if self.slow_start {
            if delay < self.target_us / 2.0 {
                grow = grow.max(acked);
            } else {
                self.slow_start = false;
            }
        }
        self.window = (self.window + grow).clamp(self.min_window, self.max_window);
    }

    /// A packet was lost (duplicate acks or selective acks said so): halve.
    pub fn on_loss(&mut self) {
        self.slow_start = false;
        self.window = (self.window / 2.0).clamp(self.min_window, self.max_window);
    }

    /// The retransmission timer fired: one packet.
    pub fn on_timeout(&mut self) {
        self.slow_start = false;
        self.window = self.min_window;
    }

    /// Lowers the ceiling (the peer's advertised window is applied by the caller; this is for
    /// a smaller packet size after a change of path).
    pub fn set_max(&mut self, max: usize) {
        self.max_window = (max as f64).max(self.min_window);
        self.window = self.window.min(self.max_window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledbat() -> Ledbat {
        Ledbat::new(3000, 1000, 1 << 20, Duration::from_millis(100), 3000)
    }

    #[test]
    fn grows_under_target_and_shrinks_over_it() {
        let mut l = ledbat();
        let t = Time::from_secs(1);
        l.sample(50_000, t); // base 50 ms: no queuing yet
        l.on_ack(1000, true);
        assert_eq!(l.window(), 4000, "slow start grows by the bytes acked");
        l.on_loss();
        assert_eq!(l.window(), 2000);
        // 20 ms of queuing: below target, grows by gain * 0.8 * acked / window.
        l.sample(70_000, t);
        l.sample(70_000, t);
        l.sample(70_000, t);
        assert_eq!(l.queuing_delay(), Some(20_000));
        l.on_ack(1000, true);
        assert_eq!(l.window(), 2000 + 1200);
        // 200 ms of queuing: the factor is clamped at -1.
        for _ in 0..3 {
            l.sample(250_000, t);
        }
        let before = l.window();
        l.on_ack(1000, true);
        assert!(l.window() < before, "{} >= {before}", l.window());
        // Not growing when the window was not used.
        let w = l.window();
        for _ in 0..3 {
            l.sample(50_000, t);
        }
        l.on_ack(1000, false);
        assert_eq!(l.window(), w);
        l.on_timeout();
        assert_eq!(l.window(), 1000);
    }

    #[test]
    fn base_delay_forgets_after_two_minutes() {
        let mut l = ledbat();
        l.sample(10_000, Time::from_secs(0));
        l.sample(90_000, Time::from_secs(61)); // new minute
        assert_eq!(l.queuing_delay(), Some(0), "min of the last three is 10 ms");
        for s in [62, 63, 64] {
            l.sample(90_000, Time::from_secs(s));
        }
        assert_eq!(l.queuing_delay(), Some(80_000));
        l.sample(90_000, Time::from_secs(125)); // the 10 ms minute is gone
        assert_eq!(l.queuing_delay(), Some(0));
        // The clock wraps: 2^32 - 5 then 5 is 10 us more, not 4 billion less.
        let mut l = ledbat();
        l.sample(u32::MAX - 4, Time::ZERO);
        for _ in 0..3 {
            l.sample(5, Time::ZERO);
        }
        assert_eq!(l.queuing_delay(), Some(10));
    }
}
