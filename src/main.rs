//! `rmac-native`: parse the command line, call the library, map results to
//! exit codes (0 all good, 3 some images failed, 1 the run could not start,
//! 2 bad usage).
mod cli;
mod commands;

use cli::Command;
use cli::resolve::Env;
use std::process::ExitCode;

/// `rmac-native search … | head` closes stdout early; `println!` then panics
/// with a backtrace. Exit quietly instead, with the status a shell gives a
/// process stopped by SIGPIPE (128 + 13). (SIGPIPE itself stays ignored: the
/// PostgreSQL and MPI connections must see a lost peer as an error to retry.)
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info)
    }));
}

fn main() -> ExitCode {
    cli::resolve::quiet_display_probes();
    quiet_on_closed_stdout();
    let cli = cli::parse();
    let env = Env::read();
    let result = match &cli.command {
        Command::Extract(args) => commands::extract(args, &env).map(|s| s.exit_code()),
        Command::Weights(cmd) => commands::weights(cmd, &env).map(|_| 0),
        Command::Pca(cmd) => commands::pca(cmd, &env).map(|_| 0),
        Command::Neighbours(args) => commands::neighbours(args, &env).map(|_| 0),
        Command::Search(args) => commands::search(args, &env),
        Command::Convert(args) => commands::convert(args, &env),
        Command::Index(args) => commands::index(args, &env).map(|_| 0),
        Command::Knn(args) => commands::knn(args, &env).map(|_| 0),
        Command::Dba(args) => commands::dba(args, &env),
        Command::Dedup(args) => commands::dedup(args, &env),
        Command::Bench(args) => commands::bench(args).map(|_| 0),
        Command::Evaluate(args) => commands::evaluate(args, &env).map(|_| 0),
        Command::Serve(args) => commands::serve(args, &env).map(|_| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
