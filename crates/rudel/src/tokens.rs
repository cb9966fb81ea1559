//! `rudel token create|list|revoke` (admin) and `rudel login` (trade a token for user
//! credentials on this machine).
use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use rudel_proto::v1 as pb;
use serde_json::{json, Value};

use crate::show::timestamp;
use crate::{client, CmdResult, Failure};

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub cmd: TokenCmd,
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a join token and print it (shown once: only a hash is kept).
    ///
    /// A node joins with `rudel agent --head ADDR --token TOKEN`; a user on another machine
    /// with `rudel login --head ADDR --token TOKEN` (role client or admin).
    Create(CreateArgs),
    /// List join tokens: role, expiry, uses, and who holds certificates issued with them.
    List(ListArgs),
    /// Revoke a token and every certificate issued with it; nodes holding one are
    /// disconnected at once and their tasks handled as on node loss.
    Revoke(RevokeArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// What certificates issued with it may do: agent (a compute node), client (submit,
    /// list, and act on the user's own jobs), operator (a client that may also drain and
    /// resume nodes), admin (everything: any job, exec, tokens, head membership) or head (a
    /// new head joining the group with `rudel head --join ADDR --token TOKEN`).
    #[arg(long, default_value = "agent", value_parser = ["agent", "client", "operator", "admin", "head"])]
    pub role: String,
    /// The Unix user its certificates act as (required for client and operator tokens;
    /// jobs submitted with them run as, and belong to, this user).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// How long the token can be used to join, e.g. 24h; "0" = until revoked.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub ttl: String,
    /// Lifetime of each certificate issued with it.
    #[arg(long, value_name = "DURATION", default_value = "365d")]
    pub cert_ttl: String,
    /// Free text shown by `rudel token list`.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub description: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// Token id (first column of `rudel token list`).
    pub id: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// A client or admin token from `rudel token create --role client`.
    #[arg(long, value_name = "TOKEN")]
    pub token: String,
    /// Name recorded in the certificate (default: user@host).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where to save the credentials (default: ~/.config/rudel/credentials, which every
    /// rudel command on this machine then uses).
    #[arg(long = "save-to", value_name = "DIR")]
    pub save_to: Option<PathBuf>,
}

pub(crate) fn parse_ms(flag: &str, s: &str) -> Result<u64, Failure> {
    rudel_core::parse::parse_duration(s).map_err(|e| Failure::usage(anyhow!("{flag}: {e}")))
}

/// `rudel token ...`.
pub async fn token(a: TokenArgs, head: &str) -> CmdResult {
    match a.cmd {
        TokenCmd::Create(c) => create(c, head).await,
        TokenCmd::List(l) => list(l, head).await,
        TokenCmd::Revoke(r) => revoke(r, head).await,
    }
}

async fn create(a: CreateArgs, head: &str) -> CmdResult {
    let ttl_ms = parse_ms("--ttl", &a.ttl)?;
    let cert_ttl_ms = parse_ms("--cert-ttl", &a.cert_ttl)?;
    if cert_ttl_ms == 0 {
        return Err(Failure::usage(anyhow!("--cert-ttl must be more than 0")));
    }
    let mut c = client::connect(head).await?;
    let r = c
        .create_token(pb::CreateTokenRequest {
            role: a.role.clone(),
            description: a.description,
            ttl_ms,
            cert_ttl_ms,
            user: a.user.unwrap_or_default(),
        })
        .await
        .map_err(client::failure)?
        .into_inner();
    if a.json {
        println!(
            "{}",
            json!({"id": r.id, "token": r.token, "role": r.role, "expires_unix_ms": r.expires_unix_ms})
        );
        return Ok(0);
    }
    println!("{}", r.token);
    let until = if r.expires_unix_ms == 0 {
        "until revoked".to_string()
    } else {
        format!("until {}", timestamp(r.expires_unix_ms))
    };
    let how = if r.role == "agent" {
        format!("rudel agent --head {head} --token {}", r.token)
    } else if r.role == "head" {
        format!("rudel head --join {head} --token {} --listen ADDR --data DIR", r.token)
    } else {
        format!("rudel login --head {head} --token {}", r.token)
    };
    eprintln!(
        "token {} (role {}), usable {until}; use it with:\n  {how}",
        r.id, r.role
    );
    Ok(0)
}

