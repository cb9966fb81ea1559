//! Job arrays, stored as index ranges: an array of 1M tasks is a few integers.
use serde::{Deserialize, Serialize};

/// One `start-end:step` piece of an array spec (inclusive bounds, step >= 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRange {
    pub start: u32,
    pub end: u32,
    pub step: u32,
}

impl IndexRange {
    /// Number of indices in this range.
    pub fn len(&self) -> u64 {
        if self.end < self.start || self.step == 0 {
            0
        } else {
            u64::from((self.end - self.start) / self.step) + 1
        }
    }

    /// True when the range holds no index.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed `--array` spec such as `1-100:2,200%5`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArraySpec {
    pub ranges: Vec<IndexRange>,
    /// At most this many tasks of the array run at once (`%N`).
    pub limit: Option<u32>,
}

impl ArraySpec {
    /// Total number of tasks.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(IndexRange::len).sum()
    }

    /// True when the spec holds no task.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The array index at `position` (0-based, in spec order), if in bounds.
    pub fn index_at(&self, mut position: u64) -> Option<u32> {
        for r in &self.ranges {
            let n = r.len();
            if position < n {
                // position < n <= u32 range size, so this fits.
                return Some(r.start + (position as u32) * r.step);
            }
            position -= n;
        }
        None
    }

    /// The position (0-based, in spec order) of array index `index`, if it is in the spec.
    pub fn position_of(&self, index: u32) -> Option<u64> {
        let mut before = 0u64;
        for r in &self.ranges {
            if index >= r.start && index <= r.end && r.step > 0 && (index - r.start).is_multiple_of(r.step) {
                return Some(before + u64::from((index - r.start) / r.step));
            }
            before += r.len();
        }
        None
    }

    /// Canonical text form, e.g. `1-100:2,200%5`.
    pub fn to_spec_string(&self) -> String {
        let mut s = self
            .ranges
            .iter()
            .map(|r| {
                if r.start == r.end {
                    r.start.to_string()
                } else if r.step == 1 {
                    format!("{}-{}", r.start, r.end)
                } else {
                    format!("{}-{}:{}", r.start, r.end, r.step)
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        if let Some(l) = self.limit {
            s.push_str(&format!("%{l}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_at_walks_ranges_in_order() {
        let a = ArraySpec {
            ranges: vec![
                IndexRange {
                    start: 1,
                    end: 5,
                    step: 2,
                },
                IndexRange {
                    start: 10,
                    end: 10,
                    step: 1,
                },
            ],
            limit: None,
        };
        assert_eq!(a.len(), 4);
        let got: Vec<_> = (0..5).map(|p| a.index_at(p)).collect();
        assert_eq!(got, vec![Some(1), Some(3), Some(5), Some(10), None]);
        assert_eq!(a.to_spec_string(), "1-5:2,10");
    }
}
