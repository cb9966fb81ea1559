//! Differential tests against Slurm 22.05 (README, "Differential tests against Slurm"):
//! every batch script of `tests/slurm_corpus/` runs under rudel's `sbatch` link against a
//! real rudel cluster, and what happened must be what the real Slurm did. Both sides are
//! run and normalized by the same driver, `slurm_corpus/record.py`; Slurm's results were
//! recorded with it into `slurm_corpus/expected/` and are compared here field by field.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_bounded, Cluster, Opts};
use serde_json::Value;

/// Known differences from Slurm, each a defect listed in the README: (script, or `*` for
/// all; path in the result, `*` matching one component; why). A difference not listed
/// fails the test.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "*",
        "env/*/SLURM_TOPOLOGY_ADDR",
        "topology plugin variables: rudel has no network topology",
    ),
    (
        "*",
        "env/*/SLURM_TOPOLOGY_ADDR_PATTERN",
        "topology plugin variables: rudel has no network topology",
    ),
    (
        "*",
        "env/*/SLURM_NODE_ALIASES",
        "cloud-node aliases: rudel nodes are named, not aliased",
    ),
    (
        "*",
        "env/*/SLURM_PRIO_PROCESS",
        "the submitting shell's nice value is not carried",
    ),
    (
        "*",
        "env/*/SLURM_WORKING_CLUSTER",
        "the controller's address: rudel heads are reached through RUDEL_HEAD",
    ),
    (
        "*",
        "env/*/SLURM_CONF",
        "the path of slurm.conf: rudel has none",
    ),
    ("35-refuse-two-nodes", "*", "Slurm queues -N 2 on a one-node cluster forever (PartitionNodeLimit; the recorder cancelled it); rudel refuses at submit"),
    ("37-stdin-script", "env/*/SLURM_JOB_NAME", "Slurm leaves SLURM_JOB_NAME unset for a script read from stdin; rudel sets \"sbatch\""),
];

/// How long the driver may take for the whole corpus (scripts run 12 at a time).
const CORPUS_TIMEOUT: Duration = Duration::from_secs(170);

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slurm_corpus")
}

/// One difference: where, what Slurm did, what rudel did.
#[derive(Debug, PartialEq)]
struct Difference {
    path: String,
    slurm: Value,
    rudel: Value,
}

/// Compares two results; keys starting with `_` are informational (e.g. stderr text,
/// whose wording may differ) and skipped.
fn differences(path: &str, slurm: &Value, rudel: &Value, out: &mut Vec<Difference>) {
    if path == "max_concurrent" && within_throttle(slurm, rudel) {
        return;
    }
    match (slurm, rudel) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys.into_iter().filter(|k| !k.starts_with('_')) {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}/{k}")
                };
                differences(
                    &p,
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}/{i}"), x, y, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Difference {
            path: path.to_string(),
            slurm: a.clone(),
            rudel: b.clone(),
        }),
    }
}

/// An array throttle (`%2`) is a ceiling: Slurm's recording, on an idle machine, reached
/// it; rudel shares its cpus with the eleven other scripts the driver runs at once, so on a
/// busy machine fewer tasks may overlap (once 1 against 2). More than Slurm's is a broken
/// throttle and still a difference.
fn within_throttle(slurm: &Value, rudel: &Value) -> bool {
    match (slurm.as_u64(), rudel.as_u64()) {
        (Some(limit), Some(seen)) => (1..=limit).contains(&seen),
        _ => false,
    }
}

/// Whether `pattern` (components separated by `/`, `*` = one or more components: a file
/// name may hold a `/`) names `path` or a prefix of it.
fn path_matches(pattern: &str, path: &str) -> bool {
    fn go(pat: &[&str], got: &[&str]) -> bool {
        match (pat.split_first(), got.split_first()) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((&"*", rest)), Some(_)) => (1..=got.len()).any(|n| go(rest, &got[n..])),
            (Some((p, rest)), Some((g, more))) => p == g && go(rest, more),
        }
    }
    let pat: Vec<&str> = pattern.split('/').collect();
    let got: Vec<&str> = path.split('/').collect();
    go(&pat, &got)
}