fn token_json(t: &pb::TokenInfo) -> Value {
    json!({
        "id": t.id, "role": t.role, "description": t.description,
        "created_unix_ms": t.created_unix_ms, "expires_unix_ms": t.expires_unix_ms,
        "revoked_unix_ms": t.revoked_unix_ms, "uses": t.uses, "cert_ttl_ms": t.cert_ttl_ms,
        "holders": t.holders,
    })
}

async fn list(a: ListArgs, head: &str) -> CmdResult {
    let mut c = client::connect(head).await?;
    let r = c
        .list_tokens(pb::ListTokensRequest {})
        .await
        .map_err(client::failure)?
        .into_inner();
    if a.json {
        println!("{}", Value::Array(r.tokens.iter().map(token_json).collect()));
        return Ok(0);
    }
    println!(
        "{:>4}  {:<7} {:<9} {:<19}  {:>5}  {:<24} HOLDERS",
        "ID", "ROLE", "STATE", "EXPIRES", "USES", "DESCRIPTION"
    );
    let now = rudel_tls::now_ms();
    for t in &r.tokens {
        let state = if t.revoked_unix_ms > 0 {
            "revoked"
        } else if t.expires_unix_ms > 0 && t.expires_unix_ms <= now {
            "expired"
        } else {
            "valid"
        };
        let expires = if t.expires_unix_ms == 0 {
            "never".to_string()
        } else {
            timestamp(t.expires_unix_ms)
        };
        println!(
            "{:>4}  {:<7} {:<9} {:<19}  {:>5}  {:<24} {}",
            t.id,
            t.role,
            state,
            expires,
            t.uses,
            t.description.chars().take(24).collect::<String>(),
            t.holders.join(",")
        );
    }
    Ok(0)
}

async fn revoke(a: RevokeArgs, head: &str) -> CmdResult {
    let mut c = client::connect(head).await?;
    let r = c
        .revoke_token(pb::RevokeTokenRequest { id: a.id })
        .await
        .map_err(client::failure)?
        .into_inner();
    if a.json {
        println!("{}", json!({"id": a.id, "revoked": r.revoked}));
        return Ok(0);
    }
    if r.revoked.is_empty() {
        println!("token {} revoked (no certificates had been issued with it)", a.id);
    } else {
        println!(
            "token {} revoked with the certificates of: {}",
            a.id,
            r.revoked.join(", ")
        );
    }
    Ok(0)
}

/// `rudel login`.
pub async fn login(a: LoginArgs, head: &str) -> CmdResult {
    let dir = a.save_to.unwrap_or_else(client::login_dir);
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let name = a
        .name
        .unwrap_or_else(|| format!("{user}@{}", rudel_agent::identity::hostname()));
    let heads: Vec<String> = head
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let joined = rudel_tls::enroll::join(&heads, &a.token, &name, "", rudel_tls::enroll::Want::User)
        .await
        .map_err(|e| match e {
            rudel_tls::enroll::EnrollError::Local(m) => Failure::usage(anyhow!(m)),
            other => Failure::from(anyhow!("{other}")),
        })?;
    joined
        .creds
        .save(&dir)
        .map_err(|e| Failure::from(anyhow!("cannot save credentials: {e}")))?;
    println!(
        "logged in as {name} (role {}); credentials in {}, valid until {}",
        joined.role,
        dir.display(),
        timestamp(joined.expires_unix_ms)
    );
    if dir != client::login_dir() {
        println!("  use them with: export RUDEL_CREDENTIALS={}", dir.display());
    }
    Ok(0)
}
