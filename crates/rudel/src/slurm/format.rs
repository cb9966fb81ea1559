//! What the Slurm commands share: Slurm's state names and codes, reasons, time formats,
//! and the `%[.][width]X` format strings of `squeue -o` / `sinfo -o` (and `-O` fields).

/// A job or task state as Slurm names it, from rudel's (`pending`, `node_fail`, ...);
/// a failure whose reason says the memory limit killed it is `OUT_OF_MEMORY`.
pub fn job_state(state: &str, reason: &str) -> &'static str {
    match state {
        "pending" => "PENDING",
        "running" => "RUNNING",
        "completing" => "COMPLETING",
        "completed" => "COMPLETED",
        "failed" if is_oom(reason) => "OUT_OF_MEMORY",
        "failed" => "FAILED",
        "cancelled" => "CANCELLED",
        "timeout" => "TIMEOUT",
        "node_fail" => "NODE_FAIL",
        _ => "UNKNOWN",
    }
}

fn is_oom(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("out of memory") || r.contains("oom") || r.contains("memory limit")
}

/// Slurm's compact state code (`squeue %t`).
pub fn compact_state(slurm_state: &str) -> &'static str {
    match slurm_state {
        "PENDING" => "PD",
        "RUNNING" => "R",
        "COMPLETING" => "CG",
        "COMPLETED" => "CD",
        "FAILED" => "F",
        "CANCELLED" => "CA",
        "TIMEOUT" => "TO",
        "NODE_FAIL" => "NF",
        "OUT_OF_MEMORY" => "OOM",
        _ => "?",
    }
}

/// The states `squeue -t` accepts, long and compact.
pub const JOB_STATES: [&str; 9] = [
    "PENDING",
    "RUNNING",
    "COMPLETING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
];

/// True for states a job leaves the queue in.
pub fn is_final(slurm_state: &str) -> bool {
    !matches!(slurm_state, "PENDING" | "RUNNING" | "COMPLETING")
}

/// Parses a `-t/--states` list (names or compact codes, any case, `all`) into Slurm
/// state names; `None` for `all`. Errors with Slurm's message.
pub fn parse_states(list: &str) -> Result<Option<Vec<&'static str>>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item.eq_ignore_ascii_case("all") {
            return Ok(None);
        }
        let found = JOB_STATES
            .iter()
            .find(|s| s.eq_ignore_ascii_case(item) || compact_state(s).eq_ignore_ascii_case(item));
        match found {
            Some(s) => out.push(*s),
            None => {
                return Err(format!(
                    "Invalid job state specified: {item}\nValid job states include: {}",
                    JOB_STATES.join(",")
                ))
            }
        }
    }
    Ok(Some(out))
}

/// Slurm's reason code for rudel's reason text (`Priority: waiting behind ...`): the word
/// before the colon, renamed where Slurm's differs; `None` when there is no reason.
pub fn reason_code(reason: &str) -> String {
    let word = reason.split(':').next().unwrap_or("").trim();
    match word {
        "" => "None".into(),
        "ArrayLimit" => "JobArrayTaskLimit".into(),
        "NoNodes" => "ReqNodeNotAvail".into(),
        // Reasons that are already Slurm's (Priority, Resources, Licenses, PartitionDown,
        // Dependency, JobHeldUser, BeginTime, ...) pass through; a free text becomes one word.
        w if w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => w.to_string(),
        w => w.replace(' ', "_"),
    }
}

/// Slurm's elapsed time form: `M:SS`, `H:MM:SS`, `D-HH:MM:SS` (squeue %M, %l).
pub fn elapsed(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// `scontrol`'s form: `HH:MM:SS`, `D-HH:MM:SS`.
pub fn clock(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// A time limit for squeue: `UNLIMITED` for none.
pub fn limit(ms: u64) -> String {
    if ms == 0 {
        "UNLIMITED".into()
    } else {
        elapsed(ms.div_ceil(1000))
    }
}

/// A timestamp as Slurm prints them (`2026-11-28T10:11:59`, local time), or `none`.
pub fn time_or(ms: u64, none: &str) -> String {
    if ms == 0 {
        none.into()
    } else {
        crate::show::timestamp(ms)
    }
}

/// One piece of a format string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Text(String),
    Field {
        /// The field: a `%` letter, or an `-O` name in lower case.
        key: String,
        /// Pad (and cut) to this many characters.
        width: Option<usize>,
        /// Right-justify (`%.10i`).
        right: bool,
    },
}

/// Parses `%[.|-][width]X` format strings: text is kept, `%%` is `%`.
pub fn parse_percent(fmt: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut text = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            text.push('%');
            continue;
        }
        let mut right = false;
        match chars.peek() {
            Some('.') => {
                right = true;
                chars.next();
            }
            // Left is the default; `-` says so explicitly (printf's habit).
            Some('-') => {
                chars.next();
            }
            _ => {}
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        let key = chars
            .next()
            .ok_or_else(|| format!("Invalid format specification: {fmt}"))?;
        if !text.is_empty() {
            items.push(Item::Text(std::mem::take(&mut text)));
        }
        items.push(Item::Field {
            key: key.to_string(),
            width: digits.parse().ok(),
            right,
        });
    }
    if !text.is_empty() {
        items.push(Item::Text(text));
    }
    Ok(items)
}

