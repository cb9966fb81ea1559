//! Batch-script directives (`#RUDEL` and `#SBATCH` lines), so `rudel submit job.sh`
//! works for scripts written for rudel or for Slurm.
//!
//! As in sbatch, directives are read from the top of the script: the `#!` line, blank
//! lines and other comments are skipped, and scanning stops at the first line that is
//! not a comment. A directive must start at the beginning of its line and be followed
//! by whitespace (`#SBATCH --time=10`); an indented one is an ordinary comment.

use thiserror::Error;

/// Options found in a script's directives, as rudel command-line arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// Arguments in file order; the caller appends the command line's after them so
    /// that the command line wins.
    pub args: Vec<String>,
    /// The 1-based script line of each of `args`, so that a value refused later (a
    /// variable the kernel could not pass, say) is reported with its line.
    pub lines: Vec<usize>,
    /// Human-readable notes about directives that were ignored (Slurm options rudel
    /// does not implement), each naming the line and the option.
    pub warnings: Vec<String>,
}

impl Directives {
    /// The arguments of each directive line, in file order, with the line number.
    pub fn by_line(&self) -> Vec<(usize, Vec<String>)> {
        let mut out: Vec<(usize, Vec<String>)> = Vec::new();
        for (arg, &line) in self.args.iter().zip(&self.lines) {
            match out.last_mut() {
                Some((l, words)) if *l == line => words.push(arg.clone()),
                _ => out.push((line, vec![arg.clone()])),
            }
        }
        out
    }
}

/// A directive that cannot be understood at all.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ScriptError {
    /// A quote opened on this line is never closed.
    #[error("script line {line}: unterminated {quote} quote in directive")]
    UnterminatedQuote {
        /// 1-based line number.
        line: usize,
        /// The quote character, `'` or `"`.
        quote: char,
    },
    /// An option that needs a value is last on its line.
    #[error("script line {line}: option {option} needs a value")]
    MissingValue {
        /// 1-based line number.
        line: usize,
        /// The option as written.
        option: String,
    },
    /// An option has a value it cannot take.
    #[error("script line {line}: invalid value {value:?} for {option}: {expected}")]
    InvalidValue {
        /// 1-based line number.
        line: usize,
        /// The option as written.
        option: String,
        /// The offending value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
}

/// Reads the `#RUDEL` and `#SBATCH` directives at the top of `script`.
///
/// `#RUDEL` options are rudel's own and pass through verbatim. `#SBATCH` options are
/// translated to rudel's (e.g. `-J x` to `--name=x`, `--nice=5` to `--priority=-5`);
/// translated options are emitted as single `--opt=value` words so a value starting
/// with `-` cannot be mistaken for an option. Slurm options rudel does not implement
/// are skipped with a warning, never an error, so Slurm scripts run unchanged.
pub fn directives(script: &str) -> Result<Directives, ScriptError> {
    let mut out = Directives::default();
    for (i, raw) in script.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        if !trimmed.starts_with('#') {
            break;
        }
        let (sbatch, rest) = if let Some(r) = directive_body(line, "#RUDEL") {
            (false, r)
        } else if let Some(r) = directive_body(line, "#SBATCH") {
            (true, r)
        } else {
            continue;
        };
        let words = split_words(rest, line_no)?;
        if sbatch {
            translate_sbatch(&words, line_no, &mut out)?;
        } else {
            out.args.extend(words);
        }
        out.lines.resize(out.args.len(), line_no);
    }
    Ok(out)
}

/// The text after `tag` when `line` is a directive with that tag.
fn directive_body<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(tag)?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then_some(rest)
}

/// Splits a directive into words with shell-like quoting: single quotes are literal,
/// double quotes allow `\"`, `\\`, `\$` and `` \` `` escapes, a backslash outside
/// quotes escapes the next character, and a `#` starting a word ends the line.
fn split_words(s: &str, line: usize) -> Result<Vec<String>, ScriptError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(ScriptError::UnterminatedQuote { line, quote: '\'' }),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.peek() {
                            Some(&e @ ('"' | '\\' | '$' | '`')) => {
                                cur.push(e);
                                chars.next();
                            }
                            _ => cur.push('\\'),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(ScriptError::UnterminatedQuote { line, quote: '"' }),
                    }
                }
            }
            '\\' => {
                in_word = true;
                // A trailing backslash has nothing to escape; keep it.
                cur.push(chars.next().unwrap_or('\\'));
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Whether an sbatch option takes a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// A flag.
    None,
    /// Needs a value (`--opt=v`, `--opt v`, `-Xv`, `-X v`).
    Required,
    /// Takes a value only as `--opt=v`, like getopt's optional arguments.
    Optional,
}

