//! Transfer rates over a sliding window, driven by the `now` the caller passes in.
//!
//! # Why buckets and not an exponential average
//!
//! A [`RateMeter`] keeps the bytes of the last [`BUCKETS`] slices of its window, one counter a
//! slice (1 s each for the default 10 s window). The choker asks "how much did this peer give
//! us over the last round", and a bucketed window answers exactly that: bytes older than the
//! window are gone, not merely faded, so a peer that stops sending drops to rate 0 within one
//! window, and a test can state the expected rate to the byte. It is integer arithmetic only,
//! so the simulator's results do not depend on floating-point details. An EWMA would need
//! `exp(-dt/tau)` for every irregular gap between blocks and never quite reaches zero.
//!
//! The cost stays flat: [`RateMeter::add`] touches one counter, plus clearing the slices that
//! expired since the last call, which is at most [`BUCKETS`] however long the peer was idle (a
//! gap of an hour clears ten counters, it does not step through 3,600 seconds). The meter is
//! 120 bytes with no heap allocation, so ten thousand peers with two meters each cost about
//! 2.3 MiB.

use std::time::Duration;

use super::time::Time;

/// How many slices a window is cut into. Ten gives the rate to within a tenth of the window at
/// its old edge (the oldest slice leaves whole) while keeping the meter small; finer slices
/// would cost memory per peer for precision the choker does not use.
pub const BUCKETS: usize = 10;

/// The default window: 10 s, BEP 3's rechoke interval, so the rate the choker ranks by covers
/// the round that just ended. The original client averaged over 20 s; libtorrent's
/// `downloaded_in_last_round` is exactly one round, as here.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// `RateMeter::started_us` of a meter that has seen no byte yet (no real time is this late:
/// the clock counts microseconds since the driver's epoch).
const NOT_STARTED: u64 = u64::MAX;

/// Bytes moved over the last `window`, as bytes per second.
///
/// The window is split into [`BUCKETS`] slices aligned to multiples of the slice width since
/// the driver's epoch. The rate divides the bytes in the current slice and the `BUCKETS - 1`
/// before it by the time they span (the current slice only up to `now`), so it does not dip
/// each time a new slice opens. A meter younger than its window divides by its age instead
/// (but at least one slice), so a peer that connected two seconds ago is not reported at a
/// fifth of its real speed. [`RateMeter::default`] is a meter over [`DEFAULT_WINDOW`] whose
/// age counts from its first byte, for callers that build it before they know the time.
#[derive(Debug, Clone)]
pub struct RateMeter {
    /// Bytes per slice; slice number `s` (counted from the epoch) lives at `s % BUCKETS`.
    buckets: [u64; BUCKETS],
    /// The number of the newest slice written or cleared.
    head: u64,
    /// Width of one slice, in microseconds; never zero.
    slice_us: u64,
    /// When the meter started measuring, so a young meter divides by its age; `None` until
    /// the first byte for a meter made by `default()`.
    /// (In microseconds since the epoch, [`NOT_STARTED`] for `None`: 8 bytes instead of
    /// `Option`'s 16, which keeps the meter at 120 bytes with the running sum below.)
    started_us: u64,
    /// Every byte ever added, saturating at `u64::MAX`.
    total: u64,
    /// The sum of `buckets` (saturating), so that a rate read in the newest slice, the common
    /// case (a seeder reads its peer's rate for every block it queues), is one division.
    sum: u64,
}

impl Default for RateMeter {
    fn default() -> RateMeter {
        let mut meter = RateMeter::with_window(Time::ZERO, DEFAULT_WINDOW);
        meter.started_us = NOT_STARTED;
        meter
    }
}

impl RateMeter {
    /// A meter over [`DEFAULT_WINDOW`], measuring from `now` (the connection's start).
    pub fn new(now: Time) -> RateMeter {
        RateMeter::with_window(now, DEFAULT_WINDOW)
    }

    /// A meter over `window`, measuring from `now`. The window is rounded up to a whole number
    /// of microseconds per slice; a window under [`BUCKETS`] microseconds acts as one of
    /// [`BUCKETS`] microseconds, since a shorter one measures nothing useful.
    pub fn with_window(now: Time, window: Duration) -> RateMeter {
        let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        let slice_us = window_us.div_ceil(BUCKETS as u64).max(1);
        RateMeter {
            buckets: [0; BUCKETS],
            head: now.as_micros() / slice_us,
            slice_us,
            started_us: now.as_micros(),
            total: 0,
            sum: 0,
        }
    }

    /// When the meter started, in microseconds since the epoch (0 if it has not).
    fn started(&self) -> u64 {
        if self.started_us == NOT_STARTED {
            0
        } else {
            self.started_us
        }
    }

    /// The window the rate covers, after rounding to whole slices.
    pub fn window(&self) -> Duration {
        Duration::from_micros(self.slice_us.saturating_mul(BUCKETS as u64))
    }

