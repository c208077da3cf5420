//! The report every load generator writes (`tracker-load` today, `swarm-load` next), and
//! `report merge`, which adds the reports of several shards into the report one machine
//! would have written had it run them all.
//!
//! # Format (`version` 1)
//!
//! One JSON object:
//!
//! ```text
//! {
//!   "tool": "tracker-load",          which generator wrote it; merge refuses to mix tools
//!   "version": 1,                    this format's version; merge refuses to mix versions
//!   "shard": [0, 4] | null,          --shard i/n of the run, null for a whole or merged run
//!   "started_unix": 1795492452,      when the measured phase began (seconds)
//!   "duration_secs": 10.0,           how long the measured phase lasted (rates divide by it)
//!   "counters": { "announce.ok": 123, ... },          plain sums
//!   "histograms": { "latency_us.announce": H, ... },  see below
//!   "params": { ... }                the run's settings and anything else, free-form
//! }
//! ```
//!
//! A histogram `H` is `{"sigfig": 3, "low": 1, "high": 60000000, "counts": [[v, n], ...]}`:
//! an HDR histogram's bucket structure (significant figures, lowest and highest trackable
//! value) and, for every non-empty bucket, the highest value equivalent to the bucket and its
//! count. Recording `n` times `v` into an empty histogram of the same structure rebuilds it
//! bucket for bucket, so [`Hist::from_json`] is lossless and merging adds counts exactly: a
//! merged p99 is the p99 of one run that recorded everything. No new dependency and no
//! compression; a few hundred buckets is a few kilobytes.
//!
//! Counter names are `tool`-specific but follow `what.outcome` (`announce.timeout`,
//! `check.peer_duplicate`); counters whose name starts with `max.` are merged by maximum,
//! not sum (a worst lag, a peak). `cpu.user_us`/`cpu.sys_us` are the generator's own CPU
//! time (getrusage), so a saturated generator shows.
//!
//! Merging: same `tool` and `version` or an error naming both; counters summed (`max.*`
//! maximised); histograms added; `started_unix` the earliest; `duration_secs` the longest (the
//! shards run side by side); `shard` null; `params` the first report's, with `merged_from`
//! (the count) and `shards` (each input's `shard`) added.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The current format version.
pub const VERSION: u32 = 1;

/// A latency or size distribution: an HDR histogram with 3 significant figures.
#[derive(Debug, Clone)]
pub struct Hist(pub Histogram<u64>);

impl Hist {
    /// An empty histogram for values in `1..=high` (higher values are clamped to `high`).
    pub fn new(high: u64) -> Hist {
        Hist(Histogram::new_with_bounds(1, high.max(2), 3).expect("valid bounds"))
    }

    /// Records one value, clamped into the trackable range.
    pub fn record(&mut self, v: u64) {
        let v = v.clamp(1, self.0.high());
        self.0.record(v).expect("clamped into range");
    }

    /// Adds `other` (which must have the same bounds; values beyond ours are clamped).
    pub fn add(&mut self, other: &Hist) {
        for it in other.0.iter_recorded() {
            let v = it.value_iterated_to().clamp(1, self.0.high());
            self.0
                .record_n(v, it.count_at_value())
                .expect("clamped into range");
        }
    }

    /// The serialised form described in the module doc.
    pub fn to_json(&self) -> Value {
        let counts: Vec<[u64; 2]> = self
            .0
            .iter_recorded()
            .map(|it| [it.value_iterated_to(), it.count_at_value()])
            .collect();
        serde_json::json!({
            "sigfig": self.0.sigfig(),
            "low": self.0.low(),
            "high": self.0.high(),
            "counts": counts,
        })
    }

    /// Reads the serialised form back.
    pub fn from_json(v: &Value) -> Result<Hist, String> {
        let num = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("histogram field `{k}` missing or not a number"))
        };
        let sigfig = u8::try_from(num("sigfig")?).map_err(|_| "bad sigfig".to_string())?;
        let mut h = Histogram::new_with_bounds(num("low")?.max(1), num("high")?.max(2), sigfig)
            .map_err(|e| format!("bad histogram bounds: {e:?}"))?;
        let counts = v
            .get("counts")
            .and_then(Value::as_array)
            .ok_or("histogram field `counts` missing")?;
        for pair in counts {
            let (Some(value), Some(n)) = (
                pair.get(0).and_then(Value::as_u64),
                pair.get(1).and_then(Value::as_u64),
            ) else {
                return Err("histogram count is not a [value, count] pair".into());
            };
            let value = value.clamp(h.low(), h.high());
            h.record_n(value, n)
                .map_err(|e| format!("histogram value out of range: {e:?}"))?;
        }
        Ok(Hist(h))
    }

    /// Number of recorded values.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The quantiles every text table shows, in order.
