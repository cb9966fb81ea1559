//! A real MPI program across three network hosts inside a rudel allocation (issue 11):
//! Debian's Open MPI, a C program built with `mpicc` here, started by `mpirun` from the
//! batch script. `mpirun` finds the allocation through Slurm's variables and starts its
//! daemons (`orted`) with `srun`, which rudel serves through the agents: no ssh anywhere
//! (docs/parallel-jobs.md says why this path). Each host has its own `/tmp` and work
//! directory; the program and the results live in a directory outside `/tmp` that every
//! host sees, as a shared software and home file system would be on a real cluster.
//!
//! Ground truth is what each rank prints: its rank, the job size, the allreduce of all
//! ranks and the IPv4 address of its host's `eth0` (the hosts share a hostname, not an
//! address). Needs root, network namespaces and Open MPI (`.ci/run` installs it).
mod common;
mod netns;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use netns::{Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(120);

const HELLO: &str = r#"
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <mpi.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The IPv4 address of eth0: which host this rank runs on. */
static void eth0(char *out, size_t n) {
    struct ifaddrs *ifs, *i;
    snprintf(out, n, "none");
    if (getifaddrs(&ifs) != 0) return;
    for (i = ifs; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && strcmp(i->ifa_name, "eth0") == 0)
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, out, n);
    freeifaddrs(ifs);
}

int main(int argc, char **argv) {
    int rank, size, sum = 0;
    char ip[64];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    eth0(ip, sizeof ip);
    printf("rank %d size %d sum %d ip %s\n", rank, size, sum, ip);
    fflush(stdout);
    /* A rank asked to die takes the whole job down (checked by the test). */
    if (argc > 1 && atoi(argv[1]) == rank) {
        sleep(1);
        abort();
    }
    if (argc > 1) sleep(60);
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    return 0;
}
"#;

/// A directory every host sees (outside `/tmp`), removed when dropped.
struct Shared(PathBuf);

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the MPI program into a fresh shared directory of test `tag`.
fn build(tag: &str) -> Shared {
    let dir = Shared(PathBuf::from(format!(
        "/var/tmp/rudel-mpi-{}-{tag}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("hello.c"), HELLO).unwrap();
    // Both MPIs by their own compiler wrappers (`mpicc` is whichever the alternatives
    // system picked): Open MPI's `hello`, MPICH's `hello_mpich`.
    for (cc, out, pkg) in [
        ("mpicc.openmpi", "hello", "libopenmpi-dev"),
        ("mpicc.mpich", "hello_mpich", "libmpich-dev"),
    ] {
        let o = Command::new(cc)
            .arg("-o")
            .arg(dir.0.join(out))
            .arg(dir.0.join("hello.c"))
            .output()
            .unwrap_or_else(|e| panic!("{cc} (Debian's {pkg}, installed by .ci/run) is needed: {e}"));
        assert!(
            o.status.success(),
            "{cc} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    dir
}

/// Open MPI settings for the test hosts: TCP between hosts over `eth0` (the loopback of
/// each namespace is its own), and running as root, which the suite does.
const OMPI_ENV: &str = "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    OMPI_MCA_btl=self,tcp OMPI_MCA_pml=ob1 OMPI_MCA_btl_tcp_if_include=eth0 \
    OMPI_MCA_oob_tcp_if_include=eth0 OMPI_MCA_plm=slurm OMPI_MCA_ras=slurm";

/// For ranks srun starts itself: only the choice of `eth0` between hosts. Ranks on one
/// host talk through shared memory (each test host has its own `/dev/shm`).
const DIRECT_ENV: &str = "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    OMPI_MCA_btl_tcp_if_include=eth0 OMPI_MCA_oob_tcp_if_include=eth0";

/// The ranks' lines, sorted.
fn rank_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("rank "))
        .map(String::from)
        .collect();
    v.sort();
    v
}

fn submit_script(cl: &Cluster, shared: &Path, name: &str, body: &str) -> u64 {
    submit_shaped(cl, shared, name, "-N 3 --ntasks-per-node 1", OMPI_ENV, body)
}

fn submit_shaped(cl: &Cluster, shared: &Path, name: &str, shape: &str, env: &str, body: &str) -> u64 {
    let script = shared.join(name);
    std::fs::write(&script, format!("#!/bin/sh\n#SBATCH {shape}\n{env}\n{body}\n")).unwrap();
    cl.submit(&[&script.display().to_string()])
}

/// The output file `name` of the shared directory ("" if absent).
fn read(shared: &Shared, name: &str) -> String {
    std::fs::read_to_string(shared.0.join(name)).unwrap_or_default()
}

/// `(rank, size, sum, ip)` of each rank line, by rank.
fn ranks_of(text: &str) -> Vec<(u32, u32, u32, String)> {
    let mut v: Vec<(u32, u32, u32, String)> = text
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["rank", r, "size", s, "sum", m, "ip", ip] => {
                    Some((r.parse().ok()?, s.parse().ok()?, m.parse().ok()?, ip.to_string()))
                }
                _ => None,
            }
        })
        .collect();
    v.sort();
    v
}

