//! Rate limits: a token bucket per direction, per torrent and for the whole session, driven
//! only by the `now` the caller passes in.
//!
//! # Why a token bucket
//!
//! A seedbox user sets "upload at most 4 MiB/s" and expects that figure over any few seconds,
//! without the link going idle for long stretches in between. A token bucket gives exactly
//! that: tokens (bytes) accrue at the rate up to a small burst, and a block may go out when
//! the bucket holds enough for it. libtorrent and Transmission limit the same way.
//!
//! The burst is a tenth of a second of the rate, but at least [`MIN_BURST`] (two 16 KiB
//! blocks), so that a low limit still lets a whole block through and the core does not wake
//! for every few hundred bytes. A take larger than the burst (a block longer than the whole
//! bucket) is allowed once the bucket is full, and leaves it in debt, so that it is paid for
//! before anything else goes: the long-run rate holds whatever the block size.
//!
//! Tokens are counted in millionths of a byte, so that refilling at an odd rate over an odd
//! number of microseconds loses nothing to rounding, and [`TokenBucket::ready_at`] can name
//! the exact microsecond at which a block becomes affordable. Everything is integer
//! arithmetic, so the simulator's results stay bit-for-bit reproducible.

use std::time::Duration;

use super::time::Time;
use crate::limits::BLOCK_LEN;

/// Smallest burst: two standard blocks, so that a limit below 320 KiB/s still lets one
/// block follow another without a wake-up in between.
pub const MIN_BURST: u64 = 2 * BLOCK_LEN as u64;

/// Tokens are counted in millionths of a byte (one byte per second accrues one per
/// microsecond).
const SCALE: i128 = 1_000_000;

/// A token bucket of `rate` bytes per second; `None` (or a rate of 0, as in libtorrent) is
/// unlimited.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Option<u64>,
    /// Most whole bytes the bucket holds.
    burst: u64,
    /// Tokens in millionths of a byte; negative after a take larger than what was there.
    level: i128,
    /// When `level` was last brought up to date.
    last: Time,
}

impl Default for TokenBucket {
    fn default() -> TokenBucket {
        TokenBucket::unlimited()
    }
}

impl TokenBucket {
    /// A bucket of `rate` bytes per second, full at `now`.
    pub fn new(rate: Option<u64>, now: Time) -> TokenBucket {
        let rate = rate.filter(|&r| r > 0);
        let burst = rate.map_or(0, burst_for);
        TokenBucket {
            rate,
            burst,
            level: i128::from(burst) * SCALE,
            last: now,
        }
    }

    /// A bucket that never limits.
    pub fn unlimited() -> TokenBucket {
        TokenBucket::new(None, Time::ZERO)
    }

    /// The rate in bytes per second; `None` when unlimited.
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Whether the bucket limits anything.
    pub fn is_limited(&self) -> bool {
        self.rate.is_some()
    }

    /// Most bytes the bucket holds at once (0 when unlimited).
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Changes the rate at `now`. Tokens accrued so far are kept, up to the new burst; a bucket
    /// that was unlimited starts full.
    pub fn set_rate(&mut self, rate: Option<u64>, now: Time) {
        let rate = rate.filter(|&r| r > 0);
        if rate == self.rate {
            return;
        }
        if !self.is_limited() {
            *self = TokenBucket::new(rate, now);
            return;
        }
        self.refill(now);
        self.rate = rate;
        self.burst = rate.map_or(0, burst_for);
        self.level = self.level.min(i128::from(self.burst) * SCALE);
    }

    /// Adds the tokens accrued since the last call. A `now` earlier than one seen before
    /// changes nothing.
    pub fn refill(&mut self, now: Time) {
        let Some(rate) = self.rate else {
            return;
        };
        if now <= self.last {
            return;
        }
        let elapsed = i128::from(now.as_micros() - self.last.as_micros());
        let full = i128::from(self.burst) * SCALE;
        // rate < 2^64 and elapsed < 2^64: the product fits in an i128 only below 2^127, so
        // check it; an overflow means "long enough to fill any bucket".
        self.level = match i128::from(rate).checked_mul(elapsed) {
            Some(accrued) => self.level.saturating_add(accrued).min(full),
            None => full,
        };
        self.last = now;
    }

