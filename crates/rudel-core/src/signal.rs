//! `--signal=[B:]SIG[@TIME]` (Slurm): send SIG to the batch script TIME seconds (default
//! 60) before its time limit, so it can checkpoint. Without `B:` Slurm signals the job's
//! steps (`srun`), never the batch shell; rudel has no steps yet, so that form is refused
//! rather than accepted and never delivered.
use serde::{Deserialize, Serialize};

/// A warning signal before the time limit.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarnSignal {
    /// Linux signal number.
    pub signal: i32,
    /// Seconds before the time limit.
    pub before_s: u32,
}

/// Default TIME, as Slurm's.
pub const DEFAULT_BEFORE_S: u32 = 60;
/// Slurm's upper bound on TIME.
pub const MAX_BEFORE_S: u32 = 65_535;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignalError {
    #[error("--signal={0}: without B: Slurm signals job steps (srun), which rudel does not have yet; use B:{0} to signal the batch script")]
    StepsOnly(String),
    #[error("--signal={0}: R: (reservation end) is not supported: rudel has no reservations")]
    Reservation(String),
    #[error("--signal={0}: unknown signal {1:?} (a name like USR1, SIGTERM or a number 1-64)")]
    UnknownSignal(String, String),
    #[error("--signal={0}: the time must be 0 to 65535 seconds")]
    BadTime(String),
}

/// Linux signal names (x86_64/aarch64 numbering) Slurm accepts.
const NAMES: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ABRT", 6),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
];

/// Parses `[B:|R:|RB:]SIG[@TIME]`.
pub fn parse(text: &str) -> Result<WarnSignal, SignalError> {
    let t = text.trim();
    let (flags, rest) = match t.split_once(':') {
        Some((f, r)) => (f.to_ascii_uppercase(), r),
        None => (String::new(), t),
    };
    if flags.contains('R') {
        return Err(SignalError::Reservation(text.into()));
    }
    if flags != "B" {
        return Err(SignalError::StepsOnly(text.into()));
    }
    let (sig, time) = match rest.split_once('@') {
        Some((s, tm)) => (s, Some(tm)),
        None => (rest, None),
    };
    let signal = signal_number(sig).ok_or_else(|| SignalError::UnknownSignal(text.into(), sig.into()))?;
    let before_s = match time {
        None => DEFAULT_BEFORE_S,
        Some(tm) => tm
            .parse::<u32>()
            .ok()
            .filter(|&s| s <= MAX_BEFORE_S)
            .ok_or_else(|| SignalError::BadTime(text.into()))?,
    };
    Ok(WarnSignal { signal, before_s })
}

/// `USR1`, `SIGUSR1`, `usr1` or `10`.
pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    NAMES.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

impl std::fmt::Display for WarnSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = NAMES.iter().find(|(_, v)| *v == self.signal).map(|(n, _)| *n);
        match name {
            Some(n) => write!(f, "B:{n}@{}", self.before_s),
            None => write!(f, "B:{}@{}", self.signal, self.before_s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_forms_parse_and_steps_only_forms_are_refused() {
        assert_eq!(
            parse("B:USR1@20"),
            Ok(WarnSignal {
                signal: 10,
                before_s: 20
            })
        );
        assert_eq!(
            parse("b:SIGTERM"),
            Ok(WarnSignal {
                signal: 15,
                before_s: 60
            })
        );
        assert_eq!(
            parse("B:12@0"),
            Ok(WarnSignal {
                signal: 12,
                before_s: 0
            })
        );
        assert!(matches!(parse("USR1@20"), Err(SignalError::StepsOnly(_))));
        assert!(matches!(parse("R:USR1@20"), Err(SignalError::Reservation(_))));
        assert!(matches!(parse("RB:USR1"), Err(SignalError::Reservation(_))));
        assert!(matches!(parse("B:FOO"), Err(SignalError::UnknownSignal(..))));
        assert!(matches!(parse("B:USR1@99999"), Err(SignalError::BadTime(_))));
        assert_eq!(parse("B:USR1@20").unwrap().to_string(), "B:USR1@20");
    }
}
