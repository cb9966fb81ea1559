//! `rudel kv`: the job-scoped key-value store, from inside a running job (a barrier, rank 0
//! publishing `host:port` for the others). The call goes to this job's agent through its
//! job socket (`$RUDEL_AGENT_SOCKET`), which knows which job the caller belongs to; the
//! store is the head's and is deleted when the job ends (docs/parallel-jobs.md).
use clap::{Args, Subcommand};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{CmdResult, Failure};

#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(subcommand)]
    pub op: KvOp,
}

#[derive(Subcommand, Debug)]
pub enum KvOp {
    /// Store VALUE under KEY (waking every `wait` for KEY).
    Put { key: String, value: String },
    /// Print KEY's value; exit 1 if it has none.
    Get { key: String },
    /// Wait until KEY has a value, then print it.
    Wait {
        key: String,
        /// Give up after this many seconds (exit 1); default one hour.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Add 1 to the number under KEY (0 if unset) and print the result, atomically: N tasks
    /// each calling it once see 1..N exactly once (a barrier counts arrivals with it).
    Incr { key: String },
}

fn fail(msg: impl Into<String>) -> Failure {
    Failure {
        error: anyhow::anyhow!(msg.into()),
        code: 1,
    }
}

/// `rudel kv ...`.
pub async fn kv(a: KvArgs) -> CmdResult {
    let (op, key, value, timeout) = match &a.op {
        KvOp::Put { key, value } => ("put", key, value.as_str(), 0),
        KvOp::Get { key } => ("get", key, "", 0),
        KvOp::Wait { key, timeout } => ("wait", key, "", (*timeout).max(1)),
        KvOp::Incr { key } => ("incr", key, "", 0),
    };
    let sock = std::env::var("RUDEL_AGENT_SOCKET").map_err(|_| {
        fail("rudel kv works inside a running job (RUDEL_AGENT_SOCKET is not set: not a task, or its agent has no job socket)")
    })?;
    let req = json!({"op": "kv", "kv": op, "key": key, "value": value, "timeout_s": timeout});
    let stream = tokio::net::UnixStream::connect(&sock)
        .await
        .map_err(|e| fail(format!("cannot reach the agent at {sock}: {e}")))?;
    let (rd, mut wr) = stream.into_split();
    wr.write_all(format!("{req}\n").as_bytes())
        .await
        .map_err(|e| fail(format!("cannot send to the agent: {e}")))?;
    let mut line = String::new();
    BufReader::new(rd)
        .read_line(&mut line)
        .await
        .map_err(|e| fail(format!("no answer from the agent: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_str(line.trim_end()).map_err(|e| fail(format!("bad answer from the agent: {e}: {line}")))?;
    if let Some(e) = v["error"].as_str() {
        return Err(fail(format!("kv {op} {key}: {e}")));
    }
    match (op, v["value"].as_str()) {
        ("put", _) => Ok(0),
        (_, Some(val)) => {
            println!("{val}");
            Ok(0)
        }
        (_, None) => Err(fail(format!("kv {op} {key}: no such key"))),
    }
}
