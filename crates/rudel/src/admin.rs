//! `rudel admin`: the head group (list, remove) and the step-down drill.
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::{Args, Subcommand};
use rudel_proto::v1 as pb;
use serde_json::json;

use crate::{client, CmdResult, Failure};

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub cmd: AdminCmd,
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// The head group: id, address, voter/learner, leader, replicated index.
    ///
    /// Heads are added by starting them with `rudel head --join ADDR --token TOKEN`
    /// (`rudel admin heads add ADDR` prints that command with a fresh token and waits);
    /// they join as learners and become voters once caught up.
    Heads(HeadsArgs),
    /// Hand leadership to another head on purpose (a failover drill): the most
    /// up-to-date follower starts an election; prints the new leader.
    StepDown(StepDownArgs),
    /// The scheduling configuration (queue order, queue depths, behaviour version):
    /// `show`, `set NAME=VALUE...`, `apply FILE`.
    Config(crate::config_cmd::ConfigArgs),
}

#[derive(Args, Debug)]
pub struct HeadsArgs {
    #[command(subcommand)]
    pub cmd: Option<HeadsCmd>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum HeadsCmd {
    /// Prepare a new head at ADDR: creates a head token, prints the command to run on
    /// that machine, then waits (with progress) until the head has joined and become a
    /// voter. The membership change itself happens when that head starts (learner first,
    /// voter once caught up, by joint consensus).
    ///
    /// With --json: one JSON line with the token and command at once, and one when the
    /// head is a voter.
    Add(AddHeadArgs),
    /// Remove a head (by id or address) from the group (joint consensus); it stops
    /// receiving the log.
    Remove {
        /// Head id or address (as `rudel admin heads` lists them).
        head: String,
    },
}

#[derive(Args, Debug)]
pub struct AddHeadArgs {
    /// The new head's address (HOST:PORT) as the other heads will reach it: its
    /// `--listen` (or `--advertise`).
    pub addr: String,
    /// How long the token stays usable (e.g. 30m, 1h).
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Print the token and command and return, without waiting for the head to join.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this long (the token stays usable until --ttl).
    #[arg(long, default_value = "10m")]
    pub timeout: String,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StepDownArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `rudel admin ...`.
pub async fn admin(a: AdminArgs, head: &str) -> CmdResult {
    match a.cmd {
        AdminCmd::Heads(h) => match h.cmd {
            None => list(head, h.json).await,
            Some(HeadsCmd::Add(a)) => add(head, a).await,
            Some(HeadsCmd::Remove { head: which }) => {
                let id = match which.parse::<u64>() {
                    Ok(id) => id,
                    Err(_) => heads(head)
                        .await?
                        .heads
                        .iter()
                        .find(|h| h.addr == which)
                        .map(|h| h.id)
                        .ok_or_else(|| {
                            Failure::usage(anyhow!("no head {which:?} in the group (see `rudel admin heads`)"))
                        })?,
                };
                let mut c = client::connect(head).await?;
                c.remove_head(pb::RemoveHeadRequest { id })
                    .await
                    .map_err(client::failure)?;
                println!("removed head {id}");
                Ok(0)
            }
        },
        AdminCmd::StepDown(s) => step_down(head, s.json).await,
        AdminCmd::Config(c) => crate::config_cmd::config(c, head).await,
    }
}

async fn heads(head: &str) -> Result<pb::ListHeadsResponse, Failure> {
    // The leader knows everyone's progress; without one, any head's view.
    let mut c = match client::connect(head).await {
        Ok(c) => c,
        Err(_) => client::connect_any(head).await?,
    };
    Ok(c.list_heads(pb::ListHeadsRequest {})
        .await
        .map_err(client::failure)?
        .into_inner())
}

async fn list(head: &str, json_out: bool) -> CmdResult {
    let r = heads(head).await?;
    if json_out {
        let heads: Vec<_> = r
            .heads
            .iter()
            .map(|h| json!({"id": h.id, "addr": h.addr, "role": h.role, "leader": h.leader, "matched": h.matched}))
            .collect();
        println!(
            "{}",
            json!({"heads": heads, "term": r.term, "leader_id": r.leader_id, "answered_by": r.answered_by,
                   "last_log_index": r.last_log_index, "last_applied": r.last_applied})
        );
        return Ok(0);
    }
    println!(
        "{:>4}  {:<24} {:<8} {:<8} {:>10}",
        "ID", "ADDRESS", "ROLE", "STATE", "MATCHED"
    );
    for h in &r.heads {
        println!(
            "{:>4}  {:<24} {:<8} {:<8} {:>10}",
            h.id,
            h.addr,
            h.role,
            if h.leader { "leader" } else { "follower" },
            if h.matched == 0 {
                "-".to_string()
            } else {
                h.matched.to_string()
            }
        );
    }
    println!(
        "term {}, leader {}, last log index {} (answered by head {})",
        r.term,
        if r.leader_id == 0 {
            "none".to_string()
        } else {
            r.leader_id.to_string()
        },
        r.last_log_index,
        r.answered_by
    );
    Ok(0)
}

async fn add(head: &str, a: AddHeadArgs) -> CmdResult {
    if a.addr.parse::<std::net::SocketAddr>().is_err() && !a.addr.contains(':') {
        return Err(Failure::usage(anyhow!("{:?}: expected HOST:PORT", a.addr)));
    }
    let ttl_ms = crate::tokens::parse_ms("--ttl", &a.ttl)?;
    let timeout = Duration::from_millis(crate::tokens::parse_ms("--timeout", &a.timeout)?);
    let r = heads(head).await?;
    if let Some(h) = r.heads.iter().find(|h| h.addr == a.addr) {
        return Err(Failure::usage(anyhow!(
            "{} is already head {} of the group ({}); `rudel admin heads remove {}` first to replace it",
            a.addr,
            h.id,
            h.role,
            h.id
        )));
    }
    let leader = r
        .heads
        .iter()
        .find(|h| h.leader)
        .map(|h| h.addr.clone())
        .ok_or_else(|| Failure::from(anyhow!("no leader right now (no quorum?): a head cannot join")))?;
    let mut c = client::connect(head).await?;
    let t = c
        .create_token(pb::CreateTokenRequest {
            role: "head".into(),
            description: format!("head at {}", a.addr),
            ttl_ms,
            cert_ttl_ms: 0,
            user: String::new(),
        })
        .await
        .map_err(client::failure)?
        .into_inner();
    let command = format!(
        "rudel head --listen {} --data DIR --join {leader} --token {}",
        a.addr, t.token
    );
    if a.json {
        println!("{}", json!({"token": t.token, "token_id": t.id, "command": command}));
    } else {
        println!("{command}");
        eprintln!(
            "run that on the new head's machine (DIR: its data directory; if it listens on 0.0.0.0, add --advertise {})",
            a.addr
        );
    }
    if a.no_wait {
        return Ok(0);
    }
    let t0 = Instant::now();
    let mut last_said = String::new();
    loop {
        if let Ok(r) = heads(head).await {
            let state = r
                .heads
                .iter()
                .find(|h| h.addr == a.addr)
                .map(|h| (h.id, h.role.clone()));
            let now = match &state {
                None => "waiting for the head to start and join".to_string(),
                Some((id, role)) if role == "voter" => {
                    if a.json {
                        println!(
                            "{}",
                            json!({"id": id, "addr": a.addr, "role": role, "secs": t0.elapsed().as_secs_f64()})
                        );
                    } else {
                        println!(
                            "head {id} at {} is a voter ({:.1} s)",
                            a.addr,
                            t0.elapsed().as_secs_f64()
                        );
                    }
                    return Ok(0);
                }
                Some((id, role)) => format!("head {id} joined as a {role}, catching up"),
            };
            if now != last_said {
                eprintln!("{now}…");
                last_said = now;
            }
        }
        if t0.elapsed() > timeout {
            return Err(Failure::from(anyhow!(
                "{} did not become a voter within {} (the token stays usable: run the command above)",
                a.addr,
                a.timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn step_down(head: &str, json_out: bool) -> CmdResult {
    let r = heads(head).await?;
    let old = r.leader_id;
    if old == 0 {
        return Err(Failure::from(anyhow!("no leader right now: nothing to step down")));
    }
    let Some(next) = r
        .heads
        .iter()
        .filter(|h| h.role == "voter" && h.id != old)
        .max_by_key(|h| h.matched)
    else {
        return Err(Failure::from(anyhow!(
            "head {old} is the only voter: there is no one to hand leadership to"
        )));
    };
    let old_addr = r
        .heads
        .iter()
        .find(|h| h.id == old)
        .map(|h| h.addr.clone())
        .unwrap_or_default();
    let mut c = client::connect_any(&next.addr).await?;
    c.campaign(pb::CampaignRequest {}).await.map_err(client::failure)?;
    let t0 = Instant::now();
    loop {
        if let Ok(mut c) = client::connect_any(&next.addr).await {
            if let Ok(i) = c.cluster_info(pb::ClusterInfoRequest { with_hash: false }).await {
                let i = i.into_inner();
                if !i.leader_addr.is_empty() && i.leader_addr != old_addr {
                    let ms = t0.elapsed().as_millis();
                    if json_out {
                        println!(
                            "{}",
                            json!({"old_leader": old, "leader_addr": i.leader_addr, "term": i.term, "ms": ms})
                        );
                    } else {
                        println!(
                            "head {old} stepped down; leader is now {} (term {}), after {ms} ms",
                            i.leader_addr, i.term
                        );
                    }
                    return Ok(0);
                }
            }
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(Failure::from(anyhow!(
                "no new leader within 10 s after asking head {} to campaign",
                next.id
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
