//! `rudel node forget NAME` (admin): unbind a node name from the machine holding it, so
//! that a replacement machine may join under it.
use clap::{Args, Subcommand};
use rudel_proto::v1 as pb;
use serde_json::json;

use crate::{client, CmdResult};

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub cmd: NodeCmd,
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Forget a node (admin): its name is bound to the machine (data directory) that joined
    /// under it, and another machine joining under that name is refused. Forget it when the
    /// old machine is gone for good (or its data directory was wiped): its running tasks
    /// are handled as lost (--requeue ones run again, the others end node_fail), its
    /// certificates are revoked (if it still runs, its agent stops), and a new machine may
    /// then join with `rudel agent --name NAME --token TOKEN`.
    Forget(ForgetArgs),
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// The node's name (as `rudel nodes` shows it).
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `rudel node ...`.
pub async fn node(a: NodeArgs, head: &str) -> CmdResult {
    match a.cmd {
        NodeCmd::Forget(f) => forget(f, head).await,
    }
}

async fn forget(a: ForgetArgs, head: &str) -> CmdResult {
    let mut c = client::connect(head).await?;
    let r = c
        .forget_node(pb::ForgetNodeRequest { name: a.name.clone() })
        .await
        .map_err(client::failure)?
        .into_inner();
    if a.json {
        println!(
            "{}",
            json!({"name": a.name, "tasks": r.tasks, "revoked_certs": r.revoked_certs})
        );
        return Ok(0);
    }
    println!(
        "Forgot node {}: {} task(s) given up (--requeue ones run again, the others end node_fail), \
         {} certificate(s) revoked; another machine may now join as {}",
        a.name, r.tasks, r.revoked_certs, a.name
    );
    Ok(0)
}
