//! Accounts: named groups of users that jobs are charged to (`-A/--account`), declared in
//! the replicated configuration (`account.NAME=users=alice,bob`), with limits of their own
//! (`limits.account.NAME.*`) that hold for all their members' jobs together.
//!
//! Once any account is declared, a job's account must be one its user belongs to: a user
//! free to name any account could escape an account's limits by charging another. Without
//! declared accounts `--account` is only a label (recorded, shown by `squeue`/`sacct`),
//! as in a Slurm without association enforcement.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Account {
    /// Users who may charge it.
    pub users: BTreeSet<String>,
}

/// The longest account name (it is part of every job record and of settings keys).
pub const MAX_ACCOUNT_NAME: usize = 64;

impl Account {
    /// Parses `users=alice,bob`.
    pub fn parse(text: &str) -> Result<Account, String> {
        let mut a = Account::default();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
            match key.trim() {
                "users" => {
                    for u in value.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                        check_name(u)?;
                        a.users.insert(u.to_string());
                    }
                }
                other => return Err(format!("unknown account field {other:?} (fields: users)")),
            }
        }
        Ok(a)
    }

    /// The setting's value (`users=alice,bob`), as [`Account::parse`] reads it.
    pub fn to_text(&self) -> String {
        format!("users={}", self.users.iter().cloned().collect::<Vec<_>>().join(","))
    }
}

/// Account and user names: what a Unix name or a Slurm account may hold, and nothing
/// that could break a `limits.account.NAME.FIELD` key or a listing.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ACCOUNT_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if ok && !name.starts_with('.') && !name.ends_with('.') {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name (1 to {MAX_ACCOUNT_NAME} of letters, digits, _ - . @; \
             no leading or trailing dot)"
        ))
    }
}

/// The account a job of `user` is charged to: the one it asked for, which must be one of
/// the user's once accounts are declared, else the user's default (the first declared
/// account, by name, that lists the user; none when the user is in no account).
pub fn resolve(accounts: &BTreeMap<String, Account>, user: &str, asked: &str) -> Result<String, String> {
    let asked = asked.trim();
    if accounts.is_empty() {
        if !asked.is_empty() {
            check_name(asked)?;
        }
        return Ok(asked.to_string());
    }
    let mine = || {
        accounts
            .iter()
            .filter(|(_, a)| a.users.contains(user))
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
    };
    if asked.is_empty() {
        return Ok(mine().first().map(|s| s.to_string()).unwrap_or_default());
    }
    match accounts.get(asked) {
        Some(a) if a.users.contains(user) => Ok(asked.to_string()),
        Some(_) => {
            let m = mine();
            Err(format!(
                "{user} may not charge account {asked} (not one of its users); {user}'s accounts: {}",
                if m.is_empty() { "none".to_string() } else { m.join(", ") }
            ))
        }
        None => Err(format!(
            "no account {asked:?}; accounts: {}",
            accounts.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> BTreeMap<String, Account> {
        [
            ("physics".to_string(), Account::parse("users=alice,bob").unwrap()),
            ("chem".to_string(), Account::parse("users=bob").unwrap()),
        ]
        .into()
    }

    #[test]
    fn a_member_charges_the_account_asked_or_the_first_of_theirs() {
        let a = accounts();
        assert_eq!(resolve(&a, "bob", "physics").unwrap(), "physics");
        assert_eq!(resolve(&a, "bob", "").unwrap(), "chem", "first by name");
        assert_eq!(resolve(&a, "carol", "").unwrap(), "", "in no account");
    }

    #[test]
    fn a_non_member_or_an_unknown_account_is_refused_with_the_choices() {
        let a = accounts();
        let e = resolve(&a, "alice", "chem").unwrap_err();
        assert_eq!(
            e,
            "alice may not charge account chem (not one of its users); alice's accounts: physics"
        );
        let e = resolve(&a, "alice", "bio").unwrap_err();
        assert!(e.contains("no account \"bio\"; accounts: chem, physics"), "{e}");
    }

    #[test]
    fn without_declared_accounts_the_account_is_a_label() {
        let none = BTreeMap::new();
        assert_eq!(resolve(&none, "alice", "anything").unwrap(), "anything");
        assert!(resolve(&none, "alice", "bad name").is_err());
        assert!(resolve(&none, "alice", &"x".repeat(65)).is_err());
    }

    #[test]
    fn the_setting_round_trips_and_bad_fields_are_refused() {
        let a = Account::parse("users=bob, alice").unwrap();
        assert_eq!(a.to_text(), "users=alice,bob");
        assert_eq!(Account::parse(&a.to_text()).unwrap(), a);
        assert!(Account::parse("colour=red").is_err());
        assert!(Account::parse("users=a b").is_err());
    }
}
