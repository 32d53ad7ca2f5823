//! `rmac-native`: parse the command line, call the library, map results to
//! exit codes (0 all good, 3 some images failed, 1 the run could not start,
//! 2 bad usage).
use clap::Parser;
use rmac_native::cli::{Cli, Command, with_default_subcommand};
use rmac_native::commands;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse_from(with_default_subcommand(std::env::args_os().collect()));
    let result = match &cli.command {
        Command::Extract(args) => commands::extract(args).map(|s| s.exit_code()),
        Command::Weights(cmd) => commands::weights(cmd).map(|_| 0),
        Command::Pca(cmd) => commands::pca(cmd).map(|_| 0),
        Command::Neighbours(args) => commands::neighbours(args).map(|_| 0),
        Command::Search(args) => commands::search(args).map(|_| 0),
        Command::Convert(args) => commands::convert(args),
        Command::Index(args) => commands::index(args).map(|_| 0),
        Command::Bench(args) => commands::bench(args).map(|_| 0),
        Command::Evaluate(args) => commands::evaluate(args).map(|_| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
