//! The hostfile of a multi-node job (`RUDEL_HOSTFILE`): Open MPI's `host slots=N` lines,
//! written beside the job's script from the allocation the head put in its environment
//! (`RUDEL_ALLOCATION`), so `mpirun --hostfile "$RUDEL_HOSTFILE"` finds every node.
use std::path::{Path, PathBuf};

/// The variable naming the allocation, and the one naming the file.
const ALLOCATION: &str = "RUDEL_ALLOCATION";
const HOSTFILE: &str = "RUDEL_HOSTFILE";

/// Why the hostfile could not be written (the task then fails to start rather than run
/// without it).
#[derive(Debug, thiserror::Error)]
pub enum HostfileError {
    #[error("malformed {ALLOCATION} {0:?}")]
    Malformed(String),
    #[error("cannot write the hostfile {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// Writes `job-JOB.hosts` in `dir` when the environment holds an allocation and adds
/// `RUDEL_HOSTFILE` naming it; does nothing for a one-node job.
pub fn prepare(dir: &Path, job: u64, env: &mut Vec<(String, String)>) -> Result<Option<PathBuf>, HostfileError> {
    let Some(text) = env.iter().find(|(k, _)| k == ALLOCATION).map(|(_, v)| v.clone()) else {
        return Ok(None);
    };
    let body = rudel_core::alloc::hostfile_from_text(&text).ok_or_else(|| HostfileError::Malformed(text.clone()))?;
    let path = dir.join(format!("job-{job}.hosts"));
    let err = |source| HostfileError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    // Written whole then renamed: a requeued attempt on a new set of nodes replaces it.
    let tmp = dir.join(format!(".job-{job}.hosts.{}", std::process::id()));
    std::fs::write(&tmp, body).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    env.retain(|(k, _)| k != HOSTFILE);
    env.push((HOSTFILE.into(), path.display().to_string()));
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_hostfile_only_for_an_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = vec![("A".to_string(), "1".to_string())];
        assert!(prepare(dir.path(), 7, &mut env).unwrap().is_none());
        env.push((ALLOCATION.into(), "n1:2:2,n2:1:4".into()));
        let path = prepare(dir.path(), 7, &mut env).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "n1 slots=2\nn2 slots=1\n");
        assert!(env.contains(&(HOSTFILE.to_string(), path.display().to_string())));
        let mut bad = vec![(ALLOCATION.to_string(), "garbage".to_string())];
        assert!(matches!(
            prepare(dir.path(), 8, &mut bad),
            Err(HostfileError::Malformed(_))
        ));
    }
}
