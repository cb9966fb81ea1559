//! `sbatch`: the same submit path as `rudel submit SCRIPT`. Options on the command line go
//! through the same table as `#SBATCH` lines (`rudel_core::script`); the command line wins
//! over `SBATCH_*` variables, which win over the script's lines (as `man sbatch`).
use std::io::Read;
use std::path::Path;

use rudel_core::script::{self, ScriptError, ScriptRefused};
use rudel_proto::v1 as pb;

use super::{SlurmError, SlurmResult};
use crate::opts::{self, SubmitArgs};

/// Slurm exits 255 on a bad option (getopt's and `--time`'s errors).
const EXIT_BAD_OPTION: u8 = 255;

/// The options sbatch handles itself (not job options).
#[derive(Debug, Default, PartialEq, Eq)]
struct Client {
    parsable: bool,
    wait: bool,
    test_only: bool,
    wrap: Option<String>,
    help: bool,
    version: bool,
}

/// The command line split into sbatch's own options, job options (as written) and the
/// script with its arguments.
#[derive(Debug, Default, PartialEq, Eq)]
struct CommandLine {
    client: Client,
    options: Vec<String>,
    operands: Vec<String>,
}

/// Splits the command line: sbatch's own options are taken out; job options are kept as
/// written, each with its value (whether an option takes the next word comes from the
/// option table); the first other word starts the script and its arguments.
fn split_command_line(args: &[String]) -> CommandLine {
    let mut out = CommandLine::default();
    let mut i = 0;
    while i < args.len() {
        let w = &args[i];
        i += 1;
        if let Some(v) = w.strip_prefix("--wrap=") {
            out.client.wrap = Some(v.to_string());
            continue;
        }
        match w.as_str() {
            "--parsable" => out.client.parsable = true,
            "-W" | "--wait" => out.client.wait = true,
            "--test-only" => out.client.test_only = true,
            "-h" | "--help" | "--usage" => out.client.help = true,
            "-V" | "--version" => out.client.version = true,
            "--wrap" => {
                out.client.wrap = args.get(i).cloned();
                i += 1;
            }
            "--" => {
                out.operands = args[i..].to_vec();
                return out;
            }
            _ if w.starts_with('-') && w != "-" => {
                out.options.push(w.clone());
                let needs_next = matches!(
                    script::translate_options(std::slice::from_ref(w)),
                    Err(ScriptError::MissingValue { .. })
                );
                if needs_next {
                    if let Some(v) = args.get(i) {
                        out.options.push(v.clone());
                        i += 1;
                    }
                }
            }
            _ => {
                out.operands = args[i - 1..].to_vec();
                return out;
            }
        }
    }
    out
}

/// The `SBATCH_*` input variables, as the options they stand for (man sbatch, "INPUT
/// ENVIRONMENT VARIABLES"). Options rudel cannot honour are refused like on the command
/// line, never dropped.
const ENV_OPTIONS: [(&str, &str); 28] = [
    ("SBATCH_ACCOUNT", "--account"),
    ("SBATCH_ARRAY_INX", "--array"),
    ("SBATCH_CLUSTERS", "--clusters"),
    ("SBATCH_CONSTRAINT", "--constraint"),
    ("SBATCH_CPU_FREQ_REQ", "--cpu-freq"),
    ("SBATCH_DEPENDENCY", "--dependency"),
    ("SBATCH_DISTRIBUTION", "--distribution"),
    ("SBATCH_ERROR", "--error"),
    ("SBATCH_EXCLUSIVE", "--exclusive"),
    ("SBATCH_EXPORT", "--export"),
    ("SBATCH_GPUS", "--gpus"),
    ("SBATCH_GPUS_PER_TASK", "--gpus-per-task"),
    ("SBATCH_GRES", "--gres"),
    ("SBATCH_HINT", "--hint"),
    ("SBATCH_JOB_NAME", "--job-name"),
    ("SBATCH_MEM_BIND", "--mem-bind"),
    ("SBATCH_MEM_PER_CPU", "--mem-per-cpu"),
    ("SBATCH_MEM_PER_NODE", "--mem"),
    ("SBATCH_NO_KILL", "--no-kill"),
    ("SBATCH_NO_REQUEUE", "--no-requeue"),
    ("SBATCH_OPEN_MODE", "--open-mode"),
    ("SBATCH_OUTPUT", "--output"),
    ("SBATCH_PARTITION", "--partition"),
    ("SBATCH_QOS", "--qos"),
    ("SBATCH_REQUEUE", "--requeue"),
    ("SBATCH_RESERVATION", "--reservation"),
    ("SBATCH_SIGNAL", "--signal"),
    ("SBATCH_TIMELIMIT", "--time"),
];