/// What to do with one sbatch option.
#[derive(Clone, Copy)]
enum Action {
    /// Emit the rudel option, with the value if it has one.
    Map(&'static str, Arity),
    /// `--nice[=N]`: rudel priority -N (Slurm's default adjustment is 100).
    Nice,
    /// `--export`: rudel has no equivalent; warn.
    Export,
    /// A Slurm option rudel does not implement: skip with a warning.
    Unsupported(Arity),
}

/// Short sbatch options: letter, long name, action.
fn short_option(c: char) -> Option<(&'static str, Action)> {
    use Action::*;
    use Arity::{None as Flag, Required as Value};
    Some(match c {
        'J' => ("job-name", Map("--name", Value)),
        'c' => ("cpus-per-task", Map("--cpus", Value)),
        't' => ("time", Map("--time", Value)),
        'o' => ("output", Map("--output", Value)),
        'e' => ("error", Map("--error", Value)),
        'a' => ("array", Map("--array", Value)),
        'D' => ("chdir", Map("--chdir", Value)),
        'C' => ("constraint", Map("--constraint", Value)),
        'A' => ("account", Unsupported(Value)),
        'b' => ("begin", Unsupported(Value)),
        'B' => ("extra-node-info", Unsupported(Value)),
        'd' => ("dependency", Unsupported(Value)),
        'F' => ("nodefile", Unsupported(Value)),
        'G' => ("gpus", Unsupported(Value)),
        'i' => ("input", Unsupported(Value)),
        'L' => ("licenses", Unsupported(Value)),
        'm' => ("distribution", Unsupported(Value)),
        'M' => ("clusters", Unsupported(Value)),
        'n' => ("ntasks", Unsupported(Value)),
        'N' => ("nodes", Unsupported(Value)),
        'p' => ("partition", Unsupported(Value)),
        'q' => ("qos", Unsupported(Value)),
        'S' => ("core-spec", Unsupported(Value)),
        'w' => ("nodelist", Unsupported(Value)),
        'x' => ("exclude", Unsupported(Value)),
        'H' => ("hold", Unsupported(Flag)),
        'k' => ("no-kill", Unsupported(Flag)),
        'O' => ("overcommit", Unsupported(Flag)),
        'Q' => ("quiet", Unsupported(Flag)),
        's' => ("oversubscribe", Unsupported(Flag)),
        'v' => ("verbose", Unsupported(Flag)),
        'W' => ("wait", Unsupported(Flag)),
        _ => return None,
    })
}

/// Long sbatch options rudel translates or knowingly ignores.
fn long_option(name: &str) -> Option<Action> {
    use Action::*;
    use Arity::{None as Flag, Optional, Required as Value};
    if let Some(a) = "JctoeaDC"
        .chars()
        .filter_map(short_option)
        .find(|(long, _)| *long == name)
    {
        return Some(a.1);
    }
    Some(match name {
        "mem" => Map("--mem", Value),
        "requeue" => Map("--requeue", Flag),
        "no-requeue" => Map("--no-requeue", Flag),
        "nice" => Nice,
        "export" => Export,
        "account"
        | "acctg-freq"
        | "batch"
        | "bb"
        | "bbf"
        | "begin"
        | "burst-buffer"
        | "clusters"
        | "cluster"
        | "cluster-constraint"
        | "comment"
        | "container"
        | "container-id"
        | "core-spec"
        | "cores-per-socket"
        | "cpu-freq"
        | "cpus-per-gpu"
        | "deadline"
        | "delay-boot"
        | "dependency"
        | "distribution"
        | "exclude"
        | "export-file"
        | "extra"
        | "extra-node-info"
        | "gid"
        | "gpu-bind"
        | "gpu-freq"
        | "gpus"
        | "gpus-per-node"
        | "gpus-per-socket"
        | "gpus-per-task"
        | "gres"
        | "gres-flags"
        | "hint"
        | "input"
        | "licenses"
        | "mail-type"
        | "mail-user"
        | "mcs-label"
        | "mem-bind"
        | "mem-per-cpu"
        | "mem-per-gpu"
        | "mincpus"
        | "network"
        | "nodefile"
        | "nodelist"
        | "nodes"
        | "ntasks"
        | "ntasks-per-core"
        | "ntasks-per-gpu"
        | "ntasks-per-node"
        | "ntasks-per-socket"
        | "open-mode"
        | "partition"
        | "power"
        | "prefer"
        | "priority"
        | "profile"
        | "qos"
        | "reservation"
        | "resv-ports"
        | "signal"
        | "sockets-per-node"
        | "switches"
        | "thread-spec"
        | "threads-per-core"
        | "time-min"
        | "tmp"
        | "tres-bind"
        | "tres-per-task"
        | "uid"
        | "wckey"
        | "wrap"
        | "kill-on-invalid-dep" => Unsupported(Value),
        "exclusive" | "get-user-env" | "no-kill" | "propagate" | "reboot" | "spread-job" | "use-min-nodes"
        | "ignore-pbs" => Unsupported(Optional),
        "contiguous" | "hold" | "overcommit" | "oversubscribe" | "parsable" | "quiet" | "test-only" | "verbose"
        | "wait" | "wait-all-nodes" => Unsupported(Flag),
        _ => return None,
    })
}

/// Translates the words of one `#SBATCH` line into rudel arguments and warnings.
fn translate_sbatch(words: &[String], line: usize, out: &mut Directives) -> Result<(), ScriptError> {
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        i += 1;
        // (written form of the option, action, value attached with `=` or `-Xvalue`)
        let (written, action, attached): (String, Action, Option<String>) = if let Some(long) = word.strip_prefix("--")
        {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let written = format!("--{name}");
            match long_option(name) {
                Some(a) => (written, a, value),
                None => {
                    // Unknown to rudel: guess that a following bare word is its value.
                    let mut shown = word.clone();
                    if value.is_none() && words.get(i).is_some_and(|w| !w.starts_with('-')) {
                        shown = format!("{word} {}", words[i]);
                        i += 1;
                    }
                    out.warnings
                        .push(format!("script line {line}: ignoring unknown #SBATCH option {shown}"));
                    continue;
                }
            }
        } else if let Some(short) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            let mut cs = short.chars();
            let c = cs.next().unwrap_or('-');
            let rest = cs.as_str();
            match short_option(c) {
                Some((long, a)) => {
                    let written = format!("-{c}/--{long}");
                    (written, a, (!rest.is_empty()).then(|| rest.to_string()))
                }
                None => {
                    out.warnings
                        .push(format!("script line {line}: ignoring unknown #SBATCH option {word}"));
                    continue;
                }
            }
        } else {
            out.warnings.push(format!(
                "script line {line}: ignoring #SBATCH argument {word:?} (not an option)"
            ));
            continue;
        };

