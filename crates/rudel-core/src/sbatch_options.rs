//! The sbatch option table: every option of Slurm 22.05's `man sbatch`, with what rudel
//! does with it and why. The one source of truth: `script` translates `#SBATCH` lines and
//! sbatch's command line through it, and `docs/sbatch-options.md` is generated from it
//! (a test fails when the two disagree; `UPDATE_DOCS=1 cargo test -p rudel-core
//! sbatch_options` rewrites the file).
//!
//! "Never succeed silently": an option is implemented, or refused with a reason, or
//! ignored with a warning — the last only when it cannot change what runs, where, with
//! what resources or where its output goes (a job that ran without its GPU or its
//! dependency looks done but is not).

/// Whether an option takes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// A flag.
    Flag,
    /// Needs a value (`--opt=v`, `--opt v`, `-Xv`, `-X v`).
    Value,
    /// Takes a value only as `--opt=v`, like getopt's optional arguments.
    Optional,
}

/// What rudel does with an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Treatment {
    /// Implemented: emitted as this rudel option (with the value if it has one).
    Map(&'static str),
    /// `--nice[=N]`: rudel priority -N (Slurm's default adjustment is 100).
    Nice,
    /// `--open-mode=append|truncate`.
    OpenMode,
    /// `--signal=B:SIG@TIME`, checked here so that a refused form names its line.
    Signal,
    /// Handled by `sbatch` itself on its command line (how it submits or what it
    /// prints); in an `#SBATCH` line it is refused, except `--parsable`, ignored with a
    /// warning there.
    Client,
    /// Cannot change what runs: accepted with a warning.
    Ignore,
    /// Would change what runs, where or how: refused.
    Refuse,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct SbatchOption {
    /// The long name, without `--`.
    pub long: &'static str,
    /// The short letter, if any.
    pub short: Option<char>,
    pub arity: Arity,
    pub treatment: Treatment,
    /// Why, and for refused options what to do instead.
    pub why: &'static str,
}

const NOT_YET: &str = "not supported by rudel yet";
const PARALLEL: &str = "task layout and per-node options of parallel jobs are not supported yet (issue 11)";
const SAME: &str = "as in Slurm";
const ALLOC: &str = "as in Slurm: all nodes granted at once; the script runs on the first (srun steps: issue 11)";

const fn opt(
    long: &'static str,
    short: Option<char>,
    arity: Arity,
    treatment: Treatment,
    why: &'static str,
) -> SbatchOption {
    SbatchOption {
        long,
        short,
        arity,
        treatment,
        why,
    }
}

use Arity::{Flag, Optional, Value};
use Treatment::{Client, Ignore, Map, Nice, OpenMode, Refuse, Signal};

/// Every sbatch option of Slurm 22.05 (and a few of later releases, marked), by long name.
pub static OPTIONS: &[SbatchOption] = &[
    opt(
        "account",
        Some('A'),
        Value,
        Map("--account"),
        "as in Slurm: the job is charged to this account and held to its limits; it must be one \
         of the user's once an admin declares accounts (`account.NAME=users=...`)",
    ),
    opt("acctg-freq", None, Value, Ignore, "rudel samples usage at its own rate"),
    opt("array", Some('a'), Value, Map("--array"), SAME),
    opt("batch", None, Value, Refuse, NOT_YET),
    opt("bb", None, Value, Refuse, "rudel has no burst buffers"),
    opt("bbf", None, Value, Refuse, "rudel has no burst buffers"),
    opt("begin", Some('b'), Value, Map("--begin"), SAME),
    opt(
        "burst-buffer",
        None,
        Value,
        Refuse,
        "rudel has no burst buffers (not in 22.05)",
    ),
    opt("chdir", Some('D'), Value, Map("--chdir"), SAME),
    opt("cluster", None, Value, Refuse, "rudel runs one cluster"),
    opt("cluster-constraint", None, Value, Refuse, "rudel runs one cluster"),
    opt("clusters", Some('M'), Value, Refuse, "rudel runs one cluster"),
    opt("comment", None, Value, Ignore, "a note for accounting only"),
    opt("constraint", Some('C'), Value, Map("--constraint"), SAME),
    opt("container", None, Value, Refuse, NOT_YET),
    opt(
        "container-id",
        None,
        Value,
        Refuse,
        "not supported by rudel yet (not in 22.05)",
    ),
    opt("contiguous", None, Flag, Refuse, PARALLEL),
    opt("core-spec", Some('S'), Value, Refuse, NOT_YET),
    opt("cores-per-socket", None, Value, Refuse, NOT_YET),
    opt("cpu-freq", None, Value, Refuse, NOT_YET),
    opt("cpus-per-gpu", None, Value, Refuse, PARALLEL),
    opt("cpus-per-task", Some('c'), Value, Map("--cpus"), SAME),
    opt("deadline", None, Value, Refuse, NOT_YET),
    opt("delay-boot", None, Value, Refuse, "rudel does not reboot nodes"),
    opt("dependency", Some('d'), Value, Map("--dependency"), SAME),
    opt("distribution", Some('m'), Value, Refuse, PARALLEL),
    opt("error", Some('e'), Value, Map("--error"), SAME),
    opt("exclude", Some('x'), Value, Map("--exclude"), SAME),
    opt(
        "exclusive",
        None,
        Optional,
        Map("--exclusive"),
        "whole nodes; =user and =mcs are refused",
    ),
    opt("export", None, Value, Map("--export"), SAME),
    opt("export-file", None, Value, Refuse, NOT_YET),
    opt(
        "extra",
        None,
        Value,
        Refuse,
        "not supported by rudel yet (not in 22.05)",
    ),
    opt("extra-node-info", Some('B'), Value, Refuse, NOT_YET),
    opt("get-user-env", None, Optional, Refuse, NOT_YET),
    opt("gid", None, Value, Refuse, "jobs run as the submitting user"),
    opt("gpu-bind", None, Value, Refuse, PARALLEL),
    opt("gpu-freq", None, Value, Refuse, NOT_YET),
    opt("gpus", Some('G'), Value, Map("--gpus"), SAME),
    opt("gpus-per-node", None, Value, Refuse, PARALLEL),
    opt("gpus-per-socket", None, Value, Refuse, PARALLEL),
    opt(
        "gpus-per-task",
        None,
        Value,
        Map("--gpus"),
        "one task per job: the same as --gpus",
    ),
    opt("gres", None, Value, Map("--gres"), SAME),
    opt("gres-flags", None, Value, Refuse, NOT_YET),
    opt("help", Some('h'), Flag, Client, "prints sbatch's usage"),
    opt("hint", None, Value, Refuse, NOT_YET),
    opt("hold", Some('H'), Flag, Map("--hold"), SAME),
    opt("ignore-pbs", None, Optional, Refuse, NOT_YET),
    opt("input", Some('i'), Value, Refuse, NOT_YET),
    opt("job-name", Some('J'), Value, Map("--name"), SAME),
    opt("kill-on-invalid-dep", None, Value, Map("--kill-on-invalid-dep"), SAME),
    opt("licenses", Some('L'), Value, Map("--licenses"), SAME),
    opt(
        "mail-type",
        None,
        Value,
        Ignore,
        "rudel sends no mail; `rudel events` reports job ends",
    ),
    opt("mail-user", None, Value, Ignore, "rudel sends no mail"),
    opt("mcs-label", None, Value, Refuse, NOT_YET),
    opt("mem", None, Value, Map("--mem"), SAME),
    opt("mem-bind", None, Value, Refuse, NOT_YET),
    opt("mem-per-cpu", None, Value, Map("--mem-per-cpu"), SAME),
    opt("mem-per-gpu", None, Value, Refuse, PARALLEL),
    opt("mincpus", None, Value, Refuse, NOT_YET),
    opt("network", None, Value, Refuse, NOT_YET),
    opt("nice", None, Optional, Nice, "rudel priority -N"),
    opt("no-kill", Some('k'), Flag, Refuse, PARALLEL),
    opt("no-requeue", None, Flag, Map("--no-requeue"), SAME),
    opt("nodefile", Some('F'), Value, Refuse, PARALLEL),
    opt("nodelist", Some('w'), Value, Map("--nodelist"), SAME),
    opt("nodes", Some('N'), Value, Map("--nodes"), ALLOC),
    opt("ntasks", Some('n'), Value, Map("--ntasks"), ALLOC),
    opt("ntasks-per-core", None, Value, Refuse, PARALLEL),
    opt("ntasks-per-gpu", None, Value, Refuse, PARALLEL),
    opt("ntasks-per-node", None, Value, Map("--ntasks-per-node"), ALLOC),
    opt("ntasks-per-socket", None, Value, Refuse, PARALLEL),
    opt("open-mode", None, Value, OpenMode, "append or truncate"),
    opt("output", Some('o'), Value, Map("--output"), SAME),
    opt("overcommit", Some('O'), Flag, Refuse, NOT_YET),
    opt("oversubscribe", Some('s'), Flag, Refuse, NOT_YET),
    opt("parsable", None, Flag, Client, "prints the job id alone"),
    opt("partition", Some('p'), Value, Map("--partition"), SAME),
    opt("power", None, Value, Refuse, NOT_YET),
    opt("prefer", None, Value, Refuse, NOT_YET),
    opt("priority", None, Value, Map("--priority"), SAME),
    opt("profile", None, Value, Ignore, "rudel records usage per task anyway"),
    opt("propagate", None, Optional, Refuse, NOT_YET),
    opt("qos", Some('q'), Value, Refuse, "rudel has no QOS yet"),
    opt(
        "quiet",
        Some('Q'),
        Flag,
        Ignore,
        "sbatch prints nothing but the job id or errors anyway",
    ),
    opt("reboot", None, Flag, Refuse, "rudel does not reboot nodes"),
    opt("requeue", None, Flag, Map("--requeue"), SAME),
    opt("reservation", None, Value, Refuse, "rudel has no reservations yet"),
    opt(
        "signal",
        None,
        Value,
        Signal,
        "B:SIG@TIME only: the batch shell is the job",
    ),
    opt("sockets-per-node", None, Value, Refuse, NOT_YET),
    opt("spread-job", None, Flag, Refuse, PARALLEL),
    opt("switches", None, Value, Refuse, PARALLEL),
    opt(
        "test-only",
        None,
        Flag,
        Client,
        "as in Slurm: nothing is submitted; says when and on which nodes the job would start, counting the running work (ending at its time limits), not the waiting jobs",
    ),
    opt("thread-spec", None, Value, Refuse, NOT_YET),
    opt("threads-per-core", None, Value, Refuse, NOT_YET),
    opt("time", Some('t'), Value, Map("--time"), SAME),
    opt("time-min", None, Value, Refuse, NOT_YET),
    opt("tmp", None, Value, Refuse, NOT_YET),
    opt(
        "tres-bind",
        None,
        Value,
        Refuse,
        "multi-node and multi-task jobs are not supported yet (not in 22.05)",
    ),
    opt(
        "tres-per-task",
        None,
        Value,
        Refuse,
        "multi-node and multi-task jobs are not supported yet (not in 22.05)",
    ),
    opt(
        "uid",
        None,
        Value,
        Map("--user"),
        "admins only (root through the socket, or an admin certificate): the job is the named user's, as Slurm lets root submit for a user; refused for others by the head",
    ),
    opt("usage", None, Flag, Client, "prints sbatch's usage"),
    opt("use-min-nodes", None, Flag, Refuse, PARALLEL),
    opt("verbose", Some('v'), Flag, Ignore, "only sbatch's own chatter"),
    opt("version", Some('V'), Flag, Client, "prints the version"),
    opt(
        "wait",
        Some('W'),
        Flag,
        Client,
        "waits for the job and exits with its code",
    ),
    opt("wait-all-nodes", None, Value, Refuse, PARALLEL),
    opt("wckey", None, Value, Ignore, "a note for accounting only"),
    opt("wrap", None, Value, Client, "submits the command in a /bin/sh script"),
];

/// The row of `--NAME`.
pub fn by_long(name: &str) -> Option<&'static SbatchOption> {
    OPTIONS.iter().find(|o| o.long == name)
}

