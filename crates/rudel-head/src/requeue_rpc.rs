//! The Requeue call's input, checked before anything is proposed.
use rudel_core::requeue::JobRef;
use rudel_proto::v1 as pb;
use tonic::Status;

/// Most jobs or tasks one requeue may name (each is work in one log entry).
const MAX_REFS: usize = 10_000;

/// The references of a Requeue request, as the replicated command takes them.
pub fn refs(jobs: &[pb::RequeueRef]) -> Result<Vec<JobRef>, Status> {
    if jobs.is_empty() || jobs.len() > MAX_REFS {
        return Err(Status::invalid_argument(format!(
            "name between 1 and {MAX_REFS} jobs or array tasks"
        )));
    }
    Ok(jobs
        .iter()
        .map(|r| JobRef {
            job: r.job_id,
            index: r.index,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_oversized_requests_are_refused() {
        assert!(refs(&[]).is_err());
        let many = vec![pb::RequeueRef::default(); MAX_REFS + 1];
        assert!(refs(&many).is_err());
        let one = [pb::RequeueRef {
            job_id: 41,
            index: Some(3),
        }];
        assert_eq!(
            refs(&one).unwrap(),
            vec![JobRef {
                job: 41,
                index: Some(3)
            }]
        );
    }
}
