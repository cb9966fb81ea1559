//! A private `/tmp` per task (`rudel agent --private-tmp`), like Slurm's
//! `job_container/tmpfs`: the task runs in its own mount namespace where a fresh directory
//! of the agent's is bind-mounted on `/tmp`, and the directory is removed when the task
//! ends. Jobs then cannot read each other's temporary files, cannot fill the node's `/tmp`
//! beyond their own directory's lifetime, and leave nothing behind.
//!
//! The namespace itself is made by the spawned child (see `vspawn.rs`): here are the
//! directory's life and the checks. Only an agent running as root can make mount
//! namespaces, so the option is refused otherwise.
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rudel_core::TaskKey;

/// The directory under `base` that becomes `/tmp` for one task attempt.
pub(crate) fn dir_for(base: &Path, key: TaskKey, attempt: u32) -> PathBuf {
    base.join(format!("{}.{}.{attempt}", key.job, key.index))
}

/// Creates the task's directory, fresh, with `/tmp`'s mode (1777: every user may create
/// files, only their owner may remove them).
pub(crate) fn prepare(base: &Path, key: TaskKey, attempt: u32) -> io::Result<PathBuf> {
    let dir = dir_for(base, key, attempt);
    // A leftover of an attempt that was never cleaned (the agent crashed): start empty.
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))?;
    Ok(dir)
}

/// Removes a task's directory and everything in it (or a stray file). `remove_dir_all`
/// does not follow symbolic links, so a link a job left pointing elsewhere removes only
/// the link.
pub(crate) fn remove(dir: &Path) {
    let is_dir = std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
    let removed = if is_dir {
        std::fs::remove_dir_all(dir)
    } else {
        std::fs::remove_file(dir)
    };
    if let Err(e) = removed {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a task's private /tmp");
        }
    }
}

/// Empties `base` at agent start: the tasks of an earlier agent process were reaped
/// (see `journal::reap_orphans`), so nothing uses what they left.
pub fn clear(base: &Path) -> io::Result<()> {
    match std::fs::read_dir(base) {
        Ok(entries) => {
            for e in entries.flatten() {
                remove(&e.path());
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(base)?;
            std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_directory_is_fresh_world_writable_and_removed_whole() {
        let base = tempfile::tempdir().unwrap();
        let key = TaskKey { job: 7, index: 2 };
        let dir = prepare(base.path(), key, 1).unwrap();
        assert_eq!(dir, base.path().join("7.2.1"));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777);
        std::fs::write(dir.join("left"), "x").unwrap();
        let again = prepare(base.path(), key, 1).unwrap();
        assert!(!again.join("left").exists(), "a leftover is emptied");
        // A link to a file outside is removed, not followed.
        let outside = base.path().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, again.join("link")).unwrap();
        remove(&again);
        assert!(!again.exists());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        clear(base.path()).unwrap();
        assert!(!outside.exists(), "clear empties the base");
    }
}
