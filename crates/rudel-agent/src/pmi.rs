//! PMI for the tasks of a job step: the per-task variables of PMI-1's "port" mode and the
//! library Open MPI loads (`librudel_pmi.so`, the `rudel-pmi` crate, built into this
//! binary by build.rs). srun runs the server; the head puts its address (`PMI_PORT`) into
//! the step's environment.
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where an admin may point the agent at another build of the library (an agent
/// environment variable), instead of the embedded one.
pub const LIBRARY_ENV: &str = "RUDEL_PMI_LIBRARY";
const LIBRARY_FILE: &str = "librudel_pmi.so";

/// The library, compiled from crates/rudel-pmi by build.rs.
static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/librudel_pmi.so"));

/// The PMI library for this node's step tasks: `$RUDEL_PMI_LIBRARY` if set, else the
/// embedded one written to `DATA/lib/` (readable by every job user). None if neither is
/// there; the reason is logged, and steps with PMI are then refused on this node.
pub fn library(data_dir: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(LIBRARY_ENV) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            tracing::warn!(path = %p.display(), "${LIBRARY_ENV} is not a file: steps with PMI will be refused");
            return None;
        }
        return Some(p);
    }
    match install(&data_dir.join("lib")) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(dir = %data_dir.display(), "cannot write the PMI library: {e}; steps with PMI will be refused");
            None
        }
    }
}

/// Writes the embedded library into `dir` (atomically: a rank loading it while an agent
/// restarts must not read half a file).
fn install(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let path = dir.join(LIBRARY_FILE);
    let tmp = dir.join(format!(".{LIBRARY_FILE}.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(EMBEDDED)?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The library a step's tasks get on this node: None for a step without PMI (`PMI_PORT`
/// not set by the head), an error if the step has PMI and the node has no library.
///
/// Without the library an Open MPI program would start as N separate one-rank jobs and
/// "succeed"; so a node without it refuses the step's tasks instead.
pub fn library_for<'a>(
    env: &[(String, String)],
    library: Option<&'a Path>,
    node: &str,
) -> Result<Option<&'a Path>, String> {
    if !env.iter().any(|(k, _)| k == "PMI_PORT") {
        return Ok(None);
    }
    library.map(Some).ok_or_else(|| {
        format!(
            "node {node} has no PMI library (the agent could not write {LIBRARY_FILE} into its \
             data directory, or ${LIBRARY_ENV} names no file; see the agent's log), which MPI \
             programs started by srun need; run srun --mpi=none for programs that do not use MPI"
        )
    })
}

/// Adds rank `rank`'s PMI variables (PMI-1 port mode and Open MPI's library path).
pub fn add_task_env(env: &mut Vec<(String, String)>, rank: u32, library: &Path) {
    env.retain(|(k, _)| !matches!(k.as_str(), "PMI_ID" | "PMI_RANK" | "FLUX_PMI_LIBRARY_PATH"));
    env.push(("PMI_ID".into(), rank.to_string()));
    env.push(("PMI_RANK".into(), rank.to_string()));
    env.push(("FLUX_PMI_LIBRARY_PATH".into(), library.display().to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_with_pmi_gets_the_rank_and_library_and_without_the_library_is_refused() {
        let mut env = vec![("PMI_PORT".to_string(), "10.0.0.1:5000".to_string())];
        let lib = Path::new("/x/librudel_pmi.so");
        assert_eq!(library_for(&env, Some(lib), "n1"), Ok(Some(lib)));
        add_task_env(&mut env, 3, lib);
        assert!(env.contains(&("PMI_ID".into(), "3".into())));
        assert!(env.contains(&("FLUX_PMI_LIBRARY_PATH".into(), "/x/librudel_pmi.so".into())));
        let e = library_for(&env, None, "n2").unwrap_err();
        assert!(
            e.contains("node n2 has no PMI library") && e.contains("--mpi=none"),
            "{e}"
        );
        let none = vec![("PATH".to_string(), "/bin".to_string())];
        assert_eq!(
            library_for(&none, None, "n1"),
            Ok(None),
            "a step without PMI needs no library"
        );
    }

    #[test]
    fn the_embedded_library_is_written_readable_and_exports_pmi() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = install(&dir.path().join("lib")).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF");
        assert!(
            bytes.windows(8).any(|w| w == b"PMI_Init"),
            "the library exports PMI_Init"
        );
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o755);
        // Again over the first copy (an agent restart).
        assert_eq!(install(&dir.path().join("lib")).unwrap(), p);
    }
}