/// Flags among [`ENV_OPTIONS`]: set = given, whatever the value.
const ENV_FLAGS: [&str; 4] = ["--requeue", "--no-requeue", "--no-kill", "--exclusive"];

/// The options the environment gives, as option words.
fn env_options(get: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    for (var, opt) in ENV_OPTIONS {
        let Some(v) = get(var) else { continue };
        if ENV_FLAGS.contains(&opt) {
            out.push(opt.to_string());
        } else {
            out.push(format!("{opt}={v}"));
        }
    }
    out
}

/// Translates option words (command line or environment) to submit options; errors as
/// sbatch words them.
fn translate(words: &[String], source: &str) -> Result<SubmitArgs, SlurmError> {
    let (d, _) = script::translate_options(words).map_err(|e| option_error(e, source))?;
    for w in &d.warnings {
        eprintln!("sbatch: warning: {source}: {}", w.trim_start_matches("script line 0: "));
    }
    opts::parse_option_words(&d.args).map_err(|f| SlurmError::msg(format!("{source}: {:#}", f.error)))
}

fn option_error(e: ScriptError, source: &str) -> SlurmError {
    match e {
        ScriptError::Refused { option, reason, .. } if reason.starts_with("unknown") => {
            let text = match option.strip_prefix("--") {
                Some(_) => format!("sbatch: unrecognized option '{option}'"),
                None => format!(
                    "sbatch: invalid option -- '{}'",
                    option.trim_start_matches('-').chars().next().unwrap_or('?')
                ),
            };
            SlurmError {
                code: EXIT_BAD_OPTION,
                ..SlurmError::raw(format!("{text}\nTry \"sbatch --help\" for more information"))
            }
        }
        ScriptError::Refused { option, reason, .. } => {
            SlurmError::msg(format!("{source}: {option}: {reason}; nothing was submitted"))
        }
        ScriptError::MissingValue { option, .. } => SlurmError {
            code: EXIT_BAD_OPTION,
            ..SlurmError::raw(format!(
                "sbatch: option '{option}' requires an argument\nTry \"sbatch --help\" for more information"
            ))
        },
        other => SlurmError::msg(format!(
            "{source}: {}",
            other.to_string().trim_start_matches("script line 0: ")
        )),
    }
}

/// The script text and the name it goes by (its path; `sbatch` for stdin, `wrap`).
fn read_script(cl: &CommandLine) -> Result<(String, String), SlurmError> {
    if let Some(cmd) = &cl.client.wrap {
        if !cl.operands.is_empty() {
            return Err(SlurmError::msg("Script arguments not permitted with --wrap option"));
        }
        return Ok((
            format!("#!/bin/sh\n# This script was written by sbatch --wrap.\n{cmd}\n"),
            "wrap".into(),
        ));
    }
    match cl.operands.first().map(String::as_str) {
        Some(path) if path != "-" => match std::fs::read(path) {
            Ok(b) => Ok((
                String::from_utf8(b).map_err(|_| SlurmError::msg(format!("{path} is not UTF-8 text")))?,
                path.into(),
            )),
            Err(_) => Err(SlurmError::msg(format!("Unable to open file {path}"))),
        },
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| SlurmError::msg(format!("cannot read the script from stdin: {e}")))?;
            Ok((s, "sbatch".into()))
        }
    }
}

/// What sbatch refuses in a script, in Slurm's own lines.
fn check_script(text: &str) -> Result<(), SlurmError> {
    if text.trim().is_empty() {
        return Err(SlurmError::msg("Batch script is empty!"));
    }
    match script::check_script(text) {
        Ok(()) => Ok(()),
        Err(ScriptRefused::NoShebang) => Err(SlurmError::msg(
            "This does not look like a batch script.  The first\n\
             line must start with #! followed by the path to an interpreter.\n\
             For instance: #!/bin/sh",
        )),
        Err(ScriptRefused::DosLineBreaks) => Err(SlurmError::msg(
            "Batch script contains DOS line breaks (\\r\\n)\ninstead of expected UNIX line breaks (\\n).",
        )),
    }
}

