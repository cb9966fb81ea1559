//! Parsing and formatting of user-facing values: durations, sizes and array specs.
//!
//! The accepted forms follow Slurm (so existing scripts keep working) plus a few
//! friendlier unit forms (`90s`, `1h30m`, `1.5G`). Errors name the offending input and
//! say what is accepted, because they are shown to users as is.

use thiserror::Error;

use crate::array::{ArraySpec, IndexRange};

/// Most tasks a single array job may have; larger specs are rejected at parse time.
pub const MAX_ARRAY_TASKS: u64 = 10_000_000;

const DURATION_HELP: &str = "expected e.g. 90s, 10m, 2h, 1-12:00:00, 30 (minutes)";
const SIZE_HELP: &str = "expected e.g. 512M, 4G, 1.5G, 100K, 2T, or a number of MiB";
const ARRAY_HELP: &str = "expected e.g. 1-100, 1,3,5, 0-99:2, 1-1000%10";

/// A user-supplied value that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The text is not a duration in any accepted form.
    #[error("invalid duration {0:?}: {DURATION_HELP}")]
    Duration(String),
    /// The duration does not fit in 64-bit milliseconds.
    #[error("duration {0:?} is too large")]
    DurationOverflow(String),
    /// The text is not a size in any accepted form.
    #[error("invalid size {0:?}: {SIZE_HELP}")]
    Size(String),
    /// The size does not fit in 64-bit bytes.
    #[error("size {0:?} is too large (at most 16 EiB)")]
    SizeOverflow(String),
    /// The array spec is malformed; `reason` says which part.
    #[error("invalid array spec {spec:?}: {reason}; {ARRAY_HELP}")]
    Array {
        /// The whole spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The array spec is well formed but has too many tasks.
    #[error("array spec {spec:?} has {count} tasks, more than the limit of {max}", max = MAX_ARRAY_TASKS)]
    ArrayTooLarge {
        /// The whole spec as given.
        spec: String,
        /// How many tasks it describes.
        count: u64,
    },
}

const SEC: u64 = 1_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

/// Parses a duration into milliseconds; `0` means unlimited.
///
/// Slurm forms: `M` (a plain integer is minutes), `M:S`, `H:M:S`, `D-H`, `D-H:M`,
/// `D-H:M:S` (fields are not range-checked, like Slurm: `90:00` is 90 minutes).
/// Unit forms: `500ms`, `30s`, `10m`, `2h`, `1d` and combinations in decreasing unit
/// order such as `1h30m` or `1d12h` (units are case-insensitive).
/// `0`, `unlimited` and `infinite` give 0.
pub fn parse_duration(s: &str) -> Result<u64, ParseError> {
    let t = s.trim();
    let bad = || ParseError::Duration(s.to_string());
    let overflow = || ParseError::DurationOverflow(s.to_string());
    if t.is_empty() {
        return Err(bad());
    }
    let lower = t.to_ascii_lowercase();
    if lower == "unlimited" || lower == "infinite" {
        return Ok(0);
    }
    let field = |f: &str| -> Result<u64, ParseError> {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        f.parse::<u64>().map_err(|_| overflow())
    };
    // Sum of value*unit pairs, with overflow checks.
    let total = |parts: &[(u64, u64)]| -> Result<u64, ParseError> {
        parts.iter().try_fold(0u64, |acc, &(v, unit)| {
            v.checked_mul(unit)
                .and_then(|x| acc.checked_add(x))
                .ok_or_else(overflow)
        })
    };

    if let Some((d, rest)) = t.split_once('-') {
        let days = field(d)?;
        let f: Vec<&str> = rest.split(':').collect();
        let hms: Vec<u64> = f.iter().map(|x| field(x)).collect::<Result<_, _>>()?;
        return match hms.as_slice() {
            [h] => total(&[(days, DAY), (*h, HOUR)]),
            [h, m] => total(&[(days, DAY), (*h, HOUR), (*m, MIN)]),
            [h, m, sec] => total(&[(days, DAY), (*h, HOUR), (*m, MIN), (*sec, SEC)]),
            _ => Err(bad()),
        };
    }
    if t.contains(':') {
        let f: Vec<u64> = t.split(':').map(field).collect::<Result<_, _>>()?;
        return match f.as_slice() {
            [m, sec] => total(&[(*m, MIN), (*sec, SEC)]),
            [h, m, sec] => total(&[(*h, HOUR), (*m, MIN), (*sec, SEC)]),
            _ => Err(bad()),
        };
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return total(&[(field(t)?, MIN)]);
    }

    // Unit form: one or more <digits><unit>, units strictly decreasing.
    let mut parts = Vec::new();
    let mut rest = lower.as_str();
    let mut last_unit = u64::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (num, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, next) = after.split_at(letters);
        let unit = match unit {
            "ms" => 1,
            "s" => SEC,
            "m" => MIN,
            "h" => HOUR,
            "d" => DAY,
            _ => return Err(bad()),
        };
        if unit >= last_unit {
            return Err(bad());
        }
        last_unit = unit;
        parts.push((field(num)?, unit));
        rest = next;
    }
    total(&parts)
}