        let arity = match action {
            Action::Map(_, a) | Action::Unsupported(a) => a,
            Action::Nice => Arity::Optional,
            Action::Export => Arity::Required,
        };
        let value = match (arity, attached) {
            (Arity::Required, Some(v)) => Some(v),
            (Arity::Required, None) => match words.get(i) {
                Some(v) => {
                    i += 1;
                    Some(v.clone())
                }
                None => {
                    if let Action::Unsupported(_) = action {
                        out.warnings.push(format!(
                            "script line {line}: ignoring #SBATCH {written} (not supported by rudel)"
                        ));
                        continue;
                    }
                    return Err(ScriptError::MissingValue { line, option: written });
                }
            },
            (Arity::Optional, v) => v,
            (Arity::None, None) => None,
            (Arity::None, Some(v)) => {
                if let Action::Unsupported(_) = action {
                    None
                } else {
                    return Err(ScriptError::InvalidValue {
                        line,
                        option: written,
                        value: v,
                        expected: "this option takes no value",
                    });
                }
            }
        };

        match action {
            Action::Map(opt, _) => match value {
                Some(v) => out.args.push(format!("{opt}={v}")),
                None => out.args.push(opt.to_string()),
            },
            Action::Nice => {
                let v = value.unwrap_or_else(|| "100".to_string());
                let prio = v.trim().parse::<i64>().ok().and_then(i64::checked_neg).ok_or_else(|| {
                    ScriptError::InvalidValue {
                        line,
                        option: written,
                        value: v.clone(),
                        expected: "expected an integer adjustment, e.g. --nice=10",
                    }
                })?;
                out.args.push(format!("--priority={prio}"));
            }
            Action::Export => out.warnings.push(format!(
                "script line {line}: ignoring #SBATCH --export={} (not supported by rudel; \
                 use --env K=V)",
                value.unwrap_or_default()
            )),
            Action::Unsupported(_) => {
                let shown = match value {
                    Some(v) => format!("{written} {v}"),
                    None => written,
                };
                out.warnings.push(format!(
                    "script line {line}: ignoring #SBATCH {shown} (not supported by rudel)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(script: &str) -> Vec<String> {
        directives(script).unwrap().args
    }

    #[test]
    fn rudel_directives_pass_through_verbatim() {
        let d =
            directives("#!/bin/bash\n#RUDEL --cpus 4 --mem 8G\n#RUDEL --name \"my job\" --requeue\necho hi\n").unwrap();
        assert_eq!(d.args, ["--cpus", "4", "--mem", "8G", "--name", "my job", "--requeue"]);
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn each_argument_knows_its_line() {
        let d =
            directives("#!/bin/sh\n#RUDEL --cpus 2\n# note\n#SBATCH -J x --mem=1G\n#RUDEL --env A=1\necho\n").unwrap();
        assert_eq!(d.lines.len(), d.args.len());
        assert_eq!(
            d.by_line(),
            vec![
                (2, vec!["--cpus".to_string(), "2".into()]),
                (4, vec!["--name=x".to_string(), "--mem=1G".into()]),
                (5, vec!["--env".to_string(), "A=1".into()]),
            ]
        );
    }

    #[test]
    fn scan_stops_at_first_command() {
        let s = "#!/bin/sh\n\n# a comment\n  # indented comment\n#RUDEL --cpus 2\n\
                 echo start\n#RUDEL --cpus 8\n";
        assert_eq!(args(s), ["--cpus", "2"]);
        assert_eq!(args(""), Vec::<String>::new());
        assert_eq!(args("echo\n#SBATCH -c 2\n"), Vec::<String>::new());
    }

    #[test]
    fn directive_needs_column_zero_and_whitespace() {
        let s = "#!/bin/sh\n  #SBATCH -c 9\n#SBATCHX -c 8\n#sbatch -c 7\n#RUDEL\n#SBATCH\t-c 2\n";
        assert_eq!(args(s), ["--cpus=2"]);
    }

    #[test]
    fn crlf_line_endings() {
        assert_eq!(args("#!/bin/sh\r\n#SBATCH -J x\r\necho\r\n"), ["--name=x"]);
    }

    #[test]
    fn quoting_and_trailing_comments() {
        let s = "#RUDEL --name 'a b' --env \"K=v \\\"q\\\" \\n\" --chdir a\\ b # note\n\
                 #RUDEL --output=x#y '#not-comment'\n";
        assert_eq!(
            args(s),
            [
                "--name",
                "a b",
                "--env",
                "K=v \"q\" \\n",
                "--chdir",
                "a b",
                "--output=x#y",
                "#not-comment"
            ]
        );
        assert_eq!(args("#RUDEL --name ''\n"), ["--name", ""]);
    }

    #[test]
    fn unterminated_quotes_name_the_line() {
        let e = directives("#!/bin/sh\n#RUDEL --cpus 1\n#RUDEL --name 'oops\n").unwrap_err();
        assert_eq!(e, ScriptError::UnterminatedQuote { line: 3, quote: '\'' });
        assert!(e.to_string().contains("line 3"));
        let e = directives("#SBATCH -J \"x\n").unwrap_err();
        assert_eq!(e, ScriptError::UnterminatedQuote { line: 1, quote: '"' });
    }

    #[test]
    fn sbatch_translation_in_all_spellings() {
        let s = "#!/bin/bash\n\
                 #SBATCH -J one\n\
                 #SBATCH --job-name=two\n\
                 #SBATCH --job-name three\n\
                 #SBATCH -Jfour\n\
                 #SBATCH -c 4 --cpus-per-task=8\n\
                 #SBATCH --mem=4G --mem 100\n\
                 #SBATCH -t 1-00:00:00 --time=30\n\
                 #SBATCH -o out/%x_%A_%a.out -e %j.err\n\
                 #SBATCH --output=o.txt --error=e.txt\n\
                 #SBATCH -a 1-10%2 --array=0-3\n\
                 #SBATCH -D /scratch --chdir=/tmp\n\
                 #SBATCH --requeue --no-requeue\n\
                 #SBATCH -C gpu&a100 --constraint=\"x|y\"\n\
                 srun hostname\n";
        let d = directives(s).unwrap();
        assert_eq!(
            d.args,
            [
                "--name=one",
                "--name=two",
                "--name=three",
                "--name=four",
                "--cpus=4",
                "--cpus=8",
                "--mem=4G",
                "--mem=100",
                "--time=1-00:00:00",
                "--time=30",
                "--output=out/%x_%A_%a.out",
                "--error=%j.err",
                "--output=o.txt",
                "--error=e.txt",
                "--array=1-10%2",
                "--array=0-3",
                "--chdir=/scratch",
                "--chdir=/tmp",
                "--requeue",
                "--no-requeue",
                "--constraint=gpu&a100",
                "--constraint=x|y",
            ]
        );
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    #[test]
    fn nice_becomes_negated_priority() {
        assert_eq!(args("#SBATCH --nice=5\n"), ["--priority=-5"]);
        assert_eq!(args("#SBATCH --nice=-3\n"), ["--priority=3"]);
        assert_eq!(args("#SBATCH --nice\n"), ["--priority=-100"]);
        let e = directives("#SBATCH --nice=abc\n").unwrap_err();
        assert!(matches!(e, ScriptError::InvalidValue { line: 1, .. }), "{e:?}");
        let e = directives(&format!("#SBATCH --nice={}\n", i64::MIN)).unwrap_err();
        assert!(matches!(e, ScriptError::InvalidValue { .. }), "{e:?}");
    }

    #[test]
    fn unsupported_options_warn_and_skip_their_values() {
        let s = "#!/bin/bash\n\
                 #SBATCH -N 2 -n4 --ntasks-per-node=2\n\
                 #SBATCH -p gpu --partition batch\n\
                 #SBATCH --mail-type=END,FAIL --mail-user me@x.org\n\
                 #SBATCH -A proj --qos=high --exclusive --mem-per-cpu 2G --gres=gpu:2\n\
                 #SBATCH --export=ALL --export NONE\n\
                 #SBATCH -c 2\n";
        let d = directives(s).unwrap();
        assert_eq!(d.args, ["--cpus=2"]);
        let w = d.warnings.join("\n");
        for needle in [
            "line 2: ignoring #SBATCH -N/--nodes 2",
            "-n/--ntasks 4",
            "--ntasks-per-node 2",
            "line 3: ignoring #SBATCH -p/--partition gpu",
            "--partition batch",
            "--mail-type END,FAIL",
            "--mail-user me@x.org",
            "-A/--account proj",
            "--qos high",
            "--exclusive (",
            "--mem-per-cpu 2G",
            "--gres gpu:2",
            "--export=ALL",
            "--export=NONE",
        ] {
            assert!(w.contains(needle), "missing {needle:?} in:\n{w}");
        }
        assert_eq!(d.warnings.len(), 14, "{w}");
    }

    #[test]
    fn unknown_options_and_stray_words_warn() {
        let d = directives("#SBATCH --frobnicate 3 -Z --weird=1 stray -c 1\n").unwrap();
        assert_eq!(d.args, ["--cpus=1"]);
        assert_eq!(d.warnings.len(), 4, "{:?}", d.warnings);
        assert!(d.warnings[0].contains("--frobnicate 3"));
        assert!(d.warnings[1].contains("-Z"));
        assert!(d.warnings[2].contains("--weird=1"));
        assert!(d.warnings[3].contains("\"stray\""));
    }

    #[test]
    fn unsupported_option_without_value_is_a_warning() {
        let d = directives("#SBATCH -c 1 --partition\n").unwrap();
        assert_eq!(d.args, ["--cpus=1"]);
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn supported_option_errors() {
        assert_eq!(
            directives("#!/bin/sh\n#SBATCH --time\n").unwrap_err(),
            ScriptError::MissingValue {
                line: 2,
                option: "--time".into()
            }
        );
        assert_eq!(
            directives("#SBATCH -J\n").unwrap_err(),
            ScriptError::MissingValue {
                line: 1,
                option: "-J/--job-name".into()
            }
        );
        let e = directives("#SBATCH --requeue=yes\n").unwrap_err();
        assert!(matches!(e, ScriptError::InvalidValue { line: 1, .. }), "{e:?}");
    }

    #[test]
    fn values_starting_with_dash_stay_values() {
        assert_eq!(args("#SBATCH -J -weird\n"), ["--name=-weird"]);
    }
}
