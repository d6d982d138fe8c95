//! The `sigver` binary: parses the command line and runs the server.

use std::process::ExitCode;

use sigver::cli::{self, Command};
use sigver::logfmt::LogFormat;
use sigver::{Error, Server};

fn init_logger(format: LogFormat) {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // rustls warns about what a client sends (alerts, unexpected records): a client could fill
    // the log with them. TLS failures are counted in sigver_handshake_failures_total instead.
    // RUST_LOG=rustls=... still shows them.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("rustls")) {
        logger.filter_module("rustls", log::LevelFilter::Error);
    }
    if format == LogFormat::Json {
        logger.format(sigver::logfmt::write_json);
    }
    logger.init();
}

fn main() -> ExitCode {
    let config = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(config, format)) => {
            init_logger(format);
            *config
        }
        Ok(Command::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::SignKey { name, key_secret }) => {
            return match sigver::keys::load(&key_secret) {
                Ok(secrets) => {
                    println!("{}", secrets.signed_key(&name));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sigver: key secret: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Err(e) => {
            eprintln!("sigver: {e}\nTry 'sigver --help' for more information.");
            return ExitCode::from(2);
        }
    };
    // glibc raises its mmap threshold each time a large block is freed, so that after one
    // peak (deep send queues, large messages) later large buffers come from the heap, where
    // freeing them leaves holes the process keeps. A fixed threshold keeps every buffer of
    // 128 KiB or more in its own mapping, given back to the system when it is freed: memory
    // comes back after a peak, which a small host needs more than the speed of large buffers.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation policy; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    // Every connection is a descriptor: use all the hard limit allows. The server derives its
    // connection limit from what this leaves.
    if let Err(e) = sigver::limits::raise_fd_limit() {
        log::warn!("cannot raise the open-file limit: {e}");
    }
    let result = Server::bind(config).and_then(Server::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A bad key, certificate or key secret file, or the wrong sockets handed over by
        // systemd, is a usage mistake, like a bad flag.
        Err(e @ (Error::Tls(_) | Error::Activation(_) | Error::KeySecret(_))) => {
            eprintln!("sigver: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