    /// Whole bytes available now (as of the last refill); `u64::MAX` when unlimited.
    pub fn available(&self) -> u64 {
        if !self.is_limited() {
            return u64::MAX;
        }
        u64::try_from((self.level / SCALE).max(0)).unwrap_or(u64::MAX)
    }

    /// Whether `n` bytes may be taken now: the bucket holds `n`, or is full when `n` is more
    /// than it can ever hold.
    pub fn can_take(&self, n: u64) -> bool {
        !self.is_limited() || self.level >= i128::from(n.min(self.burst)) * SCALE
    }

    /// Takes `n` bytes' worth of tokens (check [`TokenBucket::can_take`] first); the bucket
    /// may go into debt, which later refills pay off before anything else is allowed.
    pub fn take(&mut self, n: u64) {
        if self.is_limited() {
            self.level = self.level.saturating_sub(i128::from(n) * SCALE);
        }
    }

    /// The earliest time at which [`TokenBucket::can_take`]`(n)` holds: `None` when unlimited,
    /// the time of the last refill when it holds already. Rounded up to the microsecond, so a
    /// refill at the returned time always suffices.
    pub fn ready_at(&self, n: u64) -> Option<Time> {
        let rate = self.rate?;
        let need = i128::from(n.min(self.burst)) * SCALE;
        let deficit = need - self.level;
        if deficit <= 0 {
            return Some(self.last);
        }
        let rate = i128::from(rate);
        let micros = (deficit + rate - 1) / rate;
        let micros = u64::try_from(micros).unwrap_or(u64::MAX);
        Some(self.last + Duration::from_micros(micros))
    }
}

/// A tenth of a second of `rate`, at least [`MIN_BURST`].
fn burst_for(rate: u64) -> u64 {
    (rate / 10).max(MIN_BURST)
}

/// One bucket per direction.
#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    /// Bytes of blocks we serve (disk reads issued for peers).
    pub up: TokenBucket,
    /// Bytes of blocks we request.
    pub down: TokenBucket,
}

impl RateLimits {
    /// Buckets for the given upload and download rates, full at `now`.
    pub fn new(up: Option<u64>, down: Option<u64>, now: Time) -> RateLimits {
        RateLimits {
            up: TokenBucket::new(up, now),
            down: TokenBucket::new(down, now),
        }
    }

