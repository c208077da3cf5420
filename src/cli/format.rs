//! Small formatting helpers shared by the subcommands.

/// `1536` -> `1.50 KiB`; exact byte counts are printed beside it where they matter.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Parses a size such as `262144`, `256K`, `256KiB`, `1M`, `4MiB` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 262144, 256K or 1M)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use K or M)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a rate limit in bytes per second: `1048576`, `500K`, `8M`, `1.5M`, `2G`, with an
/// optional `B`/`iB` and `/s` (`500KiB/s`). K, M and G are powers of 1024, as in `parse_size`.
/// Zero is refused: "no limit" is the flag left out.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("/S"))
        .unwrap_or(t)
        .trim_end();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad =
        || format!("`{text}` is not a rate (try 1048576, 500K, 8M or 1.5M: bytes per second)");
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
        return Err(bad());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use K, M or G)")),
    };
    // (whole + frac / 10^digits) x 2^shift, rounded to the nearest byte, in exact integers.
    let scale = 10u128.pow(frac.len() as u32);
    let numerator = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(frac_value))
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("`{text}` is too large"))?;
    let bytes = (numerator + scale / 2) / scale;
    let bytes = u64::try_from(bytes).map_err(|_| format!("`{text}` is too large"))?;
    if bytes == 0 {
        return Err(format!(
            "`{text}` is no rate at all; leave the option out for no limit"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod rate_tests {
    use super::parse_rate;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1048576"), Ok(1_048_576));
        assert_eq!(parse_rate("500K"), Ok(500 * 1024));
        assert_eq!(parse_rate("8M"), Ok(8 << 20));
        assert_eq!(parse_rate("1.5M"), Ok(3 << 19));
        assert_eq!(parse_rate("0.5k"), Ok(512));
        assert_eq!(parse_rate(".25M"), Ok(1 << 18));
        assert_eq!(parse_rate("2G"), Ok(2 << 30));
        assert_eq!(parse_rate("500KiB/s"), Ok(500 * 1024));
        assert_eq!(parse_rate("4 MB/s"), Ok(4 << 20));
        assert_eq!(parse_rate("100B"), Ok(100));
        assert_eq!(parse_rate("1.0000001K"), Ok(1024));
    }

    #[test]
    fn bad_rates_say_why() {
        for bad in ["", "M", "fast", "1.2.3M", "-1M", "1e6", "8X", "1.5 MBit"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(parse_rate("0")
            .unwrap_err()
            .contains("leave the option out"));
        assert!(parse_rate("0.0001")
            .unwrap_err()
            .contains("leave the option out"));
        assert!(parse_rate("99999999999999999999G")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_rate("8X").unwrap_err().contains("unknown unit"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(1 << 30), "1.00 GiB");
        assert_eq!(parse_size("262144"), Ok(262_144));
        assert_eq!(parse_size("256K"), Ok(262_144));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert!(parse_size("4X").is_err());
        assert!(parse_size("M").is_err());
    }
}

/// Unix seconds as a UTC date and time, `2026-11-24 03:36:00 UTC`. Civil-from-days after
/// Howard Hinnant's algorithm, so no date crate is needed for one line of output.
pub fn unix_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn dates() {
        assert_eq!(super::unix_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::unix_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::unix_time(1_795_492_452), "2026-11-24 03:54:12 UTC");
        assert_eq!(super::unix_time(-1), "1969-12-31 23:59:59 UTC");
    }
}