/// Asserts the 6 ranks of a `-N 3 -n 6` step: each saw size 6 and the sum 0+..+5, and
/// ranks 2h and 2h+1 share host h's address, a different one per pair.
fn assert_six_ranks_two_per_host(cl: &Cluster, what: &str, out: &str, err: &str) {
    let ranks = ranks_of(out);
    let shape: Vec<(u32, u32, u32)> = ranks.iter().map(|r| (r.0, r.1, r.2)).collect();
    let want: Vec<(u32, u32, u32)> = (0..6).map(|r| (r, 6, 15)).collect();
    assert_eq!(shape, want, "{what}: out: {out}\nerr: {err}");
    let mut pairs: Vec<String> = ranks
        .chunks(2)
        .map(|p| {
            assert_eq!(
                p[0].3, p[1].3,
                "{what}: ranks {} and {} on one host: {out}",
                p[0].0, p[1].0
            );
            p[0].3.clone()
        })
        .collect();
    pairs.sort();
    let mut hosts: Vec<String> = (1..=3).map(|h| cl.net.ip(h)).collect();
    hosts.sort();
    assert_eq!(pairs, hosts, "{what}: two ranks on each host: {out}");
}

/// The program built for test `tag`, and three agent hosts with the Slurm commands in the
/// shared directory's `bin`.
fn setup(tag: &str) -> (Shared, Cluster) {
    // Agents write the PMI library (embedded in rudel) into their data directories.
    let shared = build(tag);
    let cl = Cluster::start_private_fs(ClusterOpts {
        agents: 3,
        cpus: 2,
        node_timeout: Some("3s".into()),
    });
    let bin = shared.0.join("bin");
    cl.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
    (shared, cl)
}

#[test]
fn mpirun_in_a_batch_script_starts_its_ranks_on_every_host_through_srun() {
    let (shared, cl) = setup("hello");
    let d = shared.0.display();
    let body = format!(
        "export PATH={d}/bin:$PATH\n\
         mpirun.openmpi {d}/hello > {d}/mpirun.out 2> {d}/mpirun.err; echo \"exit=$?\" >> {d}/mpirun.out\n\
         srun --mpi=none {d}/hello > {d}/srun.out 2> {d}/srun.err; echo \"exit=$?\" >> {d}/srun.out"
    );
    let id = submit_script(&cl, &shared.0, "mpirun.sh", &body);
    let v = cl.wait_finished(id, WAIT);
    let out = std::fs::read_to_string(shared.0.join("mpirun.out")).unwrap_or_default();
    let err = std::fs::read_to_string(shared.0.join("mpirun.err")).unwrap_or_default();
    assert_eq!(v["state"], "completed", "{v}\nout: {out}\nerr: {err}");
    // One rank per host: ranks 0-2, each saw size 3 and the sum 0+1+2, on three hosts.
    let lines = rank_lines(&out);
    let ranks: Vec<String> = lines
        .iter()
        .map(|l| l.split(" ip ").next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        ranks,
        vec!["rank 0 size 3 sum 3", "rank 1 size 3 sum 3", "rank 2 size 3 sum 3"],
        "out: {out}\nerr: {err}"
    );
    let mut ips: Vec<String> = lines
        .iter()
        .filter_map(|l| l.split(" ip ").nth(1))
        .map(String::from)
        .collect();
    ips.sort();
    let mut hosts: Vec<String> = (1..=3).map(|h| cl.net.ip(h)).collect();
    hosts.sort();
    assert_eq!(ips, hosts, "one rank on each host: {out}");
    assert!(out.contains("exit=0"), "{out}\n{err}");
    let sout = std::fs::read_to_string(shared.0.join("srun.out")).unwrap_or_default();
    let serr = std::fs::read_to_string(shared.0.join("srun.err")).unwrap_or_default();
    // Direct launch without PMI (--mpi=none): Open MPI itself refuses, loudly, rather
    // than running three singletons of size 1.
    assert!(!sout.contains("exit=0") && !sout.contains("size 1"), "{sout}\n{serr}");
    assert!(serr.contains("direct launched"), "{serr}");
}

