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
    /// An option rudel does not implement and that would change what runs: refused
    /// rather than ignored.
    #[error("script line {line}: #SBATCH {option}: {reason}")]
    Refused {
        /// 1-based line number.
        line: usize,
        /// The option as written, with its value.
        option: String,
        /// Why, and what to do instead.
        reason: String,
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
/// with `-` cannot be mistaken for an option. Slurm options rudel does not implement are
/// refused (naming the line) unless they cannot change what runs, where, with what
/// resources or where its output goes: those are accepted with a warning.
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
            translate_sbatch(&words, line_no, &mut out, false)?;
        } else {
            out.args.extend(words);
        }
        out.lines.resize(out.args.len(), line_no);
    }
    Ok(out)
}

/// A script sbatch would not run, with Slurm's own words.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ScriptRefused {
    /// Windows line ends: the kernel would look for the interpreter `/bin/sh\r`, and the
    /// job fail with a misleading "No such file or directory".
    #[error(
        "Batch script contains DOS line breaks (\\r\\n) instead of expected UNIX line breaks (\\n); \
         convert it with `dos2unix` or `sed -i 's/\\r$//'`"
    )]
    DosLineBreaks,
    /// No `#!` line: nothing says which interpreter runs it.
    #[error(
        "This does not look like a batch script. The first line must start with #! followed by the \
         path to an interpreter. For instance: #!/bin/sh"
    )]
    NoShebang,
}

