//! What a job spec may hold so that its tasks can be started at all, checked where a spec
//! enters the system: the CLI before it sends, the head before it proposes (a gRPC client
//! can bypass the CLI).
//!
//! Without these checks such a spec is accepted, queued, and every task fails at start:
//! `execve` refuses a string longer than the kernel's `MAX_ARG_STRLEN` or an argument
//! list and environment larger than `ARG_MAX` (`E2BIG`, "Argument list too long"), and a
//! C string cannot hold a NUL byte. The message at start would not name the cause; here
//! it does, and nothing is submitted.
//!
//! Deliberately not part of [`crate::state::validate_spec`], which runs in the replicated
//! apply path: entries already in a log must apply the way they always did, so new
//! limits are enforced at the entrance only.
use thiserror::Error;

use crate::job::JobSpec;

/// Largest payload (command, script and environment) accepted in one job spec: every
/// head keeps every live spec in memory and in its log.
pub const MAX_SPEC_BYTES: usize = 4 << 20;
/// The kernel's `MAX_ARG_STRLEN` (32 pages): the most one argument or one `NAME=value`
/// environment string may take, its terminating NUL included.
pub const MAX_ARG_STRLEN: usize = 131_072;
/// The longest argument or `NAME=value` string, in bytes (without the NUL).
pub const MAX_STRING_BYTES: usize = MAX_ARG_STRLEN - 1;
/// What the user's arguments and environment may take together, counted as the kernel
/// does (each string with its NUL, plus one 8-byte pointer). Linux allows a quarter of the
/// stack limit (usually 2 MiB) for everything; half of that is left for the variables
/// rudel adds (`RUDEL_*`, later `SLURM_*`) and the script path, so a spec that passes
/// here can always start.
pub const MAX_EXEC_BYTES: usize = 1 << 20;
/// The kernel's `PATH_MAX`, its NUL included: the longest usable path is one byte less.
pub const PATH_MAX: usize = 4096;
/// The longest job name, in bytes. It becomes `RUDEL_JOB_NAME` and may become part of
/// file names (`%x`), so it is kept far below the per-string limit.
pub const MAX_NAME_BYTES: usize = 1024;
/// The longest client request id, in bytes (every head remembers up to
/// [`crate::state::MAX_REMEMBERED_REQUESTS`] of them).
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// The fields of a spec that the limits apply to, borrowed from whichever type holds
/// them (the core spec, or the wire spec in the CLI and at the head's entrance).
#[derive(Clone, Debug, Default)]
pub struct SpecText<'a> {
    pub name: &'a str,
    pub argv: &'a [String],
    pub script: &'a str,
    pub env: Vec<(&'a str, &'a str)>,
    pub chdir: &'a str,
    pub output: &'a str,
    pub error: &'a str,
}

impl JobSpec {
    /// This spec's text fields, for [`check_spec`].
    pub fn text(&self) -> SpecText<'_> {
        SpecText {
            name: &self.name,
            argv: &self.argv,
            script: &self.script,
            env: self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            chdir: &self.chdir,
            output: &self.output,
            error: &self.error,
        }
    }
}