#[test]
fn srun_starts_open_mpi_and_mpich_ranks_itself_through_its_pmi_server() {
    let (shared, cl) = setup("direct");
    let d = shared.0.display();
    let body = format!(
        "export PATH={d}/bin:$PATH\n\
         srun {d}/hello > {d}/ompi.out 2> {d}/ompi.err; echo \"exit=$?\" >> {d}/ompi.out\n\
         srun --mpi=pmi1 {d}/hello_mpich > {d}/mpich.out 2> {d}/mpich.err; echo \"exit=$?\" >> {d}/mpich.out"
    );
    let id = submit_shaped(&cl, &shared.0, "direct.sh", "-N 3 -n 6", DIRECT_ENV, &body);
    let v = cl.wait_finished(id, WAIT);
    let (out, err) = (read(&shared, "ompi.out"), read(&shared, "ompi.err"));
    assert_eq!(v["state"], "completed", "{v}\nout: {out}\nerr: {err}");
    assert_six_ranks_two_per_host(&cl, "Open MPI", &out, &err);
    assert!(out.contains("exit=0"), "{out}\n{err}");
    let (out, err) = (read(&shared, "mpich.out"), read(&shared, "mpich.err"));
    assert_six_ranks_two_per_host(&cl, "MPICH", &out, &err);
    assert!(out.contains("exit=0"), "{out}\n{err}");
}

#[test]
fn a_rank_that_dies_takes_the_job_down_and_leaves_nothing_behind() {
    let (shared, cl) = setup("abort");
    let d = shared.0.display();
    // Rank 2 aborts after the allreduce; the others would wait 60 s.
    let body = format!(
        "export PATH={d}/bin:$PATH\n\
         date +%s > {d}/start\n\
         mpirun.openmpi {d}/hello 2 > {d}/abort.out 2> {d}/abort.err; echo \"exit=$?\" >> {d}/abort.out\n\
         date +%s > {d}/end\n\
         srun {d}/hello 2 > {d}/direct.out 2> {d}/direct.err; echo \"exit=$?\" >> {d}/direct.out\n\
         date +%s > {d}/direct.end"
    );
    let id = submit_script(&cl, &shared.0, "abort.sh", &body);
    let v = cl.wait_finished(id, WAIT);
    let out = std::fs::read_to_string(shared.0.join("abort.out")).unwrap_or_default();
    let err = std::fs::read_to_string(shared.0.join("abort.err")).unwrap_or_default();
    assert_eq!(v["state"], "completed", "{v}\n{out}\n{err}");
    assert_eq!(rank_lines(&out).len(), 3, "{out}\n{err}");
    assert!(!out.contains("exit=0"), "mpirun must fail: {out}\n{err}");
    let secs = |f: &str| -> u64 {
        std::fs::read_to_string(shared.0.join(f))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let took = secs("end").saturating_sub(secs("start"));
    assert!(
        took < 30,
        "the job took {took} s after rank 2 died (the others sleep 60 s)"
    );
    // Started by srun itself: the dead rank's PMI connection closes without finalize,
    // and srun kills the step.
    let (dout, derr) = (read(&shared, "direct.out"), read(&shared, "direct.err"));
    assert_eq!(rank_lines(&dout).len(), 3, "{dout}\n{derr}");
    assert!(!dout.contains("exit=0"), "srun must fail: {dout}\n{derr}");
    assert!(
        derr.contains("task 2: ") && derr.contains("without PMI_Finalize"),
        "{derr}"
    );
    let took = secs("direct.end").saturating_sub(secs("end"));
    assert!(
        took < 30,
        "srun took {took} s after rank 2 died (the others sleep 60 s)"
    );
    // No orted or rank left on any host.
    for host in 1..=3 {
        let left: Vec<_> = cl
            .net
            .procs_in(host)
            .into_iter()
            .filter(|p| p.cmdline.contains("orted") || p.cmdline.contains("hello"))
            .map(|p| p.cmdline)
            .collect();
        assert!(left.is_empty(), "host {host} still runs {left:?}");
    }
}
