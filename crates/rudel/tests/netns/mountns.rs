//! A filesystem view of its own per test host (opt-in): a persistent mount namespace with a
//! private tmpfs on `/tmp` and on chosen directories, so a host shares no scratch files with
//! the client or other hosts, as separate machines would. The host's processes enter it with
//! `nsenter --mount=FILE` before `ip netns exec` (which copies the mount namespace it runs in).
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Out;

/// Holder of the namespaces' bind mounts: `/run/<prefix>-mnt/h<i>`. Outside `/tmp`, which
/// the namespaces hide.
pub fn holder_dir(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/run/{prefix}-mnt"))
}

fn sh(script: &str) -> Out {
    let o = Command::new("sh")
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
    Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        timed_out: false,
        elapsed: std::time::Duration::ZERO,
    }
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Creates host `host`'s mount namespace: tmpfs on `/tmp`, then on each of `dirs` (created
/// first, inside the new `/tmp` if they live there). Returns the namespace file.
pub fn create(prefix: &str, host: usize, dirs: &[PathBuf]) -> PathBuf {
    let holder = holder_dir(prefix);
    if !holder.exists() {
        std::fs::create_dir_all(&holder).unwrap_or_else(|e| panic!("cannot create {}: {e}", holder.display()));
        // `unshare --mount=FILE` needs FILE on a mount that does not propagate.
        let h = quote(&holder);
        let o = sh(&format!("mount --bind {h} {h} && mount --make-private {h}"));
        assert!(o.ok(), "cannot prepare {}: {o}", holder.display());
    }
    let file = holder.join(format!("h{host}"));
    std::fs::write(&file, b"").unwrap_or_else(|e| panic!("cannot create {}: {e}", file.display()));
    // The binary under test stays visible where it is, also when the checkout lives in
    // /tmp (a CI clone): bound aside, then moved back onto the new tmpfs. Without this
    // every agent of a private host fails with "exec ... No such file or directory".
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_rudel")).parent().map(Path::to_path_buf);
    let mut inner = String::new();
    let keep = holder.join(format!("keep-h{host}"));
    let kept = bin_dir.filter(|b| b.starts_with("/tmp"));
    if let Some(b) = &kept {
        std::fs::create_dir_all(&keep).unwrap_or_else(|e| panic!("cannot create {}: {e}", keep.display()));
        inner.push_str(&format!("mount --bind {} {} && ", quote(b), quote(&keep)));
    }
    inner.push_str("mount -t tmpfs rdl-tmp /tmp");
    if let Some(b) = &kept {
        inner.push_str(&format!(
            " && mkdir -p {b} && mount --move {k} {b}",
            b = quote(b),
            k = quote(&keep)
        ));
    }
    for d in dirs {
        let d = quote(d);
        inner.push_str(&format!(" && mkdir -p {d} && mount -t tmpfs rdl-dir {d}"));
    }
    let o = Command::new("unshare")
        .arg(format!("--mount={}", file.display()))
        .args(["--propagation", "private", "sh", "-c", &inner])
        .output()
        .unwrap_or_else(|e| panic!("cannot run unshare: {e}"));
    assert!(
        o.status.success(),
        "cannot create a mount namespace for host {host}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    file
}

/// The argv prefix that runs a command in the namespace `file`.
pub fn enter(file: &Path) -> Vec<String> {
    vec!["nsenter".into(), format!("--mount={}", file.display()), "--".into()]
}

/// Unmounts every namespace file and the holder; the namespaces (and their tmpfs) go away
/// with their last process. Also used for leftovers of crashed runs.
pub fn remove(prefix: &str) {
    let holder = holder_dir(prefix);
    if !holder.exists() {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(&holder) {
        for e in rd.flatten() {
            let _ = Command::new("umount").arg(e.path()).output();
        }
    }
    let _ = Command::new("umount").arg(&holder).output();
    let _ = std::fs::remove_dir_all(&holder);
}

/// Leftover holders `/run/rdl<pid>-mnt` whose run is gone.
pub fn remove_stale(stale: impl Fn(&str) -> bool) {
    let Ok(rd) = std::fs::read_dir("/run") else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(prefix) = name.strip_suffix("-mnt") {
            if prefix.starts_with("rdl") && stale(&format!("{prefix}-h0")) {
                eprintln!(
                    "netns harness: removing leftover mount namespaces {}",
                    e.path().display()
                );
                remove(prefix);
            }
        }
    }
}
