//! `sshare`: Slurm's fair-share report from `rudel share`'s data. Rudel's fair-share is
//! flat (users, no account tree), so the Account column is empty. Options: `-a` (all
//! users; default: only you, as Slurm), `-u USERS`, `-n`, `-p`/`-P` (parsable, `|`).
use clap::Parser;

use super::{SlurmError, SlurmResult};

#[derive(Parser, Debug)]
#[command(name = "sshare", disable_help_flag = true, version)]
struct Args {
    #[arg(long)]
    help: bool,
    /// Every user.
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Only these users (comma-separated).
    #[arg(short = 'u', long = "users")]
    users: Option<String>,
    #[arg(short = 'n', long = "noheader")]
    noheader: bool,
    /// `|` after every field.
    #[arg(short = 'p', long = "parsable")]
    parsable: bool,
    /// `|` between fields.
    #[arg(short = 'P', long = "parsable2")]
    parsable2: bool,
}

const HEADERS: [&str; 7] = [
    "Account",
    "User",
    "RawShares",
    "NormShares",
    "RawUsage",
    "EffectvUsage",
    "FairShare",
];
const WIDTHS: [usize; 7] = [20, 10, 10, 11, 11, 13, 10];

pub async fn sshare(args: Vec<String>, head: &str) -> SlurmResult {
    let a: Args = super::parse("sshare", args)?;
    if a.help {
        println!("Usage: sshare [-a] [-u USERS] [-n] [-p|-P]");
        return Ok(0);
    }
    let users: Vec<String> = match (&a.users, a.all) {
        (Some(u), _) => u
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        (None, true) => Vec::new(),
        (None, false) => vec![crate::opts::user_name()],
    };
    let r = crate::share_cmd::fetch(head, users, false).await?;
    if let Some(note) = crate::share_cmd::disabled_note(&r) {
        return Err(SlurmError::msg(note));
    }
    let rows: Vec<[String; 7]> = r
        .rows
        .iter()
        .map(|u| {
            [
                String::new(),
                u.user.clone(),
                u.raw_shares.to_string(),
                format!("{:.6}", u.norm_shares),
                format!("{:.0}", u.raw_usage),
                format!("{:.6}", u.effective_usage),
                format!("{:.6}", u.fairshare),
            ]
        })
        .collect();
    print!("{}", render(&rows, &a));
    Ok(0)
}

fn render(rows: &[[String; 7]], a: &Args) -> String {
    let mut out = String::new();
    let line = |fields: &[String]| -> String {
        if a.parsable || a.parsable2 {
            let mut l = fields.join("|");
            if a.parsable {
                l.push('|');
            }
            l
        } else {
            fields
                .iter()
                .zip(WIDTHS)
                .enumerate()
                .map(|(i, (f, w))| if i < 2 { format!("{f:<w$}") } else { format!("{f:>w$}") })
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    if !a.noheader {
        let h: Vec<String> = HEADERS.iter().map(|s| s.to_string()).collect();
        out.push_str(&line(&h));
        out.push('\n');
        if !(a.parsable || a.parsable2) {
            let dashes: Vec<String> = WIDTHS.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&dashes.join(" "));
            out.push('\n');
        }
    }
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsable2_is_pipe_separated_with_slurms_headers() {
        let a = Args::try_parse_from(["sshare", "-a", "-P"]).unwrap();
        let row = [
            String::new(),
            "alice".into(),
            "1".into(),
            "0.500000".into(),
            "120".into(),
            "0.250000".into(),
            "0.707107".into(),
        ];
        let t = render(&[row], &a);
        assert_eq!(
            t,
            "Account|User|RawShares|NormShares|RawUsage|EffectvUsage|FairShare\n|alice|1|0.500000|120|0.250000|0.707107\n"
        );
        assert!(Args::try_parse_from(["sshare", "--colour"]).is_err());
    }
}