    /// Changes both rates at `now`.
    pub fn set(&mut self, up: Option<u64>, down: Option<u64>, now: Time) {
        self.up.set_rate(up, now);
        self.down.set_rate(down, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Time {
        Time::from_millis(millis)
    }

    #[test]
    fn unlimited_never_limits() {
        let mut b = TokenBucket::unlimited();
        assert!(!b.is_limited());
        assert!(b.can_take(u64::MAX));
        b.take(u64::MAX);
        assert!(b.can_take(u64::MAX));
        assert_eq!(b.available(), u64::MAX);
        assert_eq!(b.ready_at(1 << 20), None);
        // A rate of zero means unlimited, as in libtorrent.
        assert!(!TokenBucket::new(Some(0), Time::ZERO).is_limited());
    }

    #[test]
    fn burst_is_a_tenth_of_a_second_but_at_least_two_blocks() {
        assert_eq!(
            TokenBucket::new(Some(10 << 20), Time::ZERO).burst(),
            1 << 20
        );
        assert_eq!(TokenBucket::new(Some(1000), Time::ZERO).burst(), MIN_BURST);
        assert_eq!(MIN_BURST, 32 * 1024);
    }

    #[test]
    fn starts_full_and_refills_at_its_rate() {
        let mut b = TokenBucket::new(Some(1_000_000), Time::ZERO);
        assert_eq!(b.available(), 100_000);
        b.take(100_000);
        assert_eq!(b.available(), 0);
        assert!(!b.can_take(1));
        b.refill(ms(10));
        assert_eq!(b.available(), 10_000);
        // Never above the burst, however long it waits.
        b.refill(Time::from_secs(3600));
        assert_eq!(b.available(), 100_000);
    }

    #[test]
    fn odd_rates_lose_nothing_to_rounding() {
        // 3 bytes per second, refilled every microsecond for a second: exactly 3 bytes.
        let mut b = TokenBucket::new(Some(3), Time::ZERO);
        b.take(b.available());
        for us in 1..=1_000_000 {
            b.refill(Time::from_micros(us));
        }
        assert_eq!(b.available(), 3);
    }

    #[test]
    fn ready_at_is_exact() {
        let mut b = TokenBucket::new(Some(16_384 * 10), Time::ZERO);
        b.take(b.available());
        let at = b.ready_at(16_384).unwrap();
        assert_eq!(at, ms(100));
        b.refill(Time::from_micros(at.as_micros() - 1));
        assert!(!b.can_take(16_384));
        b.refill(at);
        assert!(b.can_take(16_384));
        // Already affordable: ready as of the last refill.
        assert_eq!(b.ready_at(1), Some(at));
    }

    #[test]
    fn ready_at_rounds_up() {
        // 7 bytes per second: 1 byte takes 142,857.14 us, so 142,858 us.
        let mut b = TokenBucket::new(Some(7), Time::ZERO);
        b.take(b.available());
        let at = b.ready_at(1).unwrap();
        assert_eq!(at, Time::from_micros(142_858));
        b.refill(at);
        assert!(b.can_take(1));
    }

    #[test]
    fn oversized_take_waits_for_a_full_bucket_then_goes_into_debt() {
        let mut b = TokenBucket::new(Some(100_000), Time::ZERO);
        assert_eq!(b.burst(), MIN_BURST);
        // A 128 KiB block is more than the bucket holds: allowed when full.
        assert!(b.can_take(128 << 10));
        b.take(128 << 10);
        assert!(!b.can_take(1));
        // The debt (96 KiB) and then one byte must accrue first.
        let at = b.ready_at(1).unwrap();
        assert_eq!(at, Time::from_micros((96 * 1024 + 1) * 10));
    }

    #[test]
    fn long_run_rate_holds() {
        // Taking 16 KiB blocks whenever allowed, at 1 ms steps for 10 s, moves the rate's
        // worth of bytes plus at most the initial burst.
        let rate = 500_000;
        let mut b = TokenBucket::new(Some(rate), Time::ZERO);
        let mut moved = 0u64;
        for step in 0..=10_000 {
            b.refill(ms(step));
            while b.can_take(16_384) {
                b.take(16_384);
                moved += 16_384;
            }
        }
        let expected = rate * 10;
        assert!(moved <= expected + b.burst(), "{moved}");
        assert!(moved + 16_384 >= expected, "{moved}");
    }

    #[test]
    fn changing_the_rate_keeps_tokens_up_to_the_new_burst() {
        let mut b = TokenBucket::new(Some(10 << 20), Time::ZERO);
        assert_eq!(b.available(), 1 << 20);
        b.set_rate(Some(1 << 20), Time::ZERO);
        assert_eq!(b.available(), MIN_BURST.max((1 << 20) / 10));
        b.set_rate(None, ms(5));
        assert!(b.can_take(u64::MAX));
        b.set_rate(Some(1000), ms(10));
        assert_eq!(b.available(), MIN_BURST);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut b = TokenBucket::new(Some(1000), Time::from_secs(10));
        b.take(MIN_BURST);
        b.refill(Time::from_secs(5));
        assert_eq!(b.available(), 0);
        b.refill(Time::from_secs(11));
        assert_eq!(b.available(), 1000);
    }

    #[test]
    fn huge_rates_and_gaps_do_not_overflow() {
        let mut b = TokenBucket::new(Some(u64::MAX), Time::ZERO);
        b.take(u64::MAX);
        b.refill(Time::from_micros(u64::MAX));
        assert_eq!(b.available(), u64::MAX / 10);
        assert!(b.ready_at(1).is_some());
    }
}