/// Formats milliseconds Slurm-style: `D-HH:MM:SS`, `HH:MM:SS` or `MM:SS`; 0 is
/// `unlimited`. Sub-second parts are dropped, so whole-second values round-trip
/// through [`parse_duration`].
pub fn format_duration(ms: u64) -> String {
    if ms == 0 {
        return "unlimited".to_string();
    }
    let secs = ms / SEC;
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else if h > 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Parses a memory size into bytes.
///
/// A plain number is MiB (Slurm's default unit). Suffixes `K`, `M`, `G`, `T`
/// (case-insensitive, optionally followed by `B` or `iB`) are binary multiples
/// (1K = 1024); a bare `B` means bytes. A decimal such as `1.5G` is allowed and
/// rounded down to whole bytes. `0` gives 0.
pub fn parse_size(s: &str) -> Result<u64, ParseError> {
    let t = s.trim();
    let bad = || ParseError::Size(s.to_string());
    let overflow = || ParseError::SizeOverflow(s.to_string());
    let num_len = t.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (num, suffix) = t.split_at(num_len);
    let mult = match suffix.to_ascii_lowercase().as_str() {
        "" => MIB,
        "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        "t" | "tb" | "tib" => TIB,
        _ => return Err(bad()),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || num.ends_with('.') {
        return Err(bad());
    }
    let int: u64 = int.parse().map_err(|_| overflow())?;
    let mut bytes = u128::from(int) * u128::from(mult);
    if !frac.is_empty() {
        // Digits past the 18th are below one byte even for TiB; 10^18 * 2^40 fits u128.
        let frac = &frac[..frac.len().min(18)];
        let f: u128 = frac.parse().map_err(|_| bad())?;
        bytes += f * u128::from(mult) / 10u128.pow(frac.len() as u32);
    }
    u64::try_from(bytes).map_err(|_| overflow())
}

/// Formats bytes with the largest binary unit that gives a value >= 1, with at most
/// one decimal (`512M`, `1.5G`, `100K`, `7B`); 0 is `0`. Non-exact values are rounded
/// to the nearest tenth, so this is for display, not for round-tripping.
pub fn format_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_string();
    }
    const UNITS: [(u64, &str); 4] = [(TIB, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")];
    let Some(i) = UNITS.iter().position(|(u, _)| bytes >= *u) else {
        return format!("{bytes}B");
    };
    let (unit, name) = UNITS[i];
    let tenths = (u128::from(bytes) * 10 + u128::from(unit) / 2) / u128::from(unit);
    // Rounding may reach the next unit up (e.g. 1023.96K -> 1024.0K -> 1M).
    if tenths == 10_240 && i > 0 {
        return format!("1{}", UNITS[i - 1].1);
    }
    if tenths % 10 == 0 {
        format!("{}{name}", tenths / 10)
    } else {
        format!("{}.{}{name}", tenths / 10, tenths % 10)
    }
}

/// Parses an array spec such as `1-100:2,200%5` (Slurm's `--array`).
///
/// Items are comma-separated, each `N`, `A-B` or `A-B:S` (inclusive, `B >= A`,
/// `S >= 1`); an optional `%L` (`L >= 1`) caps how many tasks run at once. Indices
/// that appear in more than one item are rejected (each index names one task), and so
/// are specs with more than [`MAX_ARRAY_TASKS`] tasks.
pub fn parse_array(s: &str) -> Result<ArraySpec, ParseError> {
    let err = |reason: String| ParseError::Array {
        spec: s.to_string(),
        reason,
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(err("it is empty".into()));
    }
    let num = |x: &str, what: &str| -> Result<u32, ParseError> {
        let x = x.trim();
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(format!("{what} {x:?} is not a non-negative integer")));
        }
        x.parse::<u32>()
            .map_err(|_| err(format!("{what} {x} is too large (at most {})", u32::MAX)))
    };
    let (items, limit) = match t.split_once('%') {
        Some((items, l)) => {
            let l = num(l, "limit")?;
            if l == 0 {
                return Err(err("the %limit must be at least 1".into()));
            }
            (items, Some(l))
        }
        None => (t, None),
    };
    let mut ranges = Vec::new();
    for item in items.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(err("it has an empty item".into()));
        }
        let (bounds, step) = match item.split_once(':') {
            Some((b, st)) => (b, Some(num(st, "step")?)),
            None => (item, None),
        };
        let range = match bounds.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a, "index")?, num(b, "index")?);
                if b < a {
                    return Err(err(format!("range {item:?} ends before it starts")));
                }
                let step = step.unwrap_or(1);
                if step == 0 {
                    return Err(err(format!("range {item:?} has step 0")));
                }
                IndexRange { start: a, end: b, step }
            }
            None if step.is_some() => {
                return Err(err(format!("a step needs a range, as in 1-9:2, not {item:?}")));
            }
            None => {
                let n = num(bounds, "index")?;
                IndexRange {
                    start: n,
                    end: n,
                    step: 1,
                }
            }
        };
        ranges.push(range);
    }
    let count = ranges.iter().fold(0u64, |acc, r| acc.saturating_add(r.len()));
    if count > MAX_ARRAY_TASKS {
        return Err(ParseError::ArrayTooLarge {
            spec: s.to_string(),
            count,
        });
    }
    if let Some(dup) = first_duplicate(&ranges) {
        return Err(err(format!("index {dup} appears more than once")));
    }
    Ok(ArraySpec { ranges, limit })
}

