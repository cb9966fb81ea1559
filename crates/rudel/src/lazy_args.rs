//! A subcommand's options, built only when that subcommand is the one called.
//!
//! clap's derive builds every subcommand's arguments before it parses anything: with 30
//! subcommands and a few hundred options, building only the called one saved 0.4-0.5 ms
//! of CPU and about 60 page faults of every `rudel submit` (issue 12: a local submit's
//! whole process is meant to take 3 ms).
//! Wrapping a variant's options in [`Lazy`] hands clap a deferred builder
//! ([`clap::Command::defer`]) instead; clap runs it when it enters the subcommand, and
//! `--help`, usage errors and `Command::build` (which the tests call) see the same
//! command as before.
use clap::builder::Resettable;
use clap::{ArgMatches, Args, Command, FromArgMatches};

/// `T`'s options, added to the subcommand when clap enters it.
#[derive(Debug)]
pub struct Lazy<T>(pub T);

impl<T: FromArgMatches> FromArgMatches for Lazy<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Lazy)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

impl<T: Args> Args for Lazy<T> {
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }

    fn augment_args(cmd: Command) -> Command {
        cmd.defer(keep_about::<T>)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        cmd.defer(keep_about_for_update::<T>)
    }
}

/// Adds `T`'s options, keeping the subcommand's own description: built eagerly, the
/// variant's doc comment was applied after the options struct's (`/// Options shared by
/// submit and run`), and now the struct's would come last and replace it in `--help`.
fn keep_about<T: Args>(cmd: Command) -> Command {
    restoring_about(cmd, T::augment_args)
}

fn keep_about_for_update<T: Args>(cmd: Command) -> Command {
    restoring_about(cmd, T::augment_args_for_update)
}

fn restoring_about(cmd: Command, add: fn(Command) -> Command) -> Command {
    let (about, long) = (cmd.get_about().cloned(), cmd.get_long_about().cloned());
    add(cmd)
        .about(Resettable::from(about))
        .long_about(Resettable::from(long))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};

    /// The struct's own description, which the subcommand's must win over.
    #[derive(Args, Debug)]
    struct Opts {
        #[arg(long)]
        n: u32,
    }

    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(long, global = true)]
        g: Option<String>,
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        /// The one called.
        A(Lazy<Opts>),
        /// Another one.
        B(Lazy<Opts>),
    }

    #[test]
    fn the_called_subcommand_parses_its_options_and_the_globals() {
        let cli = Cli::try_parse_from(["x", "a", "--n", "3", "--g", "v"]).unwrap();
        let Cmd::A(Lazy(o)) = cli.cmd else {
            panic!("wrong subcommand")
        };
        assert_eq!(o.n, 3);
        assert_eq!(cli.g.as_deref(), Some("v"));
    }

    #[test]
    fn an_unknown_option_of_a_lazy_subcommand_is_a_usage_error() {
        let e = Cli::try_parse_from(["x", "b", "--m", "3"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn only_the_called_subcommand_is_built() {
        // The deferred builder has not run for `b`: it has no `--n` yet. (If this fails,
        // clap builds deferred subcommands eagerly and Lazy saves nothing.)
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let _ = cmd.try_get_matches_from_mut(["x", "a", "--n", "1"]).unwrap();
        let b = cmd.find_subcommand("b").unwrap();
        assert!(b.get_arguments().all(|a| a.get_id() != "n"));
        let a = cmd.find_subcommand("a").unwrap();
        assert!(a.get_arguments().any(|a| a.get_id() == "n"));
    }

    #[test]
    fn building_the_whole_command_builds_every_subcommand() {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        cmd.build();
        for name in ["a", "b"] {
            let sub = cmd.find_subcommand(name).unwrap();
            assert!(sub.get_arguments().any(|a| a.get_id() == "n"), "{name}");
        }
    }

    #[test]
    fn the_subcommand_keeps_its_own_description() {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        cmd.build();
        let a = cmd.find_subcommand("a").unwrap();
        assert_eq!(a.get_about().map(|s| s.to_string()).as_deref(), Some("The one called"));
    }
}