/// Slurm's default output file: `slurm-%j.out`, `slurm-%A_%a.out` for arrays.
fn default_output(spec: &mut pb::JobSpec) {
    if spec.output.is_empty() {
        spec.output = if spec.array.is_empty() {
            "slurm-%j.out"
        } else {
            "slurm-%A_%a.out"
        }
        .into();
    }
}

const HELP: &str = "Usage: sbatch [OPTIONS(0)...] [ : [OPTIONS(N)...]] script(0) [args(0)...]\n\
  Options are sbatch's (and #SBATCH lines'), answered by rudel: see `rudel submit --help`\n\
  and README.md (\"Slurm commands\"). sbatch's own: --parsable, --wrap=CMD, -W/--wait.\n";

/// `sbatch`.
pub async fn sbatch(args: Vec<String>, head: &str) -> SlurmResult {
    let cl = split_command_line(&args);
    if cl.client.help {
        print!("{HELP}");
        return Ok(0);
    }
    if cl.client.version {
        println!("rudel {} (sbatch of Slurm 22.05's options)", env!("CARGO_PKG_VERSION"));
        return Ok(0);
    }
    let from_env = translate(&env_options(|v| std::env::var(v).ok()), "SBATCH_* environment")?;
    let from_cli = translate(&cl.options, "command line")?;
    let wait = cl.client.wait || std::env::var_os("SBATCH_WAIT").is_some();
    let mut a = opts::merge_args(from_env, from_cli);
    if let Some(t) = &a.time {
        if rudel_core::parse::parse_duration(t).is_err() {
            return Err(SlurmError {
                code: EXIT_BAD_OPTION,
                ..SlurmError::msg("Invalid --time specification")
            });
        }
    }
    let (text, name) = read_script(&cl)?;
    check_script(&text)?;
    a.command = std::iter::once(name.clone())
        .chain(cl.operands.iter().skip(1).cloned())
        .collect();
    let (mut spec, a) = opts::spec_with_script(a, text, Path::new(&name))?;
    default_output(&mut spec);
    if cl.client.test_only {
        return test_only(head, spec).await;
    }
    let rid = a.request_id.clone().unwrap_or_else(opts::new_request_id);
    // Slurm's words for a submit the controller refused (a limit, the rate, a bad spec);
    // tools match on them.
    let resp = opts::submit_spec(head, spec, rid)
        .await
        .map_err(|f| SlurmError::msg(format!("Batch job submission failed: {:#}", f.error)))?;
    if cl.client.parsable {
        println!("{}", resp.job_id);
    } else {
        println!("Submitted batch job {}", resp.job_id);
    }
    if !wait {
        return Ok(0);
    }
    wait_exit_code(head, resp.job_id).await
}

/// `--test-only`: says when and where the job would start, in Slurm's words; submits
/// nothing. As Slurm's, the estimate counts running work (ending at its time limits),
/// not the jobs that wait.
async fn test_only(head: &str, spec: rudel_proto::v1::JobSpec) -> SlurmResult {
    let w = opts::will_run(head, spec)
        .await
        .map_err(|f| SlurmError::msg(format!("allocation failure: {:#}", f.error)))?;
    eprintln!("{}", will_run_line(&w));
    Ok(0)
}

fn will_run_line(w: &rudel_proto::v1::WillRunResponse) -> String {
    let partition = if w.partition.is_empty() {
        "(default)"
    } else {
        w.partition.as_str()
    };
    if w.start_ms == 0 {
        let why = if w.reason.is_empty() {
            "it waits for a running task without a time limit".to_string()
        } else {
            w.reason.clone()
        };
        return format!(
            "sbatch: Job {} to start at N/A using {} processors in partition {partition} ({why})",
            w.job_id, w.cpus
        );
    }
    format!(
        "sbatch: Job {} to start at {} using {} processors on nodes {} in partition {partition}",
        w.job_id,
        crate::show::timestamp(w.start_ms),
        w.cpus,
        rudel_core::hostlist::compress(&w.nodes)
    )
}

