//! The command line: [`args`] holds the flags as clap parses them, [`resolve`]
//! turns them (and the `RMAC_*` environment variables, read there and nowhere
//! else) into the library's typed settings, once, as ripgrep turns its
//! low-level arguments into high-level ones.
pub mod args;
pub mod resolve;

pub use args::*;

/// The command line of this process (`rmac-native --input …` means `extract`).
/// Bad usage prints clap's message and exits with status 2.
pub fn parse() -> Cli {
    use clap::Parser;
    Cli::parse_from(with_default_subcommand(std::env::args_os().collect()))
}
