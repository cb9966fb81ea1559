//! Output path patterns (`--output` / `--error`), with Slurm's `%` placeholders so
//! scripts written for Slurm put their files in the same places.

/// Values substituted into a pattern for one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternVars<'a> {
    /// Job id, of the array for an array task (`%A`).
    pub job: u64,
    /// The task's own job id (`%j`, `%J`): the array's id plus its position for an array
    /// task, else the job id.
    pub task_job: u64,
    /// Array index (`%a`); `None` for a job that is not an array.
    pub index: Option<u32>,
    /// Job name (`%x`).
    pub name: &'a str,
    /// Node the task runs on (`%N`, `%n`).
    pub node: &'a str,
    /// Submitting user (`%u`).
    pub user: &'a str,
}

/// Widths above this are clamped, so a typo like `%99999999j` cannot allocate gigabytes.
const MAX_WIDTH: usize = 64;

/// Expands the placeholders of `pattern`.
///
/// `%j` and `%J` give the task's own job id, `%A` the (array) job id, `%a` the array index
/// (`0` for a non-array job), `%x` the name, `%N` the node, `%n` and `%t` the node and
/// task number in the job (0 for a batch script), `%u` the user, and `%%` a literal `%`.
/// A decimal width between `%` and the letter zero-pads the numeric ones, as in
/// Slurm (`%5a` gives `00042`); it is ignored for the text ones. Anything else,
/// including a trailing `%`, is kept literally.
pub fn expand(pattern: &str, vars: &PatternVars) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut rest = pattern;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let width = after[..digits]
            .parse::<usize>()
            .map_or(if digits > 0 { MAX_WIDTH } else { 0 }, |w| w.min(MAX_WIDTH));
        let Some(c) = after[digits..].chars().next() else {
            // Trailing `%` or `%5`: keep as written.
            out.push_str(&rest[pos..]);
            return out;
        };
        let num = |n: u64| format!("{n:0width$}");
        match c {
            // `%J` is jobid.stepid, and a batch script's step prints as the job id alone.
            'j' | 'J' => out.push_str(&num(vars.task_job)),
            'A' => out.push_str(&num(vars.job)),
            'a' => out.push_str(&num(vars.index.map_or(0, u64::from))),
            'x' => out.push_str(vars.name),
            'N' => out.push_str(vars.node),
            // Node and task number within the job: a batch script is task 0 on node 0.
            'n' | 't' => out.push_str(&num(0)),
            'u' => out.push_str(vars.user),
            '%' if digits == 0 => out.push('%'),
            _ => out.push_str(&rest[pos..pos + 1 + digits + c.len_utf8()]),
        }
        rest = &after[digits + c.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// The pattern used when the user gives none: `rudel-%j.out`, or `rudel-%A_%a.out`
/// for an array job so tasks do not overwrite each other.
pub fn default_output(is_array: bool) -> &'static str {
    if is_array {
        "rudel-%A_%a.out"
    } else {
        "rudel-%j.out"
    }
}

/// The absolute path a pattern names for one task, or `None` when the pattern is
/// `none` (any case), meaning the output is discarded.
///
/// A relative result is joined to `chdir` (which should be absolute) with `/`; this is
/// a pure string operation with no filesystem access. An empty pattern falls back to
/// [`default_output`] (array-ness taken from `vars.index`); callers that give an empty
/// `--error` another meaning (e.g. "into the output file") must check that first.
pub fn resolve(pattern: &str, vars: &PatternVars, chdir: &str) -> Option<String> {
    let pattern = pattern.trim();
    if pattern.eq_ignore_ascii_case("none") {
        return None;
    }
    let pattern = if pattern.is_empty() {
        default_output(vars.index.is_some())
    } else {
        pattern
    };
    let path = expand(pattern, vars);
    if path.starts_with('/') {
        return Some(path);
    }
    let mut rel = path.as_str();
    while let Some(r) = rel.strip_prefix("./") {
        rel = r.trim_start_matches('/');
    }
    Some(format!("{}/{rel}", chdir.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(index: Option<u32>) -> PatternVars<'static> {
        PatternVars {
            job: 42,
            task_job: 42 + u64::from(index.unwrap_or(0)),
            index,
            name: "train",
            node: "gpu01",
            user: "ada",
        }
    }

    #[test]
    fn expands_every_placeholder() {
        let v = vars(Some(7));
        assert_eq!(
            expand("%j-%J-%A-%a-%x-%N-%n-%t-%u", &v),
            "49-49-42-7-train-gpu01-0-0-ada"
        );
        assert_eq!(expand("slurm-%A_%a.out", &v), "slurm-42_7.out");
        assert_eq!(expand("plain.txt", &v), "plain.txt");
        assert_eq!(expand("", &v), "");
    }

    #[test]
    fn non_array_index_is_zero() {
        assert_eq!(expand("%a", &vars(None)), "0");
    }

    #[test]
    fn percent_escape_and_unknown_kept() {
        let v = vars(Some(1));
        assert_eq!(expand("100%%.log", &v), "100%.log");
        assert_eq!(expand("%%j", &v), "%j");
        assert_eq!(expand("%q%J%s", &v), "%q43%s");
        assert_eq!(expand("%3q", &v), "%3q");
        assert_eq!(expand("end%", &v), "end%");
        assert_eq!(expand("end%12", &v), "end%12");
        assert_eq!(expand("%5%", &v), "%5%");
        assert_eq!(expand("%é-%A", &v), "%é-42");
    }

    #[test]
    fn zero_padding() {
        let v = vars(Some(7));
        assert_eq!(expand("%5a", &v), "00007");
        assert_eq!(expand("%3A", &v), "042");
        assert_eq!(expand("%1j", &v), "49");
        assert_eq!(expand("%04A_%2a", &v), "0042_07");
        // Width is ignored for text placeholders.
        assert_eq!(expand("%8x", &v), "train");
        assert_eq!(expand("%99999999999999999999999j", &v).len(), MAX_WIDTH);
    }

    #[test]
    fn default_patterns() {
        assert_eq!(default_output(false), "rudel-%j.out");
        assert_eq!(default_output(true), "rudel-%A_%a.out");
    }

    #[test]
    fn resolve_paths() {
        let v = vars(Some(3));
        assert_eq!(resolve("none", &v, "/home/ada"), None);
        assert_eq!(resolve("NONE", &v, "/home/ada"), None);
        assert_eq!(
            resolve("out/%x_%a.log", &v, "/home/ada"),
            Some("/home/ada/out/train_3.log".into())
        );
        assert_eq!(resolve("/tmp/%j.out", &v, "/home/ada"), Some("/tmp/45.out".into()));
        assert_eq!(resolve("./x.out", &v, "/home/ada/"), Some("/home/ada/x.out".into()));
        assert_eq!(resolve("x.out", &v, "/"), Some("/x.out".into()));
        assert_eq!(resolve("", &v, "/w"), Some("/w/rudel-42_3.out".into()));
        assert_eq!(resolve("", &vars(None), "/w"), Some("/w/rudel-42.out".into()));
        // "none" only as the whole pattern.
        assert_eq!(resolve("none.txt", &v, "/w"), Some("/w/none.txt".into()));
    }
}
