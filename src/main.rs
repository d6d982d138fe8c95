//! The `sigver` binary: parses the command line and runs the server.

use std::process::ExitCode;

use sigver::cli::{self, Command};
use sigver::Server;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sigver: {e}\nTry 'sigver --help' for more information.");
            return ExitCode::from(2);
        }
    };
    let result = Server::bind(config).and_then(Server::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
