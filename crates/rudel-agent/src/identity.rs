//! Who this agent is: its node name, the persistent uid of its data directory, the id of
//! this process's life, and what the machine offers.
use std::path::Path;

use rand::Rng;

/// A random 128-bit id in hex.
pub fn random_id() -> String {
    let v: u128 = rand::thread_rng().gen();
    format!("{v:032x}")
}

/// The uid kept in `dir/uid`, created on first use. A wiped data directory gets a new uid,
/// which tells the head the node's old tasks are gone.
pub fn load_or_create_uid(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("uid");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = random_id();
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

/// Takes an exclusive `flock` on `dir/LOCK` so two agents never share one journal. The
/// lock lives as long as the returned file.
pub fn lock_data_dir(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("LOCK"))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            std::io::Error::other("another rudel agent is using this data directory; stop it or pass another --data")
        } else {
            e
        });
    }
    Ok(file)
}

/// The machine's host name (the default node name).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// NVIDIA GPUs visible on this machine: the `/dev/nvidiaN` device nodes under `dev`.
pub fn nvidia_gpus(dev: &Path) -> u32 {
    let Ok(entries) = std::fs::read_dir(dev) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("nvidia")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u32
}

/// Generic resources detected on this machine: NVIDIA GPUs (`/dev/nvidiaN`) as `gpu`.
pub fn detected_gres() -> Vec<(String, u32)> {
    let n = nvidia_gpus(Path::new("/dev"));
    if n == 0 {
        return Vec::new();
    }
    vec![("gpu".into(), n)]
}

/// Labels describing detected hardware: `gpu` and `gpus=N` when GPUs are present.
pub fn hardware_labels() -> Vec<(String, String)> {
    let n = nvidia_gpus(Path::new("/dev"));
    if n == 0 {
        return Vec::new();
    }
    vec![("gpu".into(), String::new()), ("gpus".into(), n.to_string())]
}

/// Cpus this process may use (its affinity mask), at least 1.
pub fn available_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Total physical memory in bytes (from /proc/meminfo), 0 if unknown.
pub fn total_memory() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/meminfo") else {
        return 0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_is_stable_per_directory() {
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create_uid(d.path()).unwrap();
        let b = load_or_create_uid(d.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create_uid(other.path()).unwrap(), a);
    }

    #[test]
    fn machine_facts_are_sane() {
        assert!(available_cpus() >= 1);
        assert!(total_memory() > 64 << 20);
        assert!(!hostname().is_empty());
    }
}

#[cfg(test)]
mod gpu_tests {
    use super::*;

    #[test]
    fn counts_nvidia_device_nodes_only() {
        let d = tempfile::tempdir().unwrap();
        for f in ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "null"] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        assert_eq!(nvidia_gpus(d.path()), 2);
        assert_eq!(nvidia_gpus(&d.path().join("missing")), 0);
    }
}