/// A spec that could never run, or that rudel does not accept; the text names the field,
/// the limit and what was given.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InputError {
    #[error(
        "{what} is {}; rudel accepts at most {} MiB per job spec (command, script and environment together): keep large inputs in files",
        human(*size), MAX_SPEC_BYTES >> 20
    )]
    SpecTooLarge { what: String, size: usize },
    #[error("{field}: contains a NUL byte at byte {offset}; {why}")]
    Nul {
        field: String,
        offset: usize,
        why: &'static str,
    },
    #[error("{field}: contains the control character {ch:?} at byte {offset}; {why}")]
    ControlChar {
        field: String,
        ch: char,
        offset: usize,
        why: &'static str,
    },
    #[error("{field}: is {len} bytes; {limit_what} is {limit} bytes")]
    TooLong {
        field: String,
        len: usize,
        limit_what: &'static str,
        limit: usize,
    },
    #[error("{field} {name:?}: {why}; a variable name is letters, digits and '_', not starting with a digit")]
    BadEnvName {
        /// Where the name came from (`--env`, `--export`).
        field: &'static str,
        name: String,
        why: String,
    },
    #[error(
        "--env {name}: value is {len} bytes; the kernel limit for one variable (NAME=value) is {MAX_STRING_BYTES} bytes"
    )]
    EnvTooLong { name: String, len: usize },
    #[error(
        "the command's arguments and environment together take {total} bytes ({args} in {n_args} arguments, {env} in {n_env} variables); \
         rudel allows at most {MAX_EXEC_BYTES} so that the task can start (the kernel's ARG_MAX also holds rudel's own variables): \
         pass large data in files, or submit with --export NONE"
    )]
    ExecTooLarge {
        total: usize,
        args: usize,
        n_args: usize,
        env: usize,
        n_env: usize,
    },
    #[error("request id {id:?}: {why}")]
    BadRequestId { id: String, why: String },
}

/// Checks everything about a spec's text that decides whether its tasks can start.
pub fn check_spec(s: &SpecText<'_>) -> Result<(), InputError> {
    check_size(s)?;
    check_name(s.name)?;
    for (i, a) in s.argv.iter().enumerate() {
        check_arg(i, a)?;
    }
    check_script(s.script)?;
    for (k, v) in &s.env {
        check_env(k, v)?;
    }
    check_exec_budget(s.argv, &s.env)?;
    check_path("--chdir", s.chdir)?;
    check_output_path("--output", s.output, s.chdir)?;
    check_output_path("--error", s.error, s.chdir)?;
    Ok(())
}

/// The payload limit ([`MAX_SPEC_BYTES`]); the message names the largest part.
pub fn check_size(s: &SpecText<'_>) -> Result<(), InputError> {
    let args: usize = s.argv.iter().map(String::len).sum();
    let env: usize = s.env.iter().map(|(k, v)| k.len() + v.len()).sum();
    let total = args + s.script.len() + env;
    if total <= MAX_SPEC_BYTES {
        return Ok(());
    }
    let parts = [
        ("the script", s.script.len()),
        ("the command's arguments", args),
        ("the environment", env),
    ];
    let what = match parts.iter().find(|(_, n)| *n > MAX_SPEC_BYTES) {
        Some((what, n)) => {
            return Err(InputError::SpecTooLarge {
                what: what.to_string(),
                size: *n,
            })
        }
        None => "the command, script and environment together".to_string(),
    };
    Err(InputError::SpecTooLarge { what, size: total })
}

/// A job name: one line of text, at most [`MAX_NAME_BYTES`].
pub fn check_name(name: &str) -> Result<(), InputError> {
    const WHY: &str = "a job name is one line of printable text";
    no_control("--name", name, WHY)?;
    max_len("--name", name, "the limit for a job name", MAX_NAME_BYTES)
}

/// One argument of the command (`index` 0 is the command itself).
pub fn check_arg(index: usize, arg: &str) -> Result<(), InputError> {
    // Every submit checks every argument: name the field only when there is an error.
    if arg.len() <= MAX_STRING_BYTES && !arg.contains('\0') {
        return Ok(());
    }
    let field = if index == 0 {
        "the command".to_string()
    } else {
        format!("argument {index} of the command")
    };
    no_nul(&field, arg, "the kernel cannot pass it in an argument")?;
    max_len(&field, arg, "the kernel limit for one argument", MAX_STRING_BYTES)
}

/// The script: any text without NUL (the size counts in [`check_size`]).
pub fn check_script(script: &str) -> Result<(), InputError> {
    match script.find('\0') {
        None => Ok(()),
        Some(offset) => {
            let line = script[..offset].matches('\n').count() + 1;
            Err(InputError::Nul {
                field: format!("the script, line {line}"),
                offset,
                why: "a script is text, and shells stop reading a line at NUL",
            })
        }
    }
}

