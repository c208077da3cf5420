//! The conventions trackers differ on, which BEP 3 and BEP 15 leave open, and how
//! `tracker-load` learns the target's from its replies.
//!
//! Each convention is a yes/no question. A reply is *decisive* for one when, within the
//! reply's concurrency tolerance, it fits one answer and not the other (an announce reply's
//! counts fit "the announcing peer is counted" or "it is not", but not both). For a correct
//! tracker a decisive reply always names its true convention, since the tolerance bounds how
//! far a correct reply can be from the model. The first [`SETTLE`] decisive replies that agree
//! fix the convention; from then on a reply that fits only the other answer is wrong. A
//! decisive reply that contradicts earlier ones before that is wrong too (the tracker follows
//! no consistent convention), and so is a reply that fits neither answer. Until a convention
//! is fixed, a reply that fits either answer passes. `--conventions` fixes them up front.
//!
//! | convention | opentracker | aquatic (UDP and HTTP) |
//! |---|---|---|
//! | `counts-self`: the announcing peer is in its own reply's seeders/leechers | yes | no |
//! | `returns-self`: the announcing peer may be in its own reply's peer list | yes | no |
//! | `counts-downloads`: scrape `downloaded` counts `completed` events (else always 0) | yes | no |
//! | `zero-numwant-default`: numwant 0 gets the tracker's default list (else no peers) | no | yes |

/// One convention trackers differ on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// The announcing peer is counted in its own reply's seeders or leechers.
    CountsSelf = 0,
    /// The announcing peer may be listed in its own reply's peers.
    ReturnsSelf = 1,
    /// Scrape `downloaded` (`completed`) counts `completed` events; otherwise it is always 0.
    CountsDownloads = 2,
    /// An announce with numwant 0 gets the tracker's default number of peers; otherwise none.
    ZeroNumwantDefault = 3,
}

/// Every convention, in report order.
pub const ALL: [Convention; 4] = [
    Convention::CountsSelf,
    Convention::ReturnsSelf,
    Convention::CountsDownloads,
    Convention::ZeroNumwantDefault,
];

/// Decisive replies that must agree before a convention is fixed.
pub const SETTLE: u32 = 3;

impl Convention {
    /// Its name on the command line and in counters.
    pub fn key(self) -> &'static str {
        match self {
            Convention::CountsSelf => "counts-self",
            Convention::ReturnsSelf => "returns-self",
            Convention::CountsDownloads => "counts-downloads",
            Convention::ZeroNumwantDefault => "zero-numwant-default",
        }
    }

    /// What the answer means, in words.
    pub fn describe(self, yes: bool) -> &'static str {
        match (self, yes) {
            (Convention::CountsSelf, true) => "the announcing peer is in its reply's counts",
            (Convention::CountsSelf, false) => "the announcing peer is left out of its counts",
            (Convention::ReturnsSelf, true) => "the announcing peer may be in its peer list",
            (Convention::ReturnsSelf, false) => "the announcing peer is never in its peer list",
            (Convention::CountsDownloads, true) => "scrape downloaded counts completed events",
            (Convention::CountsDownloads, false) => "scrape downloaded is always 0",
            (Convention::ZeroNumwantDefault, true) => "numwant 0 gets the default list",
            (Convention::ZeroNumwantDefault, false) => "numwant 0 gets no peers",
        }
    }

    /// The counter for a worker that fixed it at `yes` (`None`: never decided).
    pub fn counter(self, value: Option<bool>) -> &'static str {
        macro_rules! names {
            ($($c:ident => $k:literal),*) => {
                match (self, value) {
                    $((Convention::$c, Some(true)) => concat!("convention.", $k, ".yes"),
                      (Convention::$c, Some(false)) => concat!("convention.", $k, ".no"),
                      (Convention::$c, None) => concat!("convention.", $k, ".undetected"),)*
                }
            };
        }
        names!(
            CountsSelf => "counts-self",
            ReturnsSelf => "returns-self",
            CountsDownloads => "counts-downloads",
            ZeroNumwantDefault => "zero-numwant-default"
        )
    }

    /// The counter of decisive replies that contradicted the others.
    pub fn conflict_counter(self) -> &'static str {
        match self {
            Convention::CountsSelf => "convention.counts-self.conflicts",
            Convention::ReturnsSelf => "convention.returns-self.conflicts",
            Convention::CountsDownloads => "convention.counts-downloads.conflicts",
            Convention::ZeroNumwantDefault => "convention.zero-numwant-default.conflicts",
        }
    }
}

/// What one worker knows of the target's conventions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conventions {
    known: [Option<bool>; 4],
    given: [bool; 4],
    votes: [[u32; 2]; 4],
    conflicts: [u32; 4],
}

impl Conventions {
    /// Nothing known: every convention is detected from the replies.
    pub fn auto() -> Conventions {
        Conventions::default()
    }

    /// opentracker's conventions.
    pub fn opentracker() -> Conventions {
        Conventions::fixed([true, true, true, false])
    }