    /// Records `bytes` moved at `now`. A `now` earlier than a previous call (which a driver
    /// should never pass) is counted in the newest slice instead of panicking or rewriting
    /// history.
    pub fn add(&mut self, now: Time, bytes: u64) {
        if self.started_us == NOT_STARTED {
            self.started_us = now.as_micros();
        }
        self.advance(now);
        let slot = (self.head % BUCKETS as u64) as usize;
        let before = self.buckets[slot];
        self.buckets[slot] = before.saturating_add(bytes);
        self.sum = self.sum.saturating_add(self.buckets[slot] - before);
        self.total = self.total.saturating_add(bytes);
    }

    /// Bytes per second over the window ending at `now`. It takes `&self`, so reading a rate
    /// never changes what a later reading returns.
    pub fn rate(&self, now: Time) -> u64 {
        let now_us = now.as_micros();
        let current = (now_us / self.slice_us).max(self.head);
        // Slices older than `oldest` have left the window; those between `oldest` and `head`
        // are still held in the ring. Nothing newer than `head` has been written.
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        let bytes = if current == self.head {
            // Every slice the ring holds is in the window.
            self.sum
        } else {
            let mut bytes: u64 = 0;
            for age in 0..BUCKETS as u64 {
                let Some(slice) = self.head.checked_sub(age) else {
                    break;
                };
                if slice < oldest {
                    break;
                }
                bytes = bytes.saturating_add(self.buckets[(slice % BUCKETS as u64) as usize]);
            }
            bytes
        };
        if bytes == 0 {
            return 0;
        }
        // The span runs from the start of the oldest slice in the window (or the meter's
        // start, if later) to `now`, and is at least one slice so that the first block of a
        // connection does not read as an absurd burst.
        let window_start = oldest.saturating_mul(self.slice_us);
        let started = self.started();
        let span_start = window_start.max(started);
        let span_us = now_us.saturating_sub(span_start).max(self.slice_us);
        match bytes.checked_mul(1_000_000) {
            Some(scaled) => scaled / span_us,
            None => {
                let rate = u128::from(bytes) * 1_000_000 / u128::from(span_us);
                u64::try_from(rate).unwrap_or(u64::MAX)
            }
        }
    }