/// One environment variable: a valid name, a value without NUL, and `NAME=value` within
/// the kernel's limit for one string.
pub fn check_env(name: &str, value: &str) -> Result<(), InputError> {
    check_env_name("--env", name)?;
    // Every submit checks the whole exported environment: name the field only when
    // there is an error.
    if name.len() + 1 + value.len() <= MAX_STRING_BYTES && !value.contains('\0') {
        return Ok(());
    }
    no_nul(
        &format!("--env {name}"),
        value,
        "the kernel cannot pass it in a variable",
    )?;
    let len = name.len() + 1 + value.len();
    if len > MAX_STRING_BYTES {
        return Err(InputError::EnvTooLong {
            name: name.to_string(),
            len: value.len(),
        });
    }
    Ok(())
}

/// A variable name (given as `field`): POSIX portable (`[A-Za-z_][A-Za-z0-9_]*`), or a bash exported function
/// (`BASH_FUNC_name%%`). The latter is not portable but common: Lmod exports `module` and
/// `ml` that way, and refusing them would make every such user's submit fail.
pub fn check_env_name(field: &'static str, name: &str) -> Result<(), InputError> {
    let bad = |why: String| InputError::BadEnvName {
        field,
        name: name.to_string(),
        why,
    };
    if name.is_empty() {
        return Err(bad("empty variable name".into()));
    }
    if let Some(f) = name.strip_prefix("BASH_FUNC_").and_then(|r| r.strip_suffix("%%")) {
        if !f.is_empty() && !f.contains(['=', '\0']) && !f.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Ok(());
        }
    }
    if name.len() > MAX_STRING_BYTES {
        return Err(bad(format!("the name is {} bytes", name.len())));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad("starts with a digit".into()));
    }
    match name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        Some((i, c)) => Err(bad(format!("contains {c:?} at byte {i}"))),
        None => Ok(()),
    }
}

/// Bytes `execve` needs for one string: its bytes, its NUL and its pointer.
fn exec_cost(len: usize) -> usize {
    len + 1 + std::mem::size_of::<u64>()
}

/// The arguments and environment together against [`MAX_EXEC_BYTES`].
pub fn check_exec_budget(argv: &[String], env: &[(&str, &str)]) -> Result<(), InputError> {
    let args: usize = argv.iter().map(|a| exec_cost(a.len())).sum();
    let envb: usize = env.iter().map(|(k, v)| exec_cost(k.len() + 1 + v.len())).sum();
    let total = args + envb;
    if total > MAX_EXEC_BYTES {
        return Err(InputError::ExecTooLarge {
            total,
            args,
            n_args: argv.len(),
            env: envb,
            n_env: env.len(),
        });
    }
    Ok(())
}

/// A path: no NUL, shorter than [`PATH_MAX`].
pub fn check_path(field: &str, path: &str) -> Result<(), InputError> {
    no_nul(field, path, "a path cannot hold NUL")?;
    max_len(field, path, "the path limit (PATH_MAX)", PATH_MAX - 1)
}

/// An output or error pattern; a relative one is resolved in the working directory, so
/// the two together must fit in a path.
fn check_output_path(field: &str, pattern: &str, chdir: &str) -> Result<(), InputError> {
    check_path(field, pattern)?;
    if pattern.is_empty() || pattern == "none" || pattern.starts_with('/') {
        return Ok(());
    }
    let len = chdir.len() + 1 + pattern.len();
    if len > PATH_MAX - 1 {
        return Err(InputError::TooLong {
            field: format!("{field} (in the working directory)"),
            len,
            limit_what: "the path limit (PATH_MAX)",
            limit: PATH_MAX - 1,
        });
    }
    Ok(())
}