pub const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

/// p50/p90/p99/p99.9/max of `h` (microseconds), formatted as milliseconds for one table row:
/// `0.12 0.30 1.20 4.10 9.80`. The one helper every generator's table uses.
pub fn quantile_cells(h: &Hist) -> Vec<String> {
    QUANTILES
        .iter()
        .map(|&(_, q)| {
            if h.is_empty() {
                "-".to_string()
            } else if q >= 1.0 {
                format_ms(h.0.max())
            } else {
                format_ms(h.0.value_at_quantile(q))
            }
        })
        .collect()
}

/// Microseconds as milliseconds with a precision that suits the size.
pub fn format_ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.3}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// One generator run (or a merge of several).
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// `"tracker-load"` or `"swarm-load"`.
    pub tool: String,
    /// [`VERSION`] when written by this build.
    pub version: u32,
    /// `--shard i/n`, or `None`.
    pub shard: Option<(u32, u32)>,
    /// Unix seconds when the measured phase began.
    pub started_unix: u64,
    /// Length of the measured phase.
    pub duration_secs: f64,
    /// Plain counters (see the module doc for `max.*`).
    pub counters: BTreeMap<String, u64>,
    /// Distributions by name.
    pub histograms: BTreeMap<String, Hist>,
    /// Settings and extra results, free-form.
    pub params: Value,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    tool: String,
    version: u32,
    shard: Option<(u32, u32)>,
    started_unix: u64,
    duration_secs: f64,
    counters: BTreeMap<String, u64>,
    histograms: BTreeMap<String, Value>,
    params: Value,
}

impl LoadReport {
    /// An empty report for `tool`.
    pub fn new(tool: &str) -> LoadReport {
        LoadReport {
            tool: tool.to_string(),
            version: VERSION,
            shard: None,
            started_unix: 0,
            duration_secs: 0.0,
            counters: BTreeMap::new(),
            histograms: BTreeMap::new(),
            params: Value::Null,
        }
    }

    /// A counter's value (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Adds `n` to a counter (or maximises a `max.*` one).
    pub fn add_counter(&mut self, name: &str, n: u64) {
        let slot = self.counters.entry(name.to_string()).or_insert(0);
        if name.starts_with("max.") {
            *slot = (*slot).max(n);
        } else {
            *slot += n;
        }
    }

    /// Adds a histogram into the one of that name (creating it).
    pub fn add_histogram(&mut self, name: &str, h: &Hist) {
        match self.histograms.get_mut(name) {
            Some(mine) => mine.add(h),
            None => {
                self.histograms.insert(name.to_string(), h.clone());
            }
        }
    }

    /// The JSON form (module doc).
    pub fn to_json(&self) -> Value {
        let wire = Wire {
            tool: self.tool.clone(),
            version: self.version,
            shard: self.shard,
            started_unix: self.started_unix,
            duration_secs: self.duration_secs,
            counters: self.counters.clone(),
            histograms: self
                .histograms
                .iter()
                .map(|(k, h)| (k.clone(), h.to_json()))
                .collect(),
            params: self.params.clone(),
        };
        serde_json::to_value(wire).expect("serialisable")
    }

    /// Reads a report written by [`LoadReport::to_json`].
    pub fn from_json(v: &Value) -> Result<LoadReport, String> {
        let wire: Wire = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        let mut histograms = BTreeMap::new();
        for (k, h) in &wire.histograms {
            histograms.insert(
                k.clone(),
                Hist::from_json(h).map_err(|e| format!("histogram `{k}`: {e}"))?,
            );
        }
        Ok(LoadReport {
            tool: wire.tool,
            version: wire.version,
            shard: wire.shard,
            started_unix: wire.started_unix,
            duration_secs: wire.duration_secs,
            counters: wire.counters,
            histograms,
            params: wire.params,
        })
    }

    /// Merges shard reports (module doc). Refuses an empty list and mixed tools or versions.
    pub fn merge(reports: &[LoadReport]) -> Result<LoadReport, String> {
        let first = reports.first().ok_or("nothing to merge")?;
        let mut out = LoadReport::new(&first.tool);
        out.version = first.version;
        out.started_unix = u64::MAX;
        for (i, r) in reports.iter().enumerate() {
            if r.tool != first.tool {
                return Err(format!(
                    "report {} was written by `{}`, report 1 by `{}`: cannot merge different tools",
                    i + 1,
                    r.tool,
                    first.tool
                ));
            }
            if r.version != first.version {
                return Err(format!(
                    "report {} has format version {}, report 1 version {}: cannot merge different versions",
                    i + 1,
                    r.version,
                    first.version
                ));
            }
            out.started_unix = out.started_unix.min(r.started_unix);
            out.duration_secs = out.duration_secs.max(r.duration_secs);
            for (k, &v) in &r.counters {
                out.add_counter(k, v);
            }
            for (k, h) in &r.histograms {
                out.add_histogram(k, h);
            }
        }
        let mut params = first.params.clone();
        if !params.is_object() {
            params = serde_json::json!({ "params": params });
        }
        params["merged_from"] = reports.len().into();
        params["shards"] = reports
            .iter()
            .map(|r| serde_json::to_value(r.shard).expect("serialisable"))
            .collect::<Vec<_>>()
            .into();
        out.params = params;
        Ok(out)
    }

