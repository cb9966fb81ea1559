//! Job ids as users write them: `41`, `41_3`, `41_[1-5,9]` (Slurm's forms), for the
//! commands that act on single array tasks as well as on whole jobs.
use rudel_proto::v1 as pb;

/// Most array tasks one id may expand to.
const MAX_TASKS: u64 = 100_000;

/// One id as given.
#[derive(Debug, PartialEq, Eq)]
pub enum JobRef {
    /// A job, or an array task by its own job id.
    Job(u64),
    /// Some tasks of an array job, by index.
    Tasks(u64, Vec<u32>),
}

impl JobRef {
    /// The job the id names (the array job for tasks).
    pub fn job(&self) -> u64 {
        match self {
            JobRef::Job(id) | JobRef::Tasks(id, _) => *id,
        }
    }
}

/// Parses one id.
pub fn parse(s: &str) -> Result<JobRef, String> {
    let bad =
        |why: &str| format!("bad job id {s:?}: {why} (expected ID, ID_INDEX or ID_[LIST], e.g. 41, 41_3, 41_[1-5,9])");
    let Some((id, tasks)) = s.split_once('_') else {
        return s.parse().map(JobRef::Job).map_err(|_| bad("not a number"));
    };
    let id = id.parse().map_err(|_| bad("not a number"))?;
    let list = match tasks.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(|| bad("no closing ]"))?,
        None => tasks,
    };
    if list.contains('%') {
        return Err(bad("a %limit does not name tasks"));
    }
    let spec = rudel_core::parse::parse_array(list).map_err(|e| bad(&e.to_string()))?;
    if spec.len() > MAX_TASKS {
        return Err(bad(&format!("more than {MAX_TASKS} tasks")));
    }
    let indices = (0..spec.len()).filter_map(|p| spec.index_at(p)).collect();
    Ok(JobRef::Tasks(id, indices))
}

/// Splits a comma-separated list of ids, keeping commas inside `[...]` (`41_[1,3],42`).
pub fn split_list(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut from) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[from..]);
    out.into_iter().filter(|p| !p.is_empty()).collect()
}

/// The cancel request for these ids.
pub fn cancel_request(refs: &[JobRef]) -> pb::CancelRequest {
    let mut r = pb::CancelRequest::default();
    for x in refs {
        match x {
            JobRef::Job(id) => r.job_ids.push(*id),
            JobRef::Tasks(id, indices) => r
                .tasks
                .extend(indices.iter().map(|&index| pb::ArrayTask { job_id: *id, index })),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_as_slurm_writes_them() {
        assert_eq!(parse("41").unwrap(), JobRef::Job(41));
        assert_eq!(parse("41_3").unwrap(), JobRef::Tasks(41, vec![3]));
        assert_eq!(parse("41_[1-3,7]").unwrap(), JobRef::Tasks(41, vec![1, 2, 3, 7]));
        assert_eq!(parse("41_1-5:2").unwrap(), JobRef::Tasks(41, vec![1, 3, 5]));
        for bad in ["abc", "41_", "41_[1-3", "41_[1-3%2]", "x_1", "41_[0-999999999]"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_keep_bracketed_commas() {
        assert_eq!(split_list("41_[1,3],42,,43_2"), ["41_[1,3]", "42", "43_2"]);
    }
}