/// A client request id: 1 to [`MAX_REQUEST_ID_BYTES`] of `A-Z a-z 0-9 . _ : @ + -`, so it
/// can be printed in a command line and pasted back unquoted.
pub fn check_request_id(id: &str) -> Result<(), InputError> {
    let bad = |why: String| InputError::BadRequestId {
        id: id.to_string(),
        why,
    };
    if id.is_empty() {
        return Err(bad("empty".into()));
    }
    if id.len() > MAX_REQUEST_ID_BYTES {
        return Err(bad(format!("{} bytes, at most {MAX_REQUEST_ID_BYTES}", id.len())));
    }
    match id
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || ".-_:@+".contains(*c)))
    {
        Some((i, c)) => Err(bad(format!(
            "contains {c:?} at byte {i}; use letters, digits and . _ : @ + -"
        ))),
        None => Ok(()),
    }
}

fn no_nul(field: &str, s: &str, why: &'static str) -> Result<(), InputError> {
    match s.find('\0') {
        Some(offset) => Err(InputError::Nul {
            field: field.to_string(),
            offset,
            why,
        }),
        None => Ok(()),
    }
}

fn no_control(field: &str, s: &str, why: &'static str) -> Result<(), InputError> {
    match s.char_indices().find(|(_, c)| c.is_control()) {
        Some((offset, '\0')) => Err(InputError::Nul {
            field: field.to_string(),
            offset,
            why,
        }),
        Some((offset, ch)) => Err(InputError::ControlChar {
            field: field.to_string(),
            ch,
            offset,
            why,
        }),
        None => Ok(()),
    }
}

fn max_len(field: &str, s: &str, limit_what: &'static str, limit: usize) -> Result<(), InputError> {
    if s.len() > limit {
        return Err(InputError::TooLong {
            field: field.to_string(),
            len: s.len(),
            limit_what,
            limit,
        });
    }
    Ok(())
}

