//! Faults beyond kill, pause and cut: packet loss (nftables in a host's namespace), a
//! small disk that can be filled (an ext4 image on a loop device) and a skewed wall
//! clock (libfaketime). Each fails with a clear message when the tool it needs is
//! missing, rather than letting a test pass without the fault.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Net;

/// Name of the nftables table that drops packets (one per namespace).
const LOSS_TABLE: &str = "rudel_loss";
/// Name of the nftables table that splits the network.
const SPLIT_TABLE: &str = "rudel_split";

fn run(cmd: &mut Command, what: &str) -> String {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot {what}: {e} (is the tool installed? .ci/run installs it)"));
    assert!(
        o.status.success(),
        "cannot {what}: {}{}",
        String::from_utf8_lossy(&o.stderr).trim(),
        String::from_utf8_lossy(&o.stdout).trim()
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

impl Net {
    /// Drops `percent`% of the packets host `i` receives and of those it sends, at
    /// random (nftables `numgen random` in the host's namespace).
    pub fn lossy(&self, i: usize, percent: u32) {
        assert!(percent <= 100, "a loss rate is a percentage");
        let rules = format!(
            "table inet {LOSS_TABLE} {{\n\
             chain in {{ type filter hook input priority 0; numgen random mod 100 < {percent} drop; }}\n\
             chain out {{ type filter hook output priority 0; numgen random mod 100 < {percent} drop; }}\n\
             }}\n"
        );
        self.nft(i, &rules, "make the host lose packets");
    }

    /// Splits the network in two: hosts in `a` no longer exchange packets with hosts in
    /// `b` (nftables in each of their namespaces). Hosts in neither, and the root
    /// namespace (the test's clients), still reach both sides.
    pub fn split(&self, a: &[usize], b: &[usize]) {
        for (side, other) in [(a, b), (b, a)] {
            let ips: Vec<String> = other.iter().map(|&h| self.ip(h)).collect();
            let set = ips.join(", ");
            let rules = format!(
                "table inet {SPLIT_TABLE} {{\n\
                 chain in {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n\
                 chain out {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n\
                 }}\n"
            );
            for &h in side {
                self.nft(h, &rules, "split the network");
            }
        }
    }

    /// Ends [`Net::split`] for the hosts given.
    pub fn unsplit(&self, hosts: &[usize]) {
        for &h in hosts {
            self.drop_table(h, SPLIT_TABLE, "remove the network split");
        }
    }

    fn drop_table(&self, i: usize, table: &str, what: &str) {
        let ns = self.ns(i);
        run(
            Command::new("ip").args(["netns", "exec", &ns, "nft", "delete", "table", "inet", table]),
            what,
        );
    }

    fn nft(&self, i: usize, rules: &str, what: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nft in host {i} to {what}: {e} (install nftables)"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(rules.as_bytes()).expect("write nft rules");
        }
        let o = child.wait_with_output().expect("nft");
        assert!(
            o.status.success(),
            "cannot {what} in host {i} with nft (nftables installed? kernel nf_tables?): {}\n{rules}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }

    /// Ends [`Net::lossy`] on host `i`.
    pub fn lossless(&self, i: usize) {
        self.drop_table(i, LOSS_TABLE, "remove the packet-loss rules");
    }
}

/// A small ext4 file system (an image file on a loop device) mounted at a directory, so
/// a test can fill it. Unmounted (lazily, in case a process still has files open) and its
/// image removed on drop.
pub struct SmallDisk {
    pub dir: PathBuf,
    image: PathBuf,
    mounted: bool,
}

impl SmallDisk {
    /// Creates a `mb` MiB file system in `image` and mounts it at `dir` (created).
    pub fn new(image: &Path, dir: &Path, mb: u64) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mount point");
        let f = std::fs::File::create(image).expect("disk image");
        f.set_len(mb << 20).expect("size the disk image");
        drop(f);
        let mut disk = SmallDisk {
            dir: dir.to_path_buf(),
            image: image.to_path_buf(),
            mounted: false,
        };
        run(
            Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(image),
            "make a small file system (mkfs.ext4, from e2fsprogs)",
        );
        run(
            Command::new("mount").args(["-o", "loop"]).arg(image).arg(dir),
            "loop-mount a small file system (needs root and loop devices)",
        );
        disk.mounted = true;
        disk
    }

    /// Fills the file system until a write fails with "no space left"; returns how many
    /// bytes the filler took. [`SmallDisk::free`] removes it.
    pub fn fill(&self) -> u64 {
        let path = self.filler();
        let mut f = std::fs::File::create(&path).expect("filler file");
        let block = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", self.dir.display()),
            }
        }
        // Flush what the page cache holds: only then is the disk really full.
        let _ = f.sync_all();
        written
    }

    /// Removes the filler.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            let o = Command::new("umount").arg("-l").arg(&self.dir).output();
            if !o.as_ref().is_ok_and(|o| o.status.success()) {
                eprintln!("netns harness: cannot unmount {}: {o:?}", self.dir.display());
            }
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Unmounts (lazily) every file system mounted under `dir`: the small disks of a run
/// that crashed before it could drop them.
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let Some(point) = line.split_whitespace().nth(1) else {
            continue;
        };
        if Path::new(point).starts_with(dir) {
            eprintln!("netns harness: unmounting leftover {point}");
            let _ = Command::new("umount").arg("-l").arg(point).output();
        }
    }
}