/// Refuses what `sbatch` refuses: DOS line breaks, no `#!` line.
pub fn check_script(script: &str) -> Result<(), ScriptRefused> {
    if script.contains("\r\n") {
        return Err(ScriptRefused::DosLineBreaks);
    }
    if !script.starts_with("#!") {
        return Err(ScriptRefused::NoShebang);
    }
    Ok(())
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

use crate::sbatch_options::{self as table, Arity, SbatchOption, Treatment};

/// The refusal of sbatch's own options in an `#SBATCH` line.
const CLIENT_IN_SCRIPT: &str = "sbatch's own option: give it on sbatch's command line";

fn unknown(line: usize, word: &str) -> ScriptError {
    ScriptError::Refused {
        line,
        option: word.to_string(),
        reason: "unknown #SBATCH option".into(),
    }
}

/// Translates sbatch's command-line options, through the same table as `#SBATCH` lines
/// (one meaning for an option wherever it is written): the options up to the first word
/// that is not an option (the script and its arguments), and how many words they took.
/// Errors carry line 0.
pub fn translate_options(words: &[String]) -> Result<(Directives, usize), ScriptError> {
    let mut out = Directives::default();
    let used = translate_sbatch(words, 0, &mut out, true)?;
    out.lines.resize(out.args.len(), 0);
    Ok((out, used))
}

/// Translates the words of one `#SBATCH` line into rudel arguments and warnings; with
/// `stop_at_operand`, stops before the first word that is not an option (`-` alone is
/// one: stdin) and returns how many words were used.
fn translate_sbatch(
    words: &[String],
    line: usize,
    out: &mut Directives,
    stop_at_operand: bool,
) -> Result<usize, ScriptError> {
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        if stop_at_operand && (!word.starts_with('-') || word == "-") {
            return Ok(i);
        }
        if stop_at_operand && word == "--" {
            return Ok(i + 1);
        }
        i += 1;
        // (written form of the option, its row, value attached with `=` or `-Xvalue`)
        let (written, row, attached): (String, &SbatchOption, Option<String>) =
            if let Some(long) = word.strip_prefix("--") {
                let (name, value) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                match table::by_long(name) {
                    Some(r) => (format!("--{name}"), r, value),
                    None => return Err(unknown(line, word)),
                }
            } else if let Some(short) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
                let mut cs = short.chars();
                let c = cs.next().unwrap_or('-');
                let rest = cs.as_str();
                match table::by_short(c) {
                    Some(r) => (
                        format!("-{c}/--{}", r.long),
                        r,
                        (!rest.is_empty()).then(|| rest.to_string()),
                    ),
                    None => return Err(unknown(line, word)),
                }
            } else {
                return Err(ScriptError::Refused {
                    line,
                    option: word.clone(),
                    reason: "not an option (a directive line holds options only)".into(),
                });
            };

        let value = match (row.arity, attached) {
            (Arity::Value, Some(v)) => Some(v),
            (Arity::Value, None) => match words.get(i) {
                Some(v) => {
                    i += 1;
                    Some(v.clone())
                }
                None => return Err(ScriptError::MissingValue { line, option: written }),
            },
            (Arity::Optional, v) => v,
            (Arity::Flag, None) => None,
            (Arity::Flag, Some(v)) => {
                return Err(ScriptError::InvalidValue {
                    line,
                    option: written,
                    value: v,
                    expected: "this option takes no value",
                });
            }
        };

        match row.treatment {
            Treatment::Map(opt) => match value {
                // --exclusive=user|mcs share nodes between a user's jobs: not whole nodes.
                Some(v) if row.long == "exclusive" => {
                    return Err(ScriptError::Refused {
                        line,
                        option: format!("{written}={v}"),
                        reason: row.why.into(),
                    });
                }
                Some(v) => out.args.push(format!("{opt}={v}")),
                None => out.args.push(opt.to_string()),
            },
            Treatment::Nice => {
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
            Treatment::OpenMode => match value.as_deref().map(str::trim) {
                Some(m @ ("truncate" | "append")) => out.args.push(format!("--open-mode={m}")),
                other => {
                    return Err(ScriptError::InvalidValue {
                        line,
                        option: written,
                        value: other.unwrap_or_default().to_string(),
                        expected: "append or truncate",
                    })
                }
            },
            Treatment::Signal => {
                let v = value.unwrap_or_default();
                if let Err(e) = crate::signal::parse(&v) {
                    return Err(ScriptError::Refused {
                        line,
                        option: format!("{written}={v}"),
                        reason: e.to_string(),
                    });
                }
                out.args.push(format!("--signal={v}"));
            }
            Treatment::Client if row.long == "parsable" && !stop_at_operand => {
                out.warnings.push(format!(
                    "script line {line}: ignoring #SBATCH {written} (give it on sbatch's command line)"
                ));
            }
            Treatment::Ignore => {
                let shown = match value {
                    Some(v) => format!("{written} {v}"),
                    None => written,
                };
                out.warnings.push(format!(
                    "script line {line}: ignoring #SBATCH {shown} (it changes nothing rudel runs)"
                ));
            }
            Treatment::Client | Treatment::Refuse => {
                let why = match row.treatment {
                    Treatment::Client if !stop_at_operand => CLIENT_IN_SCRIPT,
                    _ => row.why,
                };
                let shown = match value {
                    Some(v) => format!("{written}={v}"),
                    None => written,
                };
                return Err(ScriptError::Refused {
                    line,
                    option: shown,
                    reason: why.into(),
                });
            }
        }
    }
    Ok(i)
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
    fn crlf_line_endings_still_parse() {
        // `check_script` refuses them before submit; the parser itself stays tolerant.
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
    fn open_mode_takes_append_or_truncate() {
        assert_eq!(args("#SBATCH --open-mode=append\n"), ["--open-mode=append"]);
        let e = directives("#!/bin/sh\n#SBATCH --open-mode=sometimes\n").unwrap_err();
        assert!(matches!(e, ScriptError::InvalidValue { line: 2, .. }), "{e:?}");
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
    fn options_that_change_the_job_are_mapped_or_refused_never_dropped() {
        let s = "#!/bin/bash\n\
                 #SBATCH -N 1 -n1 --ntasks-per-node=1\n\
                 #SBATCH -p gpu --mem-per-cpu 2G --gres=gpu:2 -G 1 -L matlab:2\n\
                 #SBATCH --mail-type=END,FAIL --mail-user me@x.org -A proj --comment hi\n\
                 #SBATCH --export=ALL,X=1 --open-mode=truncate\n\
                 #SBATCH -c 2\n";
        let d = directives(s).unwrap();
        assert_eq!(
            d.args,
            [
                "--nodes=1",
                "--ntasks=1",
                "--ntasks-per-node=1",
                "--partition=gpu",
                "--mem-per-cpu=2G",
                "--gres=gpu:2",
                "--gpus=1",
                "--licenses=matlab:2",
                "--account=proj",
                "--export=ALL,X=1",
                "--open-mode=truncate",
                "--cpus=2"
            ]
        );
        let w = d.warnings.join("\n");
        for needle in ["--mail-type END,FAIL", "--mail-user me@x.org", "--comment hi"] {
            assert!(w.contains(needle), "missing {needle:?} in:\n{w}");
        }
        assert_eq!(d.warnings.len(), 3, "{w}");
        for (line, why) in [
            ("#SBATCH --distribution=cyclic", "issue 11"),
            ("#SBATCH --exclusive=user", "=user and =mcs are refused"),
            ("#SBATCH --deadline=now+1hour", "not supported by rudel yet"),
            ("#SBATCH --signal=TERM@20", "use B:TERM@20"),
            ("#SBATCH --qos=high", "no QOS"),
            ("#SBATCH --frobnicate 3", "unknown #SBATCH option"),
            ("#SBATCH -Z", "unknown #SBATCH option"),
            ("#SBATCH stray", "not an option"),
        ] {
            let e = directives(&format!("#!/bin/sh\n{line}\n")).unwrap_err();
            assert!(matches!(e, ScriptError::Refused { line: 2, .. }), "{line}: {e:?}");
            assert!(e.to_string().contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn dos_line_breaks_and_a_missing_shebang_are_refused_as_slurm_does() {
        let e = check_script("#!/bin/sh\r\necho\r\n").unwrap_err();
        assert!(e.to_string().contains("DOS line breaks"), "{e}");
        let e = check_script("echo hi\n").unwrap_err();
        assert!(e.to_string().contains("#!"), "{e}");
        assert!(check_script("#!/bin/sh\necho\n").is_ok());
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