fn known(script: &str, d: &Difference) -> Option<&'static str> {
    KNOWN_DIFFERENCES
        .iter()
        .find(|(s, p, _)| (*s == "*" || script.starts_with(s)) && path_matches(p, &d.path))
        .map(|(_, _, why)| *why)
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The unexplained differences of every script, as a report (empty: none).
fn compare_all(expected_dir: &Path, actual_dir: &Path) -> (String, usize) {
    let mut report = String::new();
    let mut compared = 0;
    let mut expected: Vec<PathBuf> = std::fs::read_dir(expected_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    expected.sort();
    for exp in expected {
        let name = exp.file_name().unwrap().to_string_lossy().to_string();
        let act = actual_dir.join(&name);
        if !act.exists() {
            report.push_str(&format!("{name}: not run under rudel\n"));
            continue;
        }
        compared += 1;
        let mut diffs = Vec::new();
        differences("", &load(&exp), &load(&act), &mut diffs);
        for d in diffs.iter().filter(|d| known(&name, d).is_none()) {
            report.push_str(&format!(
                "{name}: {}\n    Slurm: {}\n    rudel: {}\n",
                d.path, d.slurm, d.rudel
            ));
        }
    }
    (report, compared)
}

/// The scripts of the corpus (driver-only halves of pairs excluded: `corpus-part-of`).
fn corpus_scripts() -> BTreeMap<String, String> {
    std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .map(|p| {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).to_string();
            (p.file_stem().unwrap().to_string_lossy().to_string(), text)
        })
        .filter(|(_, t)| !t.contains("# corpus-part-of:"))
        .collect()
}

#[test]
fn every_corpus_script_runs_under_rudel_as_under_slurm() {
    let c = Cluster::up(Opts::default().cpus(4));
    let bin = c.tmp.path().join("bin");
    c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
    // Job ids far above the array indices and values of the corpus, so that normalizing
    // ids cannot touch them (Slurm's recorded ids start above 200 too).
    let burn = c.submit(&["--hold", "--array", "0-299", "--", "true"]);
    c.rudel_ok(&["cancel", &burn.to_string()]);

    let out = c.tmp.path().join("actual");
    let mut cmd = Command::new("python3");
    cmd.arg(corpus_dir().join("record.py"))
        .args(["--bin", &bin.display().to_string(), "--out", &out.display().to_string()])
        .args(["--jobs", "12"])
        .current_dir(&c.work)
        .env("RUDEL_HEAD", &c.addr)
        .env("RUDEL_CREDENTIALS", c.admin_credentials())
        .env_remove("RUDEL_LOG");
    // The corpus was recorded from a login shell, which has these; an exported environment
    // passes through unchanged (as Slurm does), so a CI runner started without them (`env
    // -i`) would make every job differ in the submitter, not in rudel.
    for (k, default) in [("SHELL", "/bin/bash"), ("LANG", "C.UTF-8"), ("TERM", "dumb")] {
        cmd.env(k, std::env::var(k).unwrap_or_else(|_| default.into()));
    }
    let start = Instant::now();
    let o = run_bounded(cmd, CORPUS_TIMEOUT);
    assert!(o.ok(), "the corpus driver (python3 record.py) failed: {o}");
    eprintln!("corpus ran under rudel in {:?}", start.elapsed());

    let scripts = corpus_scripts();
    assert!(scripts.len() >= 25, "the corpus has {} scripts", scripts.len());
    for name in scripts.keys() {
        assert!(
            corpus_dir().join("expected").join(format!("{name}.json")).exists(),
            "{name}.sh has no recorded Slurm result: run record.py against Slurm (README)"
        );
    }
    let (report, compared) = compare_all(&corpus_dir().join("expected"), &out);
    assert_eq!(compared, scripts.len(), "{report}");
    assert!(report.is_empty(), "rudel differs from Slurm 22.05:\n{report}");
}

/// The comparison itself: a changed expectation is a failure, a known difference is not.
#[test]
fn a_violated_expectation_is_reported() {
    let exp = load(&corpus_dir().join("expected/29-exit-3.json"));
    let mut act = exp.clone();
    let mut diffs = Vec::new();
    differences("", &exp, &act, &mut diffs);
    assert!(diffs.is_empty());
    act["jobs"]["<J1>"]["exit_code"] = "0:0".into();
    act["submissions"][0]["_stderr"] = "informational".into();
    differences("", &exp, &act, &mut diffs);
    assert_eq!(
        diffs,
        [Difference {
            path: "jobs/<J1>/exit_code".into(),
            slurm: "3:0".into(),
            rudel: "0:0".into()
        }]
    );
    assert_eq!(known("29-exit-3.json", &diffs[0]), None);
    let env_diff = Difference {
        path: "env/env-<J1>.env/SLURM_CONF".into(),
        slurm: "<SITE>".into(),
        rudel: Value::Null,
    };
    assert!(known("01-default-output.json", &env_diff).is_some());
    assert!(path_matches("env/*/SLURM_CONF", "env/sub/env-<J1>.env/SLURM_CONF"));
    assert!(!path_matches("env/*/SLURM_CONF", "env/env-<J1>.env/SLURM_CONFX"));
    assert!(!path_matches("env/*/SLURM_CONF", "files/x"));
}

#[test]
fn a_throttle_may_be_met_below_its_ceiling_never_above() {
    let exp = serde_json::json!({"max_concurrent": 2});
    for (seen, differs) in [(1, false), (2, false), (3, true), (0, true)] {
        let mut diffs = Vec::new();
        differences("", &exp, &serde_json::json!({"max_concurrent": seen}), &mut diffs);
        assert_eq!(!diffs.is_empty(), differs, "{seen} tasks at once");
    }
}
