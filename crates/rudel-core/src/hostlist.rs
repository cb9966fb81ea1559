//! Slurm's compressed host lists: `node[1-3,5],login` <-> `node1 node2 node3 node5 login`.
//!
//! Used wherever node names are shown or given in Slurm's form (`sinfo`, `squeue`,
//! `scontrol`, `rudel exec -w`, and multi-node jobs' `SLURM_JOB_NODELIST`).
use std::collections::BTreeMap;

use thiserror::Error;

/// Most names one range may expand to: a typo such as `n[1-1000000000]` is refused
/// instead of filling memory.
pub const MAX_EXPANDED: u64 = 100_000;

/// A host list that cannot be expanded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HostlistError {
    #[error("unbalanced '{bracket}' in {list:?}")]
    Unbalanced { bracket: char, list: String },
    #[error("bad range {range:?} in {item:?}: expected N or N-M with N <= M (at most {MAX_EXPANDED} names)")]
    BadRange { range: String, item: String },
    #[error("bad node list item {0:?}")]
    BadItem(String),
}

/// Expands `a,b[1-3,7],c` into names, in the order written.
pub fn expand(s: &str) -> Result<Vec<String>, HostlistError> {
    let mut out = Vec::new();
    for item in split_top(s)?.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
        match (item.find('['), item.ends_with(']')) {
            (Some(open), true) => expand_item(&item[..open], &item[open + 1..item.len() - 1], item, &mut out)?,
            (None, _) => out.push(item.to_string()),
            _ => return Err(HostlistError::BadItem(item.to_string())),
        }
    }
    Ok(out)
}

/// Splits at the commas outside brackets.
fn split_top(s: &str) -> Result<Vec<&str>, HostlistError> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    let unbalanced = |bracket| HostlistError::Unbalanced {
        bracket,
        list: s.to_string(),
    };
    for (i, ch) in s.char_indices() {
        match ch {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).ok_or_else(|| unbalanced(']'))?,
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(unbalanced('['));
    }
    items.push(&s[start..]);
    Ok(items)
}

/// `prefix[ranges]` into names; a range written with leading zeros keeps its width.
fn expand_item(prefix: &str, ranges: &str, item: &str, out: &mut Vec<String>) -> Result<(), HostlistError> {
    for part in ranges.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let width = a.len();
        let bad = || HostlistError::BadRange {
            range: part.to_string(),
            item: item.to_string(),
        };
        let (x, y): (u64, u64) = match (a.parse(), b.parse()) {
            (Ok(x), Ok(y)) if x <= y && y - x < MAX_EXPANDED => (x, y),
            _ => return Err(bad()),
        };
        out.extend((x..=y).map(|n| format!("{prefix}{n:0width$}")));
    }
    Ok(())
}

/// Compresses names into Slurm's form, `prefix[1-3,5]` (the inverse of [`expand`]):
/// names without a numeric suffix first, in the order given, then one group per prefix
/// and digit width, sorted.
pub fn compress(names: &[String]) -> String {
    let mut groups: BTreeMap<(String, usize), Vec<u64>> = BTreeMap::new();
    let mut parts = Vec::new();
    for n in names {
        let digits = n.chars().rev().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits == n.len() {
            parts.push(n.clone());
            continue;
        }
        let (prefix, num) = n.split_at(n.len() - digits);
        let width = if num.starts_with('0') && num.len() > 1 {
            num.len()
        } else {
            0
        };
        match num.parse::<u64>() {
            Ok(v) => groups.entry((prefix.to_string(), width)).or_default().push(v),
            Err(_) => parts.push(n.clone()),
        }
    }
    // `gpu10` belongs with `gpu01`..`gpu09` (same digit count): move unpadded numbers
    // into a padded group of their prefix when they have its width.
    let padded: Vec<(String, usize)> = groups.keys().filter(|(_, w)| *w > 0).cloned().collect();
    for (prefix, w) in padded {
        if let Some(plain) = groups.get_mut(&(prefix.clone(), 0)) {
            let (fit, rest): (Vec<u64>, Vec<u64>) = plain.iter().partition(|n| n.to_string().len() == w);
            *plain = rest;
            if plain.is_empty() {
                groups.remove(&(prefix.clone(), 0));
            }
            groups.entry((prefix, w)).or_default().extend(fit);
        }
    }
    for ((prefix, width), mut nums) in groups {
        nums.sort_unstable();
        nums.dedup();
        if let [one] = nums[..] {
            parts.push(format!("{prefix}{one:0width$}"));
            continue;
        }
        let ranges: Vec<String> = runs(&nums)
            .into_iter()
            .map(|(a, b)| {
                if a == b {
                    format!("{a:0width$}")
                } else {
                    format!("{a:0width$}-{b:0width$}")
                }
            })
            .collect();
        parts.push(format!("{prefix}[{}]", ranges.join(",")));
    }
    parts.join(",")
}

/// Consecutive runs of sorted, distinct numbers as (first, last).
pub fn runs(nums: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &n in nums {
        match out.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(n) => *last = n,
            _ => out.push((n, n)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn expands_ranges_lists_and_zero_padding() {
        assert_eq!(
            expand("n[1-3,7],login,gpu[01-02]").unwrap(),
            ["n1", "n2", "n3", "n7", "login", "gpu01", "gpu02"]
        );
        assert_eq!(expand("").unwrap(), Vec::<String>::new());
        assert_eq!(expand("a, b").unwrap(), ["a", "b"]);
    }

    #[test]
    fn compresses_as_slurm_does() {
        assert_eq!(compress(&names(&["node1", "node2", "node3", "node5"])), "node[1-3,5]");
        assert_eq!(compress(&names(&["n3", "n1", "n2", "n1"])), "n[1-3]");
        assert_eq!(compress(&names(&["a"])), "a");
        assert_eq!(compress(&names(&["n7"])), "n7");
        assert_eq!(compress(&names(&["gpu01", "gpu02", "gpu10"])), "gpu[01-02,10]");
        assert_eq!(compress(&[]), "");
    }

    #[test]
    fn compress_then_expand_is_the_same_set() {
        let v = names(&["n1", "n2", "n3", "n7", "login", "gpu01", "gpu02", "x9y", "x9y1"]);
        let mut back = expand(&compress(&v)).unwrap();
        back.sort();
        let mut want = v.clone();
        want.sort();
        assert_eq!(back, want);
    }

    #[test]
    fn refuses_malformed_lists() {
        for bad in ["n[1-", "n]", "n[3-1]", "n[x]", "n[1-200000]", "n[1]x"] {
            assert!(expand(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn runs_merge_consecutive_numbers() {
        assert_eq!(runs(&[1, 2, 3, 5, 7, 8]), [(1, 3), (5, 5), (7, 8)]);
        assert_eq!(runs(&[u64::MAX - 1, u64::MAX]), [(u64::MAX - 1, u64::MAX)]);
    }
}