    /// aquatic_udp's and aquatic_http's conventions.
    pub fn aquatic() -> Conventions {
        Conventions::fixed([false, false, false, true])
    }

    fn fixed(v: [bool; 4]) -> Conventions {
        let mut c = Conventions::default();
        for (i, &x) in v.iter().enumerate() {
            c.known[i] = Some(x);
            c.given[i] = true;
        }
        c
    }

    /// Parses `--conventions`: `auto`, `opentracker`, `aquatic`, or comma-separated
    /// `KEY=yes|no` (the others detected), after an optional preset:
    /// `aquatic,counts-downloads=yes`.
    pub fn parse(text: &str) -> Result<Conventions, String> {
        let mut c = Conventions::auto();
        for (n, part) in text.split(',').map(str::trim).enumerate() {
            match part {
                "auto" if n == 0 => {}
                "opentracker" if n == 0 => c = Conventions::opentracker(),
                "aquatic" if n == 0 => c = Conventions::aquatic(),
                _ => {
                    let (k, v) = part.split_once('=').ok_or_else(|| {
                        format!(
                            "`{part}`: expected auto, opentracker, aquatic (first) or KEY=yes|no"
                        )
                    })?;
                    let conv = ALL.iter().find(|c| c.key() == k.trim()).ok_or_else(|| {
                        let keys: Vec<&str> = ALL.iter().map(|c| c.key()).collect();
                        format!("unknown convention `{k}` (one of {})", keys.join(", "))
                    })?;
                    let v = match v.trim() {
                        "yes" => true,
                        "no" => false,
                        other => return Err(format!("{k}={other}: expected yes or no")),
                    };
                    c.known[*conv as usize] = Some(v);
                    c.given[*conv as usize] = true;
                }
            }
        }
        Ok(c)
    }

    /// The answer, if fixed.
    pub fn get(&self, c: Convention) -> Option<bool> {
        self.known[c as usize]
    }

    /// Whether it was given (`--conventions`) rather than detected.
    pub fn given(&self, c: Convention) -> bool {
        self.given[c as usize]
    }

    /// Decisive replies that contradicted earlier ones, so far.
    pub fn conflicts(&self, c: Convention) -> u32 {
        self.conflicts[c as usize]
    }

    /// Takes a reply's evidence: `fits_yes`/`fits_no` say which answers it fits within its
    /// tolerance. Returns whether the reply is consistent (it fits the fixed answer, or fits
    /// some answer that no earlier decisive reply contradicts).
    pub fn judge(&mut self, c: Convention, fits_yes: bool, fits_no: bool) -> bool {
        let i = c as usize;
        if let Some(k) = self.known[i] {
            return if k { fits_yes } else { fits_no };
        }
        match (fits_yes, fits_no) {
            (true, true) => true,
            (false, false) => false,
            (yes, _) => {
                let v = usize::from(yes);
                self.votes[i][v] += 1;
                if self.votes[i][1 - v] > 0 {
                    self.conflicts[i] += 1;
                    return false;
                }
                if self.votes[i][v] >= SETTLE {
                    self.known[i] = Some(yes);
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisive_replies_fix_a_convention_and_contradictions_are_wrong() {
        let mut c = Conventions::auto();
        let k = Convention::CountsSelf;
        assert!(c.judge(k, true, true));
        assert_eq!(c.get(k), None);
        for _ in 0..SETTLE {
            assert!(c.judge(k, false, true));
        }
        assert_eq!(c.get(k), Some(false));
        assert!(!c.judge(k, true, false));
        assert!(c.judge(k, true, true));
        assert!(!c.judge(k, false, false));

        let mut c = Conventions::auto();
        assert!(c.judge(k, true, false));
        assert!(!c.judge(k, false, true));
        assert_eq!(c.conflicts(k), 1);
        assert_eq!(c.get(k), None);
    }

    #[test]
    fn presets_and_keys_parse() {
        assert_eq!(Conventions::parse("auto").unwrap(), Conventions::auto());
        assert_eq!(
            Conventions::parse("opentracker").unwrap(),
            Conventions::opentracker()
        );
        let c = Conventions::parse("aquatic,counts-downloads=yes").unwrap();
        assert_eq!(c.get(Convention::CountsDownloads), Some(true));
        assert_eq!(c.get(Convention::CountsSelf), Some(false));
        let c = Conventions::parse("returns-self=no").unwrap();
        assert_eq!(c.get(Convention::ReturnsSelf), Some(false));
        assert!(c.given(Convention::ReturnsSelf));
        assert_eq!(c.get(Convention::CountsSelf), None);
        assert!(Conventions::parse("counts-self=maybe").is_err());
        assert!(Conventions::parse("nonsense=yes").is_err());
        assert!(Conventions::parse("counts-self=yes,aquatic").is_err());
        for conv in ALL {
            assert!(conv.counter(Some(true)).ends_with(".yes"));
            assert!(conv.counter(None).contains(conv.key()));
        }
    }
}