/// The row of `-C`.
pub fn by_short(c: char) -> Option<&'static SbatchOption> {
    OPTIONS.iter().find(|o| o.short == Some(c))
}

impl SbatchOption {
    /// How the option is written in the table: `-J, --job-name=VALUE`.
    pub fn spelled(&self) -> String {
        let long = match self.arity {
            Arity::Flag => format!("--{}", self.long),
            Arity::Value => format!("--{}=V", self.long),
            Arity::Optional => format!("--{}[=V]", self.long),
        };
        match self.short {
            Some(c) => format!("-{c}, {long}"),
            None => long,
        }
    }

    /// What rudel does, in words.
    pub fn treatment_text(&self) -> String {
        match self.treatment {
            Map(o) => format!("implemented (`{o}`)"),
            Nice => "implemented (`--priority`)".into(),
            OpenMode | Signal => "implemented".into(),
            Client => "sbatch itself (refused in `#SBATCH` lines)".into(),
            Ignore => "ignored with a warning".into(),
            Refuse => "refused".into(),
        }
    }
}

/// `docs/sbatch-options.md`.
pub fn markdown() -> String {
    let mut s = String::from(
        "# sbatch options in rudel\n\n\
         Generated from `crates/rudel-core/src/sbatch_options.rs` (the table `sbatch` and `#SBATCH`\n\
         lines are translated through); a test fails when this file and the code disagree.\n\
         Regenerate with `UPDATE_DOCS=1 cargo test -p rudel-core sbatch_options`.\n\n\
         Every option of Slurm 22.05's `man sbatch` is implemented, refused with a clear error, or\n\
         ignored with a warning (only options that cannot change what runs, where, with what resources\n\
         or where output goes). `--parsable` in an `#SBATCH` line is ignored with a warning.\n\n\
         | option | rudel | why |\n|---|---|---|\n",
    );
    for o in OPTIONS {
        s.push_str(&format!(
            "| `{}` | {} | {} |\n",
            o.spelled(),
            o.treatment_text(),
            o.why.replace('|', "\\|")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{directives, translate_options, ScriptError};

    /// The options of Slurm 22.05's `man sbatch` (OPTIONS section of slurm-client 22.05.8).
    const MAN_SBATCH_22_05: &str = "acctg-freq batch bb bbf cluster-constraint comment container contiguous \
        cores-per-socket cpu-freq cpus-per-gpu deadline delay-boot exclusive export export-file get-user-env gid \
        gpu-bind gpu-freq gpus-per-node gpus-per-socket gpus-per-task gres gres-flags hint ignore-pbs \
        kill-on-invalid-dep mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu mincpus network \
        nice no-requeue ntasks-per-core ntasks-per-gpu ntasks-per-node ntasks-per-socket open-mode parsable power \
        prefer priority profile propagate reboot requeue reservation signal sockets-per-node spread-job switches \
        test-only thread-spec threads-per-core time-min tmp uid usage use-min-nodes wait-all-nodes wckey wrap \
        A:account B:extra-node-info C:constraint D:chdir F:nodefile G:gpus H:hold J:job-name L:licenses \
        M:clusters N:nodes O:overcommit Q:quiet S:core-spec V:version W:wait a:array b:begin c:cpus-per-task \
        d:dependency e:error h:help i:input k:no-kill m:distribution n:ntasks o:output p:partition q:qos \
        s:oversubscribe t:time v:verbose w:nodelist x:exclude";

    /// In the table, not in 22.05's man page (later releases, or an alias).
    const NOT_IN_22_05: [&str; 6] = [
        "burst-buffer",
        "cluster",
        "container-id",
        "extra",
        "tres-bind",
        "tres-per-task",
    ];

    #[test]
    fn every_option_of_slurm_22_05_is_in_the_table_once() {
        let mut man = std::collections::BTreeSet::new();
        for w in MAN_SBATCH_22_05.split_whitespace() {
            let (short, long) = match w.split_once(':') {
                Some((s, l)) => (s.chars().next(), l),
                None => (None, w),
            };
            let row = by_long(long).unwrap_or_else(|| panic!("--{long} is not in the table"));
            assert_eq!(row.short, short, "--{long}'s short form");
            man.insert(long);
        }
        for o in OPTIONS {
            assert_eq!(OPTIONS.iter().filter(|p| p.long == o.long).count(), 1, "--{}", o.long);
            if let Some(c) = o.short {
                assert_eq!(OPTIONS.iter().filter(|p| p.short == Some(c)).count(), 1, "-{c}");
            }
            assert!(
                man.contains(o.long) || NOT_IN_22_05.contains(&o.long),
                "--{} is neither in 22.05 nor listed as later",
                o.long
            );
        }
    }

    #[test]
    fn the_documented_table_is_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/sbatch-options.md");
        let want = markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let got = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            got == want,
            "{} differs from the option table in code; regenerate it with \
             `UPDATE_DOCS=1 cargo test -p rudel-core sbatch_options`",
            path.display()
        );
    }

    /// A value the option accepts (so that only the treatment decides the outcome).
    fn sample(o: &SbatchOption) -> Option<&'static str> {
        match (o.treatment, o.arity) {
            (_, Arity::Flag) => None,
            _ if o.long == "exclusive" => None,
            (Nice, _) => Some("5"),
            (OpenMode, _) => Some("append"),
            (Signal, _) => Some("B:USR1@10"),
            _ => Some("x1"),
        }
    }

    /// The option in each spelling, with its value.
    fn spellings(o: &SbatchOption) -> Vec<Vec<String>> {
        let v = sample(o);
        let mut out = vec![match v {
            Some(v) => vec![format!("--{}={v}", o.long)],
            None => vec![format!("--{}", o.long)],
        }];
        if o.arity == Arity::Value {
            out.push(vec![format!("--{}", o.long), v.unwrap_or_default().to_string()]);
        }
        if let Some(c) = o.short {
            out.push(match v {
                Some(v) => vec![format!("-{c}"), v.to_string()],
                None => vec![format!("-{c}")],
            });
        }
        out
    }

    /// `Ok(warnings)` or the refusal.
    fn outcome(words: &[String], in_script: bool) -> Result<(Vec<String>, Vec<String>), ScriptError> {
        if in_script {
            let d = directives(&format!("#!/bin/sh\n#SBATCH {}\necho\n", words.join(" ")))?;
            Ok((d.args, d.warnings))
        } else {
            let (d, used) = translate_options(words)?;
            assert_eq!(used, words.len(), "{words:?}");
            Ok((d.args, d.warnings))
        }
    }

    #[test]
    fn every_option_gets_its_documented_treatment_in_a_script_and_on_the_command_line() {
        for o in OPTIONS {
            for words in spellings(o) {
                for in_script in [true, false] {
                    let got = outcome(&words, in_script);
                    let at = format!("{words:?} ({})", if in_script { "#SBATCH" } else { "command line" });
                    match o.treatment {
                        Map(_) | Nice | OpenMode | Signal => {
                            let (args, warnings) = got.unwrap_or_else(|e| panic!("{at}: {e}"));
                            assert!(warnings.is_empty(), "{at}: {warnings:?}");
                            assert!(!args.is_empty(), "{at}: {args:?}");
                        }
                        Ignore => {
                            let (args, warnings) = got.unwrap_or_else(|e| panic!("{at}: {e}"));
                            assert!(args.is_empty() && warnings.len() == 1, "{at}: {args:?} {warnings:?}");
                            assert!(warnings[0].contains("ignoring"), "{at}: {warnings:?}");
                        }
                        Client if o.long == "parsable" && in_script => {
                            let (_, warnings) = got.unwrap_or_else(|e| panic!("{at}: {e}"));
                            assert_eq!(warnings.len(), 1, "{at}");
                        }
                        // On the command line sbatch takes these before the table (its own
                        // test); anything reaching the table is refused.
                        Client | Refuse => {
                            let e = got.expect_err(&at);
                            assert!(matches!(e, ScriptError::Refused { .. }), "{at}: {e:?}");
                            if o.treatment == Refuse {
                                assert!(e.to_string().contains(o.why), "{at}: {e} should say {:?}", o.why);
                            }
                        }
                    }
                }
            }
        }
    }
}