/// `50.0 MiB`, `12.5 KiB`, `512 bytes`.
fn human(bytes: usize) -> String {
    const MIB: usize = 1 << 20;
    const KIB: usize = 1 << 10;
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= KIB {
        format!("{:.1} KiB", bytes as f64 / KIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(argv: &'a [String], env: Vec<(&'a str, &'a str)>) -> SpecText<'a> {
        SpecText {
            argv,
            env,
            chdir: "/tmp",
            ..SpecText::default()
        }
    }

    fn msg(r: Result<(), InputError>) -> String {
        r.expect_err("should be refused").to_string()
    }

    #[test]
    fn an_ordinary_spec_passes() {
        let argv = vec!["echo".to_string(), "hi there".to_string()];
        let mut s = spec(&argv, vec![("PATH", "/bin:/usr/bin"), ("X_1", "a\nb=c")]);
        s.name = "my job: ü";
        s.output = "out-%j.txt";
        s.script = "#!/bin/sh\necho hi\n";
        assert_eq!(check_spec(&s), Ok(()));
    }

    #[test]
    fn one_variable_over_the_kernel_limit_names_it_and_the_limit() {
        let big = "x".repeat(1 << 20);
        let m = msg(check_env("X", &big));
        assert_eq!(
            m,
            "--env X: value is 1048576 bytes; the kernel limit for one variable (NAME=value) is 131071 bytes"
        );
        // Exactly at the limit: NAME=value is 131071 bytes.
        let fits = "x".repeat(MAX_STRING_BYTES - 2);
        assert_eq!(check_env("X", &fits), Ok(()));
        assert!(check_env("X", &format!("{fits}x")).is_err());
    }

    #[test]
    fn nul_is_refused_everywhere_and_located() {
        assert!(msg(check_env("X", "a\0b")).contains("--env X: contains a NUL byte at byte 1"));
        assert!(msg(check_arg(2, "a\0")).contains("argument 2 of the command: contains a NUL byte at byte 1"));
        assert!(msg(check_script("#!/bin/sh\necho\0\n")).contains("the script, line 2"));
        assert!(msg(check_path("--chdir", "/a\0b")).contains("--chdir"));
        assert!(msg(check_name("a\0")).contains("--name: contains a NUL byte"));
    }

    #[test]
    fn env_names_must_be_portable() {
        for ok in ["A", "_", "a_1", "PATH", "BASH_FUNC_module%%", "BASH_FUNC_my-fn.x%%"] {
            assert_eq!(check_env_name("--env", ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("A B", "' ' at byte 1"),
            ("A\nB", "'\\n' at byte 1"),
            ("A=B", "'=' at byte 1"),
            ("1A", "starts with a digit"),
            ("A\0", "'\\0'"),
            ("BASH_FUNC_%%", "'%'"),
            ("BASH_FUNC_a b%%", "' '"),
        ] {
            let m = msg(check_env_name("--env", bad));
            assert!(m.contains(why), "{bad:?}: {m}");
            assert!(m.starts_with("--env "), "{m}");
        }
    }

    #[test]
    fn names_are_one_short_line() {
        assert!(
            msg(check_name(&"n".repeat(200_000))).contains("--name: is 200000 bytes; the limit for a job name is 1024")
        );
        assert!(msg(check_name("a\nb")).contains("control character '\\n' at byte 1"));
        assert!(msg(check_name("a\tb")).contains("'\\t'"));
        assert_eq!(check_name(&"n".repeat(MAX_NAME_BYTES)), Ok(()));
    }

    #[test]
    fn the_spec_size_names_the_largest_part() {
        let script = "x".repeat(50 << 20);
        let argv: Vec<String> = Vec::new();
        let mut s = spec(&argv, Vec::new());
        s.script = &script;
        assert_eq!(
            msg(check_spec(&s)),
            "the script is 50.0 MiB; rudel accepts at most 4 MiB per job spec (command, script and environment together): keep large inputs in files"
        );
        let third = "x".repeat(3 << 20);
        let argv = vec![third.clone()];
        let mut s = spec(&argv, vec![("A", &third)]);
        s.script = &third;
        assert!(msg(check_size(&s)).starts_with("the command, script and environment together is 9.0 MiB"));
    }

    #[test]
    fn arguments_and_environment_share_one_budget() {
        let v = "x".repeat(100_000);
        let env: Vec<(&str, &str)> = (0..11).map(|_| ("A", v.as_str())).collect();
        let m = msg(check_exec_budget(&["true".to_string()], &env));
        assert!(m.contains("in 11 variables") && m.contains("1048576"), "{m}");
        let env: Vec<(&str, &str)> = (0..10).map(|_| ("A", v.as_str())).collect();
        assert_eq!(check_exec_budget(&["true".to_string()], &env), Ok(()));
    }

    #[test]
    fn paths_fit_path_max() {
        let long = format!("/{}", "d".repeat(PATH_MAX));
        assert!(msg(check_path("--chdir", &long)).contains("PATH_MAX) is 4095"));
        let argv: Vec<String> = Vec::new();
        let mut s = spec(&argv, Vec::new());
        let dir = format!("/{}", "d".repeat(3000));
        let pat = "o".repeat(1500);
        s.chdir = &dir;
        s.output = &pat;
        assert!(msg(check_spec(&s)).contains("--output (in the working directory): is 4502 bytes"));
        s.output = "none";
        assert_eq!(check_spec(&s), Ok(()));
    }

    #[test]
    fn request_ids() {
        assert_eq!(check_request_id("host-1-17a3f.x:y@z+1_2"), Ok(()));
        assert!(msg(check_request_id("")).contains("empty"));
        assert!(msg(check_request_id("a b")).contains("' ' at byte 1"));
        assert!(msg(check_request_id(&"a".repeat(257))).contains("257 bytes"));
    }
}