/// Some index shared by two of the ranges, if any.
fn first_duplicate(ranges: &[IndexRange]) -> Option<u32> {
    let mut sorted: Vec<&IndexRange> = ranges.iter().collect();
    sorted.sort_by_key(|r| (r.start, r.end));
    for (i, a) in sorted.iter().enumerate() {
        // Only ranges whose [start, end] spans overlap can share an index.
        for b in sorted[i + 1..].iter().take_while(|b| b.start <= a.end) {
            if let Some(x) = common_index(a, b) {
                return Some(x);
            }
        }
    }
    None
}

/// Smallest index in both ranges, solving x = a.start (mod a.step) and
/// x = b.start (mod b.step) within the overlap of their spans.
fn common_index(a: &IndexRange, b: &IndexRange) -> Option<u32> {
    let lo = i128::from(a.start.max(b.start));
    let hi = i128::from(a.end.min(b.end));
    let (s1, s2) = (i128::from(a.step), i128::from(b.step));
    let (r1, r2) = (i128::from(a.start), i128::from(b.start));
    // Extended Euclid: g = gcd(s1, s2) = s1*p + s2*q.
    let (mut old_r, mut r, mut old_p, mut p) = (s1, s2, 1i128, 0i128);
    while r != 0 {
        let k = old_r / r;
        (old_r, r) = (r, old_r - k * r);
        (old_p, p) = (p, old_p - k * p);
    }
    let g = old_r;
    if (r2 - r1) % g != 0 {
        return None;
    }
    let lcm = s1 / g * s2;
    // x = r1 + s1 * t, with s1 * t = r2 - r1 (mod s2) => t = p*(r2-r1)/g (mod s2/g).
    let m = s2 / g;
    let t = (old_p * ((r2 - r1) / g)).rem_euclid(m);
    let x0 = r1 + s1 * t;
    // Smallest solution >= lo.
    let x = if x0 >= lo {
        x0 - (x0 - lo) / lcm * lcm
    } else {
        x0 + (lo - x0 + lcm - 1) / lcm * lcm
    };
    (x <= hi).then_some(x as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duration_slurm_forms() {
        assert_eq!(parse_duration("30"), Ok(30 * MIN));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("5:30"), Ok(5 * MIN + 30 * SEC));
        assert_eq!(parse_duration("90:00"), Ok(90 * MIN));
        assert_eq!(parse_duration("2:03:04"), Ok(2 * HOUR + 3 * MIN + 4 * SEC));
        assert_eq!(parse_duration("1-12"), Ok(DAY + 12 * HOUR));
        assert_eq!(parse_duration("1-12:30"), Ok(DAY + 12 * HOUR + 30 * MIN));
        assert_eq!(parse_duration("1-12:00:00"), Ok(DAY + 12 * HOUR));
        assert_eq!(parse_duration("2-00:00:05"), Ok(2 * DAY + 5 * SEC));
        assert_eq!(parse_duration(" 10 "), Ok(10 * MIN));
    }

    #[test]
    fn duration_unit_forms() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("30s"), Ok(30 * SEC));
        assert_eq!(parse_duration("10m"), Ok(10 * MIN));
        assert_eq!(parse_duration("2h"), Ok(2 * HOUR));
        assert_eq!(parse_duration("1d"), Ok(DAY));
        assert_eq!(parse_duration("1h30m"), Ok(HOUR + 30 * MIN));
        assert_eq!(parse_duration("1m30s"), Ok(90 * SEC));
        assert_eq!(
            parse_duration("1d2h3m4s5ms"),
            Ok(DAY + 2 * HOUR + 3 * MIN + 4 * SEC + 5)
        );
        assert_eq!(parse_duration("2H"), Ok(2 * HOUR));
        assert_eq!(parse_duration("0s"), Ok(0));
    }

    #[test]
    fn duration_unlimited() {
        assert_eq!(parse_duration("unlimited"), Ok(0));
        assert_eq!(parse_duration("UNLIMITED"), Ok(0));
        assert_eq!(parse_duration("infinite"), Ok(0));
    }

    #[test]
    fn duration_rejections() {
        for s in [
            "",
            " ",
            "-5",
            "1x",
            "abc",
            "1h1h",
            "30m1h",
            "1.5h",
            "h",
            "1:2:3:4",
            "1-",
            "-1-2",
            "1-2:3:4:5",
            "1:",
            ":5",
            "1- 2",
            "5 m",
            "10mss",
            "1-2-3",
            "+5",
        ] {
            assert_eq!(parse_duration(s), Err(ParseError::Duration(s.into())), "{s:?}");
        }
        for s in ["99999999999999999999", "213503982334601d", "307445734561825861m"] {
            assert_eq!(parse_duration(s), Err(ParseError::DurationOverflow(s.into())), "{s:?}");
        }
    }

    #[test]
    fn duration_error_message_names_input_and_forms() {
        let msg = parse_duration("1x").unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid duration \"1x\": expected e.g. 90s, 10m, 2h, 1-12:00:00, 30 (minutes)"
        );
    }

    #[test]
    fn duration_formatting() {
        assert_eq!(format_duration(0), "unlimited");
        assert_eq!(format_duration(5 * SEC), "00:05");
        assert_eq!(format_duration(59 * MIN + 59 * SEC), "59:59");
        assert_eq!(format_duration(HOUR), "01:00:00");
        assert_eq!(format_duration(25 * HOUR + 61 * SEC), "1-01:01:01");
        assert_eq!(format_duration(12 * DAY), "12-00:00:00");
        assert_eq!(format_duration(1500), "00:01");
    }

    #[test]
    fn size_forms() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("100"), Ok(100 * MIB));
        assert_eq!(parse_size("512M"), Ok(512 * MIB));
        assert_eq!(parse_size("4g"), Ok(4 * GIB));
        assert_eq!(parse_size("4GB"), Ok(4 * GIB));
        assert_eq!(parse_size("4GiB"), Ok(4 * GIB));
        assert_eq!(parse_size("4gib"), Ok(4 * GIB));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("2T"), Ok(2 * TIB));
        assert_eq!(parse_size("1.5G"), Ok(3 * GIB / 2));
        assert_eq!(parse_size("0.5"), Ok(MIB / 2));
        assert_eq!(parse_size("0.1K"), Ok(102));
        assert_eq!(parse_size("7B"), Ok(7));
        assert_eq!(parse_size(" 8M "), Ok(8 * MIB));
        assert_eq!(parse_size("16777215T"), Ok(16_777_215 * TIB));
    }

    #[test]
    fn size_rejections() {
        for s in [
            "", "-1", "-1G", "abc", "1X", "1.", ".5G", "1.2.3G", "1 G", "G", "1GBB", "1e3", "1kk", "1.5.G",
        ] {
            assert_eq!(parse_size(s), Err(ParseError::Size(s.into())), "{s:?}");
        }
        for s in ["16777216T", "99999999999999999999", "17592186044416"] {
            assert_eq!(parse_size(s), Err(ParseError::SizeOverflow(s.into())), "{s:?}");
        }
        assert!(parse_size("1x").unwrap_err().to_string().contains("\"1x\""));
    }

    #[test]
    fn size_formatting() {
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(7), "7B");
        assert_eq!(format_size(1024), "1K");
        assert_eq!(format_size(512 * MIB), "512M");
        assert_eq!(format_size(3 * GIB / 2), "1.5G");
        assert_eq!(format_size(2 * TIB), "2T");
        assert_eq!(format_size(MIB - 1), "1M");
        assert_eq!(format_size(GIB + GIB / 3), "1.3G");
        assert_eq!(format_size(4096 * TIB), "4096T");
    }

    #[test]
    fn array_forms() {
        let r = |start, end, step| IndexRange { start, end, step };
        assert_eq!(
            parse_array("1-100:2,200%5"),
            Ok(ArraySpec {
                ranges: vec![r(1, 100, 2), r(200, 200, 1)],
                limit: Some(5)
            })
        );
        assert_eq!(
            parse_array("0-9"),
            Ok(ArraySpec {
                ranges: vec![r(0, 9, 1)],
                limit: None
            })
        );
        let a = parse_array("1,3,5").unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a.to_spec_string(), "1,3,5");
        // Interleaved but disjoint (odds and evens).
        assert_eq!(parse_array("1-9:2,2-10:2").unwrap().len(), 10);
        assert_eq!(parse_array("0-9999999").unwrap().len(), MAX_ARRAY_TASKS);
        assert_eq!(parse_array(&format!("{}", u32::MAX)).unwrap().len(), 1);
    }

    #[test]
    fn array_rejections() {
        for s in [
            "",
            "1,,2",
            ",1",
            "1,",
            "5-3",
            "1-9:0",
            "1%0",
            "x",
            "1-",
            "-5",
            "1-2-3",
            "3:2",
            "1%",
            "1%2%3",
            "1-5,3",
            "1-9:2,3-7:4",
            "1,1",
            "4294967296",
            "1.5",
            "1-9:2%x",
        ] {
            assert!(
                matches!(parse_array(s), Err(ParseError::Array { .. })),
                "{s:?} -> {:?}",
                parse_array(s)
            );
        }
        assert_eq!(
            parse_array("0-10000000"),
            Err(ParseError::ArrayTooLarge {
                spec: "0-10000000".into(),
                count: 10_000_001
            })
        );
        let msg = parse_array("0-4294967295").unwrap_err().to_string();
        assert!(msg.contains("10000000") && msg.contains("4294967296"), "{msg}");
        let msg = parse_array("1-5,3").unwrap_err().to_string();
        assert!(msg.contains("index 3 appears more than once"), "{msg}");
        let msg = parse_array("1-9:2,3-7:4").unwrap_err().to_string();
        assert!(msg.contains("index 3 "), "{msg}");
        let msg = parse_array("5-3").unwrap_err().to_string();
        assert!(msg.contains("\"5-3\"") && msg.contains("ends before"), "{msg}");
    }

    proptest! {
        #[test]
        fn duration_format_round_trips(secs in 1u64..10_000_000_000) {
            prop_assert_eq!(parse_duration(&format_duration(secs * SEC)), Ok(secs * SEC));
        }

        #[test]
        fn exact_sizes_round_trip(n in 1u64..1_000_000, shift in 0usize..4) {
            let bytes = n << (10 * (shift + 1));
            let parsed = parse_size(&format_size(bytes)).unwrap();
            // Display keeps one decimal; the error is at most 5% of the unit.
            prop_assert!(parsed.abs_diff(bytes) <= bytes / 20, "{} vs {}", parsed, bytes);
        }

        #[test]
        fn duplicate_check_matches_brute_force(
            a in (0u32..60, 0u32..60, 1u32..8),
            b in (0u32..60, 0u32..60, 1u32..8),
        ) {
            let mk = |(x, y, s): (u32, u32, u32)| IndexRange { start: x.min(y), end: x.max(y), step: s };
            let (ra, rb) = (mk(a), mk(b));
            let expand = |r: &IndexRange| (r.start..=r.end).step_by(r.step as usize).collect::<Vec<_>>();
            let brute = expand(&ra).into_iter().filter(|x| expand(&rb).contains(x)).min();
            prop_assert_eq!(common_index(&ra, &rb), brute);
        }
    }
}
