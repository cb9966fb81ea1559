//! `rudel whoami`: the identity the head decided for this caller (not what the client
//! thinks): user, uid (socket only), role, transport and certificate fingerprint (TLS).
use clap::Args;
use rudel_proto::v1 as pb;
use serde_json::json;

use crate::{client, CmdResult};

#[derive(Args, Debug)]
pub struct WhoamiArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `rudel whoami`.
pub async fn whoami(a: WhoamiArgs, head: &str) -> CmdResult {
    let mut c = client::connect_any(head).await?;
    let r = c
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map_err(client::failure)?
        .into_inner();
    if a.json {
        println!(
            "{}",
            json!({"user": r.user, "uid": r.uid, "role": r.role, "transport": r.transport, "fingerprint": r.fingerprint})
        );
        return Ok(0);
    }
    let user = if r.user.is_empty() {
        "(none: this certificate names no user; ask an admin for `rudel token create --role client --user YOU`)"
            .to_string()
    } else {
        r.user.clone()
    };
    println!("user:        {user}");
    if let Some(uid) = r.uid {
        println!("uid:         {uid}");
    }
    println!("role:        {}", r.role);
    println!("transport:   {}", r.transport);
    if !r.fingerprint.is_empty() {
        println!("certificate: {}", r.fingerprint);
    }
    Ok(0)
}