    /// A per-second rate of a counter over the measured phase.
    pub fn rate(&self, name: &str) -> f64 {
        if self.duration_secs > 0.0 {
            self.counter(name) as f64 / self.duration_secs
        } else {
            0.0
        }
    }

    /// A generic text rendering: the histograms with [`quantile_cells`], then every counter
    /// with its rate. Generators print their own richer tables; `report merge` uses this.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{} report (format {}), {:.1} s{}\n",
            self.tool,
            self.version,
            self.duration_secs,
            match self.shard {
                Some((i, n)) => format!(", shard {i}/{n}"),
                None => String::new(),
            }
        );
        if !self.histograms.is_empty() {
            s.push_str(&histogram_table(&self.histograms));
        }
        s.push_str(&format!(
            "{:<36} {:>14} {:>12}\n",
            "counter", "total", "per s"
        ));
        for (k, v) in &self.counters {
            s.push_str(&format!("{k:<36} {v:>14} {:>12.1}\n", self.rate(k)));
        }
        s
    }
}

/// A table of histograms: name, count, then the [`QUANTILES`] in milliseconds.
pub fn histogram_table(hists: &BTreeMap<String, Hist>) -> String {
    let mut s = format!("{:<28} {:>10}", "latency (ms)", "count");
    for (label, _) in QUANTILES {
        s.push_str(&format!(" {label:>9}"));
    }
    s.push('\n');
    for (name, h) in hists {
        s.push_str(&format!("{name:<28} {:>10}", h.len()));
        for cell in quantile_cells(h) {
            s.push_str(&format!(" {cell:>9}"));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Rng;

    #[test]
    fn merged_quantiles_equal_one_run_that_recorded_everything() {
        let mut rng = Rng::new(7);
        let mut all = Hist::new(60_000_000);
        let mut parts = Vec::new();
        for shard in 0..3u32 {
            let mut h = Hist::new(60_000_000);
            for _ in 0..5_000 {
                let v = 1 + rng.below(1 << (10 + 3 * shard));
                h.record(v);
                all.record(v);
            }
            let mut r = LoadReport::new("tracker-load");
            r.shard = Some((shard, 3));
            r.duration_secs = 10.0;
            r.add_counter("announce.ok", 5_000);
            r.add_counter("max.lag_us", u64::from(shard) * 10);
            r.add_histogram("latency_us.announce", &h);
            // Through JSON text, as files would be.
            let text = serde_json::to_string(&r.to_json()).unwrap();
            parts.push(LoadReport::from_json(&serde_json::from_str(&text).unwrap()).unwrap());
        }
        let merged = LoadReport::merge(&parts).unwrap();
        let h = &merged.histograms["latency_us.announce"];
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                h.0.value_at_quantile(q),
                all.0.value_at_quantile(q),
                "q {q}"
            );
        }
        assert_eq!(h.len(), 15_000);
        assert_eq!(merged.counter("announce.ok"), 15_000);
        assert_eq!(merged.counter("max.lag_us"), 20);
        assert_eq!(merged.shard, None);
        assert_eq!(merged.params["merged_from"], 3);
    }

    #[test]
    fn merge_refuses_mixed_tools_and_versions() {
        let a = LoadReport::new("tracker-load");
        let b = LoadReport::new("swarm-load");
        let err = LoadReport::merge(&[a.clone(), b]).unwrap_err();
        assert!(
            err.contains("swarm-load") && err.contains("different tools"),
            "{err}"
        );
        let mut c = a.clone();
        c.version = 99;
        let err = LoadReport::merge(&[a, c]).unwrap_err();
        assert!(err.contains("different versions"), "{err}");
        assert!(LoadReport::merge(&[]).is_err());
    }

    #[test]
    fn quantile_cells_format() {
        let mut h = Hist::new(60_000_000);
        assert_eq!(quantile_cells(&h), vec!["-"; 5]);
        for v in 1..=1000 {
            h.record(v * 10);
        }
        let cells = quantile_cells(&h);
        assert_eq!(cells[0], "5.003");
        assert_eq!(cells[4], "10.0");
    }
}
