//! Which array indices of a job are still pending, in Slurm's compact form (`3-10`,
//! `1-9:2,12`), as `squeue` shows a pending array (`41_[3-10]`). Computed range by range,
//! so an array of a million tasks costs a few integers, not a million.
use crate::array::IndexRange;
use crate::job::Job;

/// The pending indices of `job` (never dispatched, or requeued), sorted by first index;
/// empty when none is pending or the job is not an array.
pub fn pending_indices(job: &Job) -> String {
    let Some(array) = &job.spec.array else {
        return String::new();
    };
    let mut pieces: Vec<IndexRange> = Vec::new();
    // Tasks are dispatched in position order: those at or after `next_position` wait.
    let mut before = 0u64;
    for r in &array.ranges {
        let n = r.len();
        if before + n > job.next_position {
            let skip = job.next_position.saturating_sub(before);
            // skip < n <= the range's size in u32 steps.
            let start = r.start + (skip as u32) * r.step;
            pieces.push(IndexRange {
                start,
                end: r.end - (r.end - start) % r.step.max(1),
                step: r.step,
            });
        }
        before += n;
    }
    for &i in &job.skipped {
        pieces = pieces.into_iter().flat_map(|p| without(p, i)).collect();
    }
    pieces.extend(job.requeued.keys().map(|&i| IndexRange {
        start: i,
        end: i,
        step: 1,
    }));
    if let Some(g) = job.corr.as_deref() {
        // Held back by `aftercorr`: pending too. Runs of neighbours become one range, so a
        // large held array prints as `0-999`, not a thousand numbers.
        for i in g.waiting.iter().chain(&g.never) {
            pieces.push(IndexRange {
                start: *i,
                end: *i,
                step: 1,
            });
        }
    }
    pieces.sort_by_key(|p| p.start);
    let pieces = merge_neighbours(pieces);
    pieces
        .iter()
        .map(|p| {
            if p.start == p.end {
                p.start.to_string()
            } else if p.step == 1 {
                format!("{}-{}", p.start, p.end)
            } else {
                format!("{}-{}:{}", p.start, p.end, p.step)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Joins step-1 ranges that touch (`3`, `4-6`, `7` → `3-7`); input sorted by start.
fn merge_neighbours(pieces: Vec<IndexRange>) -> Vec<IndexRange> {
    let mut out: Vec<IndexRange> = Vec::with_capacity(pieces.len());
    for p in pieces {
        match out.last_mut() {
            Some(last)
                if last.step <= 1 && (p.step <= 1 || p.start == p.end) && p.start == last.end.saturating_add(1) =>
            {
                last.end = p.end;
                last.step = 1;
            }
            _ => out.push(p),
        }
    }
    out
}

/// `r` without index `i` (cancelled before dispatch): zero, one or two ranges.
fn without(r: IndexRange, i: u32) -> Vec<IndexRange> {
    let step = r.step.max(1);
    if i < r.start || i > r.end || !(i - r.start).is_multiple_of(step) {
        return vec![r];
    }
    let mut out = Vec::new();
    if i > r.start {
        out.push(IndexRange {
            start: r.start,
            end: i - step,
            step,
        });
    }
    if i < r.end {
        out.push(IndexRange {
            start: i + step,
            end: r.end,
            step,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobSpec;

    fn job(array: &str, next: u64, requeued: &[u32]) -> Job {
        let spec = JobSpec {
            array: Some(crate::parse::parse_array(array).unwrap()),
            ..JobSpec::default()
        };
        let mut j = Job::new(7, spec, 0);
        j.next_position = next;
        for &i in requeued {
            j.requeued.insert(i, 1);
        }
        j
    }

    #[test]
    fn untouched_partly_dispatched_and_requeued_arrays() {
        assert_eq!(pending_indices(&job("1-10", 0, &[])), "1-10");
        assert_eq!(pending_indices(&job("1-10", 2, &[])), "3-10");
        assert_eq!(pending_indices(&job("1-10", 9, &[])), "10");
        assert_eq!(pending_indices(&job("1-10", 10, &[])), "");
        assert_eq!(pending_indices(&job("1-10", 10, &[4])), "4");
        assert_eq!(pending_indices(&job("1-9:2,20-21", 1, &[1])), "1,3-9:2,20-21");
        assert_eq!(pending_indices(&job("1-9:2,20-21", 5, &[])), "20-21");
        assert_eq!(pending_indices(&job("0-4000000", 3_999_999, &[])), "3999999-4000000");
    }

    #[test]
    fn tasks_cancelled_before_dispatch_are_left_out() {
        let mut j = job("1-9:2,20-23", 1, &[]);
        j.skipped.extend([5, 21, 23]);
        assert_eq!(pending_indices(&j), "3,7-9:2,20,22");
        j.skipped = [3].into();
        assert_eq!(pending_indices(&j), "5-9:2,20-23");
    }

    #[test]
    fn a_single_job_has_no_indices() {
        assert_eq!(pending_indices(&Job::new(1, JobSpec::default(), 0)), "");
    }
}
