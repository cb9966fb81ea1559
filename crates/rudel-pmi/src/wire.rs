//! PMI-1's wire protocol ("simple PMI", as MPICH's own PMI client and Flux speak it): one
//! message per line, `cmd=NAME key=value ...`. A field named `value` comes last and runs
//! to the end of the line: Open MPI's data has spaces (MPICH's has none, so its own
//! client, which splits at spaces, reads the same lines). Shared by this
//! library (the client in every rank) and srun's server, so both read the same grammar.
use std::fmt::Write as _;

/// Longest line either side accepts: a value of `VALLEN_MAX` plus a key, a kvs name and
/// the words around them. A longer line is a broken or hostile peer, not a message.
pub const MAX_LINE: usize = 4096;
/// The limits the server announces (`cmd=maxes`): MPICH's own, which its code is sized for.
pub const KVSNAME_MAX: usize = 256;
pub const KEYLEN_MAX: usize = 64;
pub const VALLEN_MAX: usize = 1024;

/// Why a line is not a PMI-1 message (Display by hand: see `client::PmiError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    TooLong,
    NotKeyValue(String),
    NoCommand,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::TooLong => write!(f, "line longer than {MAX_LINE} bytes"),
            WireError::NotKeyValue(w) => write!(f, "`{w}` is not key=value"),
            WireError::NoCommand => write!(f, "the line does not start with cmd="),
        }
    }
}

impl std::error::Error for WireError {}

/// One message: its command and its fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub cmd: String,
    pub fields: Vec<(String, String)>,
}

impl Message {
    pub fn new(cmd: &str) -> Message {
        Message {
            cmd: cmd.to_string(),
            fields: Vec::new(),
        }
    }

    /// Adds a field (builder style).
    pub fn with(mut self, key: &str, value: impl ToString) -> Message {
        self.fields.push((key.to_string(), value.to_string()));
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `rc` of a response; a missing rc is success (some responses carry none).
    pub fn rc(&self) -> i32 {
        self.get("rc").and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Parses one line (without or with its newline). A value may contain `=` (base64
    /// padding in Open MPI's data): only the first `=` of a word splits it.
    pub fn parse(line: &str) -> Result<Message, WireError> {
        if line.len() > MAX_LINE {
            return Err(WireError::TooLong);
        }
        let line = line.trim_end_matches(['\n', '\r']);
        let (head, value) = match line.find(" value=") {
            Some(at) => (&line[..at], Some(&line[at + " value=".len()..])),
            None => (line, None),
        };
        let mut words = head.split_ascii_whitespace();
        let cmd = match words.next().and_then(|w| w.split_once('=')) {
            Some(("cmd", c)) => c.to_string(),
            _ => return Err(WireError::NoCommand),
        };
        let mut fields = Vec::new();
        for w in words {
            let (k, v) = w.split_once('=').ok_or_else(|| WireError::NotKeyValue(w.to_string()))?;
            fields.push((k.to_string(), v.to_string()));
        }
        if let Some(v) = value {
            fields.push(("value".to_string(), v.to_string()));
        }
        Ok(Message { cmd, fields })
    }

    /// The message as one line, newline included; `value` last (see the module's doc).
    pub fn to_line(&self) -> String {
        let mut s = format!("cmd={}", self.cmd);
        for (k, v) in self.fields.iter().filter(|(k, _)| k != "value") {
            let _ = write!(s, " {k}={v}");
        }
        if let Some(v) = self.get("value") {
            let _ = write!(s, " value={v}");
        }
        s.push('\n');
        s
    }
}

/// True if `s` can travel as a key: a non-empty word of printable ASCII; a space or
/// newline would split the line into other messages.
pub fn is_word(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

/// True if `s` can travel as a value: printable ASCII and spaces, possibly empty; a
/// newline would end the message early.
pub fn is_value(s: &str, max: usize) -> bool {
    s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips_and_values_keep_their_equals_signs() {
        let m = Message::new("put")
            .with("kvsname", "k1")
            .with("key", "a")
            .with("value", "QQ==");
        let line = m.to_line();
        assert_eq!(line, "cmd=put kvsname=k1 key=a value=QQ==\n");
        assert_eq!(Message::parse(&line).unwrap(), m);
        let spaced = Message::new("get_result").with("value", " a b= c ").with("rc", 0);
        assert_eq!(spaced.to_line(), "cmd=get_result rc=0 value= a b= c \n");
        assert_eq!(
            Message::parse(&spaced.to_line()).unwrap().get("value"),
            Some(" a b= c ")
        );
        assert_eq!(m.get("value"), Some("QQ=="));
        assert_eq!(Message::parse("cmd=barrier_out").unwrap().rc(), 0);
        assert_eq!(Message::parse("cmd=get_result rc=-1").unwrap().rc(), -1);
    }

    #[test]
    fn what_is_not_a_message_is_refused() {
        assert_eq!(Message::parse("mcmd=spawn"), Err(WireError::NoCommand));
        assert_eq!(Message::parse(""), Err(WireError::NoCommand));
        assert!(matches!(
            Message::parse("cmd=put value"),
            Err(WireError::NotKeyValue(_))
        ));
        assert_eq!(Message::parse(&"x".repeat(MAX_LINE + 1)), Err(WireError::TooLong));
        assert!(!is_word("a b", 10) && !is_word("", 10) && !is_word("abc", 2) && is_word("a=b", 3));
        assert!(is_value("", 10) && is_value("a b", 10) && !is_value("a\nb", 10));
    }
}