    /// Every byte ever recorded, whatever its age (saturating at `u64::MAX`).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Moves the newest slice up to `now`, clearing the slices that expired on the way. The
    /// loop runs at most [`BUCKETS`] times: after a longer gap every slice is stale anyway.
    fn advance(&mut self, now: Time) {
        let current = now.as_micros() / self.slice_us;
        if current <= self.head {
            return;
        }
        let gap = current - self.head;
        if gap >= BUCKETS as u64 {
            self.buckets = [0; BUCKETS];
            self.sum = 0;
        } else {
            for slice in self.head + 1..=current {
                let bucket = &mut self.buckets[(slice % BUCKETS as u64) as usize];
                self.sum = self.sum.saturating_sub(*bucket);
                *bucket = 0;
            }
        }
        self.head = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rate as the ring's slices in the window add up, slice by slice: what `rate` must
    /// equal whether it reads the running sum or walks the ring.
    fn rate_by_walking(meter: &RateMeter, now: Time) -> u64 {
        let now_us = now.as_micros();
        let current = (now_us / meter.slice_us).max(meter.head);
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        let bytes: u64 = (oldest..=meter.head)
            .map(|slice| meter.buckets[(slice % BUCKETS as u64) as usize])
            .sum();
        if bytes == 0 {
            return 0;
        }
        let span_start = (oldest * meter.slice_us).max(meter.started());
        let span_us = now_us.saturating_sub(span_start).max(meter.slice_us);
        (u128::from(bytes) * 1_000_000 / u128::from(span_us)) as u64
    }

    #[test]
    fn running_sum_matches_the_slices_through_gaps_and_bursts() {
        let mut meter = RateMeter::new(Time::ZERO);
        let mut t = 0u64;
        // A fixed pseudo-random walk: steps from 1 ms to 25 s (past the whole window), sizes
        // from 0 to 1 MiB, each followed by reads at the same instant and a little later.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t += match x % 100 {
                0 => 25_000,
                1..=4 => 3_000 + x % 4_000,
                _ => 1 + x % 300,
            };
            meter.add(ms(t), (x >> 20) % (1 << 20));
            assert_eq!(meter.sum, meter.buckets.iter().sum::<u64>());
            for later in [0, 400, 1_700, 12_000] {
                assert_eq!(
                    meter.rate(ms(t + later)),
                    rate_by_walking(&meter, ms(t + later))
                );
            }
        }
    }

    fn ms(millis: u64) -> Time {
        Time::from_millis(millis)
    }

    #[test]
    fn steady_transfer_reads_its_rate() {
        let mut meter = RateMeter::new(Time::ZERO);
        // 16 KiB every 100 ms is 163,840 B/s, for 30 s.
        for step in 1..=300 {
            meter.add(ms(step * 100), 16 * 1024);
            if step >= 20 {
                let rate = meter.rate(ms(step * 100));
                assert!(
                    (155_000..=172_000).contains(&rate),
                    "step {step}: rate {rate}"
                );
            }
        }
        assert_eq!(meter.total(), 300 * 16 * 1024);
    }

    #[test]
    fn rate_is_exact_over_whole_slices() {
        let mut meter = RateMeter::new(Time::ZERO);
        for second in 0..10 {
            meter.add(Time::from_secs(second), 1000);
        }
        // At the very end of the tenth slice, ten slices of 1,000 bytes span exactly 10 s.
        assert_eq!(meter.rate(Time::from_micros(10_000_000 - 1)), 1000);
    }

    #[test]
    fn idle_peer_drops_to_zero_and_recovers() {
        let mut meter = RateMeter::new(Time::ZERO);
        for step in 0..100 {
            meter.add(ms(step * 100), 10_000);
        }
        assert!(meter.rate(Time::from_secs(10)) > 90_000);
        // Half a window later the old bytes are partly gone; a full window later, all gone.
        let half = meter.rate(Time::from_secs(15));
        assert!((40_000..=60_000).contains(&half), "{half}");
        assert_eq!(meter.rate(Time::from_secs(21)), 0);
        assert_eq!(meter.rate(Time::from_secs(70)), 0);
        // Sending again after a minute's silence: only the new bytes count.
        meter.add(Time::from_secs(70), 50_000);
        // The window still spans the nine silent seconds before, so 50 kB over 9 s.
        assert_eq!(meter.rate(Time::from_secs(70)), 50_000 / 9);
        assert_eq!(meter.rate(Time::from_micros(80_000_000 - 1)), 5_000);
        assert_eq!(meter.total(), 100 * 10_000 + 50_000);
    }

    #[test]
    fn enormous_gap_is_cheap_and_correct() {
        let mut meter = RateMeter::new(Time::ZERO);
        meter.add(Time::ZERO, 1_000_000);
        // 2^40 s is 35,000 years of silence; the catch-up clears ten slices, not 10^12.
        let far = Time::from_secs(1 << 40);
        assert_eq!(meter.rate(far), 0);
        meter.add(far, 9_000);
        // The window at `far` spans the nine silent slices before it.
        assert_eq!(meter.rate(far), 1_000);
        assert_eq!(meter.total(), 1_009_000);
    }

    #[test]
    fn young_meter_divides_by_its_age() {
        let start = Time::from_secs(1000);
        let mut meter = RateMeter::new(start);
        for step in 1..=20 {
            meter.add(start + Duration::from_millis(step * 100), 100_000);
        }
        // 2 MB over the 2 s since the connection began, not over the 10 s window.
        let rate = meter.rate(start + Duration::from_secs(2));
        assert_eq!(rate, 1_000_000);
    }

    #[test]
    fn default_meter_counts_its_age_from_the_first_byte() {
        let mut meter = RateMeter::default();
        assert_eq!(meter.window(), DEFAULT_WINDOW);
        assert_eq!(meter.rate(Time::from_secs(500)), 0);
        let start = Time::from_secs(1000);
        for step in 0..20 {
            meter.add(start + Duration::from_millis(step * 100), 100_000);
        }
        assert_eq!(meter.rate(start + Duration::from_secs(2)), 1_000_000);
        assert_eq!(meter.rate(start + Duration::from_secs(30)), 0);
    }

    #[test]
    fn first_block_is_not_an_absurd_burst() {
        let mut meter = RateMeter::new(Time::ZERO);
        meter.add(Time::from_micros(10), 16 * 1024);
        // Divided by one whole slice (1 s), not by the 10 us since the start.
        assert_eq!(meter.rate(Time::from_micros(10)), 16 * 1024);
    }

    #[test]
    fn custom_window() {
        let mut meter = RateMeter::with_window(Time::ZERO, Duration::from_secs(2));
        assert_eq!(meter.window(), Duration::from_secs(2));
        for step in 0..40 {
            meter.add(ms(step * 100), 1000);
        }
        assert_eq!(meter.rate(Time::from_micros(4_000_000 - 1)), 10_000);
        assert_eq!(meter.rate(ms(6100)), 0);
        let tiny = RateMeter::with_window(Time::ZERO, Duration::ZERO);
        assert_eq!(tiny.window(), Duration::from_micros(BUCKETS as u64));
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut meter = RateMeter::new(Time::from_secs(100));
        meter.add(Time::from_secs(105), 1000);
        meter.add(Time::from_secs(101), 1000);
        assert_eq!(meter.total(), 2000);
        assert!(meter.rate(Time::from_secs(103)) > 0);
        assert_eq!(meter.rate(Time::from_secs(105)), 2000 / 5);
    }

    #[test]
    fn totals_and_rates_saturate() {
        let mut meter = RateMeter::new(Time::ZERO);
        meter.add(Time::ZERO, u64::MAX);
        meter.add(Time::ZERO, 1);
        assert_eq!(meter.total(), u64::MAX);
        assert_eq!(meter.rate(Time::ZERO), u64::MAX);
    }

    #[test]
    fn meter_is_small() {
        assert!(std::mem::size_of::<RateMeter>() <= 120);
    }
}