/// `--wait`: blocks until the job ends; its exit code (1 if killed by a signal), as sbatch.
async fn wait_exit_code(head: &str, id: u64) -> SlurmResult {
    let jobs = crate::follow::watch_until_done(head, &[id], None, |_| {})
        .await?
        .unwrap_or_default();
    let Some(j) = jobs.into_iter().find(|j| j.id == id) else {
        return Err(SlurmError::msg(format!("lost job {id} while waiting for it")));
    };
    Ok(match (j.exit_code, j.signal) {
        (_, Some(_)) => 1,
        (Some(c), None) => u8::try_from(c).unwrap_or(1),
        (None, None) => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_command_line_splits_at_the_script() {
        let cl = split_command_line(&words("-J x --parsable -t 10 --mem=1G -W job.sh --wait -o y"));
        assert_eq!(cl.options, words("-J x -t 10 --mem=1G"));
        assert_eq!(cl.operands, words("job.sh --wait -o y"));
        assert!(cl.client.parsable && cl.client.wait);
        let cl = split_command_line(&words("--wrap hostname -p short"));
        assert_eq!(cl.client.wrap.as_deref(), Some("hostname"));
        assert_eq!(cl.options, words("-p short"));
        assert!(cl.operands.is_empty());
        let cl = split_command_line(&words("-Jname -a 1-3 - arg"));
        assert_eq!(cl.options, words("-Jname -a 1-3"));
        assert_eq!(cl.operands, words("- arg"));
    }

    /// The table's `Client` rows are sbatch's own: every one is taken off the command
    /// line before the job options are translated (none reaches the table's refusal).
    #[test]
    fn sbatchs_own_options_are_taken_off_the_command_line() {
        use rudel_core::sbatch_options::{Treatment, OPTIONS};
        for o in OPTIONS.iter().filter(|o| o.treatment == Treatment::Client) {
            let mut forms = vec![format!("--{}", o.long)];
            forms.extend(o.short.map(|c| format!("-{c}")));
            for f in forms {
                let mut args = vec![f.clone()];
                if o.long == "wrap" {
                    args.push("true".into());
                }
                let cl = split_command_line(&args);
                assert!(cl.options.is_empty() && cl.operands.is_empty(), "{f}: {cl:?}");
                assert_ne!(cl.client, Client::default(), "{f}");
            }
        }
    }

    #[test]
    fn command_line_beats_environment() {
        let env = |v: &str| match v {
            "SBATCH_JOB_NAME" => Some("from-env".to_string()),
            "SBATCH_TIMELIMIT" => Some("5".to_string()),
            "SBATCH_NO_REQUEUE" => Some("".to_string()),
            _ => None,
        };
        let e = translate(&env_options(env), "env").unwrap();
        let c = translate(&words("-J from-cli"), "cli").unwrap();
        let a = opts::merge_args(e, c);
        assert_eq!(a.name.as_deref(), Some("from-cli"));
        assert_eq!(a.time.as_deref(), Some("5"));
        assert!(a.no_requeue);
    }

    #[test]
    fn option_errors_are_worded_as_sbatch() {
        let e = translate(&words("--frobnicate"), "command line").unwrap_err();
        assert_eq!(e.code, 255);
        assert_eq!(
            e.lines,
            [
                "sbatch: unrecognized option '--frobnicate'",
                "Try \"sbatch --help\" for more information"
            ]
        );
        let e = translate(&words("-Z"), "command line").unwrap_err();
        assert_eq!(e.lines[0], "sbatch: invalid option -- 'Z'");
        let e = translate(&words("--qos=high"), "command line").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(
            e.lines[0].contains("--qos=high") && e.lines[0].contains("nothing was submitted"),
            "{e:?}"
        );
        let e = translate(
            &env_options(|v| (v == "SBATCH_QOS").then(|| "x".into())),
            "SBATCH_* environment",
        )
        .unwrap_err();
        assert!(e.lines[0].starts_with("SBATCH_* environment: --qos=x"), "{e:?}");
    }

    #[test]
    fn scripts_sbatch_refuses() {
        assert_eq!(check_script("").unwrap_err().lines, ["Batch script is empty!"]);
        assert_eq!(check_script("echo\n").unwrap_err().lines.len(), 3);
        assert_eq!(
            check_script("#!/bin/sh\r\necho\r\n").unwrap_err().lines,
            [
                "Batch script contains DOS line breaks (\\r\\n)",
                "instead of expected UNIX line breaks (\\n)."
            ]
        );
    }

    #[test]
    fn default_output_is_slurms() {
        let mut s = pb::JobSpec::default();
        default_output(&mut s);
        assert_eq!(s.output, "slurm-%j.out");
        let mut s = pb::JobSpec {
            array: "1-3".into(),
            ..Default::default()
        };
        default_output(&mut s);
        assert_eq!(s.output, "slurm-%A_%a.out");
        let mut s = pb::JobSpec {
            output: "x.out".into(),
            ..Default::default()
        };
        default_output(&mut s);
        assert_eq!(s.output, "x.out");
    }
}