/// Parses `-O/--Format` lists: `Name[:[.]width]`, comma-separated; each field is 20 wide
/// unless given, as Slurm's.
pub fn parse_fields(list: &str) -> Vec<Item> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|f| {
            let (name, w) = f.split_once(':').unwrap_or((f, ""));
            let right = w.starts_with('.');
            Item::Field {
                key: name.to_ascii_lowercase(),
                width: Some(w.trim_start_matches('.').parse().unwrap_or(20)),
                right,
            }
        })
        .collect()
}

/// `value` padded or cut to `width` (characters).
pub fn fit(value: &str, width: Option<usize>, right: bool) -> String {
    let Some(w) = width else {
        return value.to_string();
    };
    let cut: String = value.chars().take(w).collect();
    if right {
        format!("{cut:>w$}")
    } else {
        format!("{cut:<w$}")
    }
}

/// Renders one line: `value(key)` gives each field's text (`None`: unknown field).
pub fn render(items: &[Item], mut value: impl FnMut(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    for it in items {
        match it {
            Item::Text(t) => out.push_str(t),
            Item::Field { key, width, right } => {
                let v = value(key).ok_or_else(|| format!("Invalid job format specification: {key}"))?;
                out.push_str(&fit(&v, *width, *right));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_slurms_forms() {
        assert_eq!(elapsed(7), "0:07");
        assert_eq!(elapsed(3600), "1:00:00");
        assert_eq!(elapsed(90061), "1-01:01:01");
        assert_eq!(clock(16), "00:00:16");
        assert_eq!(limit(0), "UNLIMITED");
        assert_eq!(limit(3_600_000), "1:00:00");
    }

    #[test]
    fn states_and_codes() {
        assert_eq!(job_state("node_fail", ""), "NODE_FAIL");
        assert_eq!(
            job_state("failed", "killed: out of memory (limit 64M)"),
            "OUT_OF_MEMORY"
        );
        assert_eq!(compact_state("PENDING"), "PD");
        assert_eq!(
            parse_states("pd,R,completed").unwrap(),
            Some(vec!["PENDING", "RUNNING", "COMPLETED"])
        );
        assert_eq!(parse_states("all").unwrap(), None);
        let e = parse_states("XX").unwrap_err();
        assert!(
            e.starts_with("Invalid job state specified: XX\nValid job states include: PENDING,"),
            "{e}"
        );
    }

    #[test]
    fn reasons_become_slurms_codes() {
        assert_eq!(reason_code("Priority: waiting behind jobs"), "Priority");
        assert_eq!(reason_code("Resources: waiting for free cpus/memory"), "Resources");
        assert_eq!(
            reason_code("ArrayLimit: 2 tasks of this array run at once"),
            "JobArrayTaskLimit"
        );
        assert_eq!(reason_code(""), "None");
        assert_eq!(reason_code("Dependency"), "Dependency");
    }

    #[test]
    fn percent_formats_with_widths_and_text() {
        // Slurm's default squeue format, and its header as Slurm prints it.
        let items = parse_percent("%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R").unwrap();
        let header = render(&items, |k| {
            Some(
                match k {
                    "i" => "JOBID",
                    "P" => "PARTITION",
                    "j" => "NAME",
                    "u" => "USER",
                    "t" => "ST",
                    "M" => "TIME",
                    "D" => "NODES",
                    "R" => "NODELIST(REASON)",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .unwrap();
        assert_eq!(
            header,
            "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)"
        );
        let items = parse_percent("%i|%-6j|%5T|%%").unwrap();
        let line = render(&items, |k| Some(if k == "T" { "PENDING" } else { "ab" }.to_string())).unwrap();
        assert_eq!(line, "ab|ab    |PENDI|%");
        assert!(render(&parse_percent("%Z").unwrap(), |_| None).is_err());
    }

    #[test]
    fn capital_o_fields_are_twenty_wide() {
        let items = parse_fields("JobID,Name:.6");
        let line = render(&items, |k| Some(k.to_string())).unwrap();
        assert_eq!(line, format!("{:<20}{:>6}", "jobid", "name"));
    }
}
