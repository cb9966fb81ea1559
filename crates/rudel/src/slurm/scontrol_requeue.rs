//! `scontrol requeue|requeuehold [Incomplete] ID[,ID...]` (Slurm 22.05): jobs or array
//! tasks (`41_3`) back to pending; silent on success, each job that could not be requeued
//! an error line, exit 1.
use rudel_proto::v1 as pb;

use super::{SlurmError, SlurmResult};

/// Job references from scontrol's words (`Incomplete`, a state filter, is refused: every
/// named job is requeued whatever its state, and a filter that is ignored would requeue
/// jobs it was meant to leave alone).
fn parse_refs(words: &[&str]) -> Result<Vec<pb::RequeueRef>, SlurmError> {
    let mut refs = Vec::new();
    for w in words {
        if w.eq_ignore_ascii_case("incomplete") {
            return Err(SlurmError::msg(
                "scontrol requeue Incomplete is not supported yet by rudel (nothing was requeued)",
            ));
        }
        let ids = super::squeue::parse_ids(w).map_err(|_| SlurmError::msg("Invalid job id specified"))?;
        refs.extend(ids.into_iter().map(|(job_id, index)| pb::RequeueRef { job_id, index }));
    }
    if refs.is_empty() {
        return Err(SlurmError::msg("Invalid job id specified"));
    }
    Ok(refs)
}

/// `scontrol requeue` (`hold` false) or `scontrol requeuehold`.
pub async fn requeue(words: &[&str], hold: bool, head: &str) -> SlurmResult {
    let jobs = parse_refs(words)?;
    let r = crate::requeue_cmd::call(head, pb::RequeueRequest { jobs, hold }).await;
    super::scontrol::changed_or_errors(r, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_tasks_and_lists_parse_and_filters_are_refused() {
        let r = parse_refs(&["41,42_3", "43"]).unwrap();
        let got: Vec<(u64, Option<u32>)> = r.iter().map(|r| (r.job_id, r.index)).collect();
        assert_eq!(got, vec![(41, None), (42, Some(3)), (43, None)]);
        assert!(parse_refs(&[]).is_err());
        assert!(parse_refs(&["x"]).is_err());
        assert!(parse_refs(&["Incomplete", "41"]).is_err());
    }
}
