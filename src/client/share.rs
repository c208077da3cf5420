//! One session-wide rate limit over several event loops. Each loop runs its own session, so
//! the limit is given out in shares, and the shares follow demand: every second the control
//! thread looks at what each loop used and moves the share a loop leaves unused to the loops
//! that use all of theirs (max-min fairness). With torrents spread unevenly over the loops, a
//! fixed even split would cap a busy loop at its share while an idle one wastes the rest.

/// The next shares of `limit` (bytes per second) between loops that used `used[i]` bytes per
/// second of their previous shares `shares[i]`. A loop using less than 80% of its share is
/// satisfied: it keeps a quarter more than it used (at least `floor`), so it can grow back.
/// What remains goes in equal parts to the loops that used their whole share, or to all loops
/// when none did. The result sums to `limit` (within rounding down).
pub fn rebalance(limit: u64, used: &[u64], shares: &[u64]) -> Vec<u64> {
    let n = used.len() as u64;
    if n == 0 {
        return Vec::new();
    }
    // The least a loop keeps, so a torrent starting there is not starved for a second:
    // a twentieth of an even split, and never less than four blocks a second.
    let floor = (limit / n / 20).max(64 * 1024).min(limit / n);
    let mut next = vec![0u64; used.len()];
    let mut hungry = Vec::new();
    let mut given = 0u64;
    for (i, (&u, &s)) in used.iter().zip(shares).enumerate() {
        if (u as f64) < 0.8 * s as f64 {
            next[i] = (u + u / 4).max(floor);
            given += next[i];
        } else {
            hungry.push(i);
        }
    }
    if given > limit {
        // Only possible when floors alone exceed the limit: split evenly instead.
        return vec![limit / n; used.len()];
    }
    let rest = limit - given;
    let takers: Vec<usize> = if hungry.is_empty() {
        (0..used.len()).collect()
    } else {
        hungry
    };
    let each = rest / takers.len() as u64;
    for i in takers {
        next[i] += each;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    #[test]
    fn a_busy_loop_takes_what_an_idle_one_leaves() {
        // 10 MiB/s over two loops, evenly split at first; loop 0 uses its 5, loop 1 nothing.
        let mut shares = vec![5 * M, 5 * M];
        for _ in 0..3 {
            shares = rebalance(10 * M, &[shares[0], 0], &shares);
        }
        assert!(shares[0] >= 9 * M, "{shares:?}");
        assert!(
            shares[1] >= 64 * 1024,
            "the idle loop keeps a floor: {shares:?}"
        );
        assert!(shares.iter().sum::<u64>() <= 10 * M);
        // Loop 1 gets busy: it uses its floor entirely, and its share grows back.
        for _ in 0..3 {
            let used = [shares[0], shares[1]];
            shares = rebalance(10 * M, &used, &shares);
        }
        assert!(shares[0] >= 4 * M && shares[1] >= 4 * M, "{shares:?}");
    }

    #[test]
    fn shares_sum_to_the_limit() {
        for used in [[0, 0, 0], [3 * M, 0, 1], [9 * M, 9 * M, 9 * M]] {
            let shares = rebalance(9 * M, &used, &[3 * M; 3]);
            let sum: u64 = shares.iter().sum();
            assert!(sum <= 9 * M && sum + 3 >= 9 * M, "{used:?} -> {shares:?}");
        }
        assert_eq!(rebalance(100, &[0, 0], &[50, 50]), vec![50, 50]);
        assert!(rebalance(5 * M, &[], &[]).is_empty());
    }
}
