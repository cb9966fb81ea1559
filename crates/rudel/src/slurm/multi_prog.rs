//! `srun --multi-prog FILE`: a different program per task (Slurm's MULTIPLE PROGRAM
//! CONFIGURATION). Each line of FILE is `RANKS PROGRAM ARGS...`: RANKS is `*` or a list of
//! ranks and ranges (`0,2-3`); `%t` in a word is the task's rank, `%o` its offset within
//! the line's ranks; `#` starts a comment.
//!
//! srun turns the file into one `sh -c` command that every task runs and that picks its
//! line by `$SLURM_PROCID`: the step machinery stays one command for all tasks, and the
//! file is read once, on srun's node (the other nodes need not see it).
use super::SlurmError;

/// Most ranks a file may name one by one (a line per rank in the generated command).
const MAX_RANKS: usize = 100_000;

#[derive(Debug, PartialEq, Eq)]
enum Ranks {
    All,
    List(Vec<u32>),
}

#[derive(Debug, PartialEq, Eq)]
struct Line {
    ranks: Ranks,
    argv: Vec<String>,
}

fn bad(file: &str, n: usize, why: &str) -> SlurmError {
    SlurmError::msg(format!(
        "Configuration file {file} invalid: line {n}: {why}. Nothing was run"
    ))
}

/// Splits a line into words; single and double quotes group words with spaces.
fn words(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => out.extend(cur.take()),
            (None, c) => cur.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote");
    }
    out.extend(cur);
    Ok(out)
}

fn ranks(spec: &str) -> Result<Ranks, &'static str> {
    if spec == "*" {
        return Ok(Ranks::All);
    }
    let mut v = Vec::new();
    for part in spec.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = match (a.parse(), b.parse()) {
            (Ok(a), Ok(b)) if a <= b => (a, b),
            _ => return Err("bad task rank list"),
        };
        if v.len() + (b - a) as usize >= MAX_RANKS {
            return Err("too many task ranks");
        }
        v.extend(a..=b);
    }
    Ok(Ranks::List(v))
}

fn parse(file: &str, text: &str) -> Result<Vec<Line>, SlurmError> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let content = raw.split('#').next().unwrap_or("");
        let w = words(content).map_err(|e| bad(file, n, e))?;
        let Some((spec, argv)) = w.split_first() else { continue };
        if argv.is_empty() {
            return Err(bad(file, n, "no program after the task ranks"));
        }
        lines.push(Line {
            ranks: ranks(spec).map_err(|e| bad(file, n, e))?,
            argv: argv.to_vec(),
        });
    }
    if lines.is_empty() {
        return Err(SlurmError::msg(format!(
            "Configuration file {file} has no program. Nothing was run"
        )));
    }
    Ok(lines)
}

/// `s` in single quotes for sh, with `%t`/`%o` replaced by `rank`/`offset` or, when the
/// rank is not known here, by `$SLURM_PROCID`.
fn quote(s: &str, rank: Option<u32>, offset: Option<usize>) -> String {
    let proc_id = "'\"$SLURM_PROCID\"'";
    let t = rank.map_or(proc_id.to_string(), |r| r.to_string());
    let o = offset.map_or(proc_id.to_string(), |o| o.to_string());
    let body = s.replace('\'', "'\\''").replace("%t", &t).replace("%o", &o);
    format!("'{body}'")
}

fn exec(argv: &[String], rank: Option<u32>, offset: Option<usize>) -> String {
    let words: Vec<String> = argv.iter().map(|a| quote(a, rank, offset)).collect();
    format!("exec {}", words.join(" "))
}

