//! The connection of one rank to its step's PMI server (srun), in Rust terms: the C API
//! (`capi.rs`) is a thin shell over this.
//!
//! The server's address, this rank's id and the step's shape come from the environment the
//! agent gives every task of a step: `PMI_PORT` (host:port of srun's server), `PMI_ID`,
//! and `SLURM_GTIDS` (the ranks on this node, for the "clique").
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::wire::{Message, WireError, MAX_LINE};

/// How long connecting and an ordinary request may take: srun answers at once, so this
/// only bounds a server that is gone without closing (a dead node).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Why a PMI call failed; printed by the C API, as the MPI library prints nothing useful.
/// (Display by hand, not thiserror: this crate is also compiled alone, without cargo, into
/// the library the agent embeds; see rudel-agent's build.rs.)
#[derive(Debug)]
pub enum PmiError {
    NoEnv(&'static str),
    BadEnv { var: &'static str, value: String },
    Connect { addr: String, source: std::io::Error },
    Io(std::io::Error),
    Closed,
    Wire(WireError),
    Unexpected { asked: String, got: String },
    Refused { cmd: String, rc: i32, msg: String },
}

impl std::fmt::Display for PmiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PmiError::NoEnv(v) => write!(
                f,
                "{v} is not set: this process was not started by rudel's srun with PMI"
            ),
            PmiError::BadEnv { var, value } => write!(f, "{var}={value} is not valid"),
            PmiError::Connect { addr, source } => write!(f, "cannot reach srun's PMI server at {addr}: {source}"),
            PmiError::Io(e) => write!(f, "lost the connection to srun's PMI server: {e}"),
            PmiError::Closed => write!(f, "srun's PMI server closed the connection"),
            PmiError::Wire(e) => write!(f, "bad message from srun's PMI server: {e}"),
            PmiError::Unexpected { asked, got } => write!(f, "srun's PMI server answered {got} to {asked}"),
            PmiError::Refused { cmd, rc, msg } => write!(f, "srun's PMI server refused {cmd}: rc={rc} {msg}"),
        }
    }
}