/// The `sh -c` script: one `case` arm per rank (the first line naming a rank wins, as in
/// Slurm), `*` last; a rank no line names fails with the file's name.
fn script(file: &str, lines: &[Line]) -> String {
    let mut arms = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for l in lines {
        if let Ranks::List(v) = &l.ranks {
            for (offset, &r) in v.iter().enumerate() {
                if seen.insert(r) {
                    arms.push(format!("{r}) {};;", exec(&l.argv, Some(r), Some(offset))));
                }
            }
        }
    }
    let default = lines.iter().find(|l| l.ranks == Ranks::All).map_or_else(
        || {
            let msg = quote(&format!("srun: error: no program for task %t in {file}"), None, None);
            format!("echo {msg} >&2; exit 1")
        },
        |l| exec(&l.argv, None, None),
    );
    arms.push(format!("*) {default};;"));
    format!("case \"$SLURM_PROCID\" in\n{}\nesac", arms.join("\n"))
}

/// The command every task runs for `file`; with `ntasks` known, every task must have a line.
pub(super) fn command(file: &str, ntasks: Option<u32>) -> Result<Vec<String>, SlurmError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        SlurmError::msg(format!(
            "cannot read the --multi-prog file {file}: {e}. Nothing was run"
        ))
    })?;
    let lines = parse(file, &text)?;
    if let (Some(n), false) = (ntasks, lines.iter().any(|l| l.ranks == Ranks::All)) {
        let named: std::collections::HashSet<u32> = lines
            .iter()
            .flat_map(|l| match &l.ranks {
                Ranks::List(v) => v.clone(),
                Ranks::All => Vec::new(),
            })
            .collect();
        if let Some(missing) = (0..n).find(|r| !named.contains(r)) {
            return Err(SlurmError::msg(format!(
                "Configuration file {file} invalid: no program for task {missing} of {n}. Nothing was run"
            )));
        }
    }
    Ok(vec![
        "/bin/sh".into(),
        "-c".into(),
        script(file, &lines),
        "srun-multi-prog".into(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &str, rank: u32) -> (String, String, i32) {
        let o = std::process::Command::new("/bin/sh")
            .args(["-c", script, "x"])
            .env("SLURM_PROCID", rank.to_string())
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            o.status.code().unwrap_or(-1),
        )
    }

    #[test]
    fn slurms_example_picks_each_tasks_line_with_rank_and_offset() {
        let text = "# srun -n8 -l --multi-prog silly.conf\n\
                    4-6       echo host\n\
                    1,7       echo  task:%t\n\
                    0,2-3     echo  offset:%o \"two words\" 'it''s'\n";
        let s = script("silly.conf", &parse("silly.conf", text).unwrap());
        let out: Vec<String> = (0..8).map(|r| run(&s, r).0).collect();
        assert_eq!(out[0], "offset:0 two words its\n");
        assert_eq!(out[1], "task:1\n");
        assert_eq!(out[3], "offset:2 two words its\n");
        assert_eq!(out[5], "host\n");
        assert_eq!(out[7], "task:7\n");
    }

    #[test]
    fn star_covers_the_rest_and_an_uncovered_task_fails_by_name() {
        let s = script("f", &parse("f", "0 echo first\n* echo rest:%t\n").unwrap());
        assert_eq!(run(&s, 0).0, "first\n");
        assert_eq!(run(&s, 9).0, "rest:9\n");
        let s = script("f", &parse("f", "0 echo first\n").unwrap());
        let (_, err, code) = run(&s, 2);
        assert_eq!(code, 1);
        assert!(err.contains("no program for task 2 in f"), "{err}");
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        for (text, why) in [
            ("x echo\n", "line 1: bad task rank list"),
            ("0\n", "line 1: no program"),
            ("# only\n1 echo 'open\n", "line 2: unterminated quote"),
            ("3-1 true\n", "bad task rank list"),
            ("0-200000 true\n", "too many task ranks"),
        ] {
            let e = parse("f", text).unwrap_err();
            assert!(e.lines[0].contains(why), "{text:?}: {e:?}");
        }
        assert!(parse("f", "# nothing\n").unwrap_err().lines[0].contains("no program"));
    }
}