impl std::error::Error for PmiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PmiError::Connect { source, .. } | PmiError::Io(source) => Some(source),
            PmiError::Wire(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for PmiError {
    fn from(e: std::io::Error) -> PmiError {
        PmiError::Io(e)
    }
}

impl From<WireError> for PmiError {
    fn from(e: WireError) -> PmiError {
        PmiError::Wire(e)
    }
}

/// A rank's session with the server.
pub struct Client {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
    pub rank: i32,
    pub size: i32,
    pub kvsname: String,
    pub clique: Vec<i32>,
}

fn env(var: &'static str) -> Result<String, PmiError> {
    std::env::var(var).map_err(|_| PmiError::NoEnv(var))
}

fn env_int(var: &'static str) -> Result<i32, PmiError> {
    let value = env(var)?;
    value.parse().map_err(|_| PmiError::BadEnv { var, value })
}

fn connect(addr: &str) -> Result<TcpStream, PmiError> {
    let err = |source| PmiError::Connect {
        addr: addr.to_string(),
        source,
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addr.to_socket_addrs().map_err(err)? {
        match TcpStream::connect_timeout(&a, TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(err(last))
}

impl Client {
    /// Connects and introduces this rank (`initack`, then `init`), learning rank, size
    /// and the key-value space's name.
    pub fn connect_from_env() -> Result<Client, PmiError> {
        let mut c = Client::connect(&env("PMI_PORT")?, env_int("PMI_ID")?)?;
        c.clique = clique(c.rank);
        Ok(c)
    }

    /// Connects to the server at `addr` as rank `id` (the clique is this rank alone).
    pub fn connect(addr: &str, id: i32) -> Result<Client, PmiError> {
        let wr = connect(addr)?;
        wr.set_nodelay(true)?;
        let mut c = Client {
            rd: BufReader::new(wr.try_clone()?),
            wr,
            rank: id,
            size: 0,
            kvsname: String::new(),
            clique: Vec::new(),
        };
        c.send(&Message::new("initack").with("pmiid", id))?;
        c.expect("initack")?;
        // The server then tells size, rank and debug, one `cmd=set` each.
        for _ in 0..3 {
            let m = c.expect("set")?;
            if let Some(v) = m.get("size").and_then(|v| v.parse().ok()) {
                c.size = v;
            }
            if let Some(v) = m.get("rank").and_then(|v| v.parse().ok()) {
                c.rank = v;
            }
        }
        c.call(
            Message::new("init").with("pmi_version", 1).with("pmi_subversion", 1),
            "response_to_init",
        )?;
        let name = c.call(Message::new("get_my_kvsname"), "my_kvsname")?;
        c.kvsname = name.get("kvsname").unwrap_or_default().to_string();
        c.clique = vec![c.rank];
        Ok(c)
    }

    fn send(&mut self, m: &Message) -> Result<(), PmiError> {
        self.wr.write_all(m.to_line().as_bytes())?;
        Ok(())
    }

    fn read(&mut self) -> Result<Message, PmiError> {
        let mut line = String::new();
        let n = (&mut self.rd).take(MAX_LINE as u64 + 1).read_line(&mut line)?;
        if n == 0 {
            return Err(PmiError::Closed);
        }
        Ok(Message::parse(&line)?)
    }

    fn expect(&mut self, cmd: &str) -> Result<Message, PmiError> {
        let m = self.read()?;
        if m.cmd != cmd {
            return Err(PmiError::Unexpected {
                asked: cmd.to_string(),
                got: m.cmd,
            });
        }
        Ok(m)
    }

    /// Sends `m` and reads the answer `reply`; a non-zero rc is an error.
    fn call(&mut self, m: Message, reply: &str) -> Result<Message, PmiError> {
        self.wr.set_read_timeout(Some(TIMEOUT))?;
        self.send(&m)?;
        let r = self.expect(reply)?;
        if r.rc() != 0 {
            return Err(PmiError::Refused {
                cmd: m.cmd,
                rc: r.rc(),
                msg: r.get("msg").unwrap_or_default().to_string(),
            });
        }
        Ok(r)
    }

    pub fn put(&mut self, key: &str, value: &str) -> Result<(), PmiError> {
        let m = Message::new("put")
            .with("kvsname", &self.kvsname)
            .with("key", key)
            .with("value", value);
        self.call(m, "put_result").map(drop)
    }

    /// The value of `key`, or None if no rank put it (before the last barrier).
    pub fn get(&mut self, key: &str) -> Result<Option<String>, PmiError> {
        let m = Message::new("get").with("kvsname", &self.kvsname).with("key", key);
        self.wr.set_read_timeout(Some(TIMEOUT))?;
        self.send(&m)?;
        let r = self.expect("get_result")?;
        Ok((r.rc() == 0).then(|| r.get("value").unwrap_or_default().to_string()))
    }

    /// Waits until every rank of the step entered the barrier. No timeout: ranks start
    /// and compute at their own pace; a dead srun closes the connection, which ends it.
    pub fn barrier(&mut self) -> Result<(), PmiError> {
        self.wr.set_read_timeout(None)?;
        self.send(&Message::new("barrier_in"))?;
        self.expect("barrier_out").map(drop)
    }

    /// Tells srun this rank aborts the job (srun then kills the step).
    pub fn abort(&mut self, code: i32, msg: &str) -> Result<(), PmiError> {
        let words: String = msg.split_ascii_whitespace().collect::<Vec<_>>().join("_");
        let m = Message::new("abort").with("exitcode", code);
        let m = if words.is_empty() { m } else { m.with("msg", words) };
        self.send(&m)
    }

    pub fn finalize(&mut self) -> Result<(), PmiError> {
        self.call(Message::new("finalize"), "finalize_ack").map(drop)
    }
}

/// The ranks on this node (`SLURM_GTIDS`, set by the agent), or just this one.
fn clique(rank: i32) -> Vec<i32> {
    let parsed: Option<Vec<i32>> = std::env::var("SLURM_GTIDS")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|r| r.trim().parse().ok())
                .collect::<Option<Vec<i32>>>()
        })
        .unwrap_or(None);
    match parsed {
        Some(v) if v.contains(&rank) => v,
        _ => vec![rank],
    }
}
