//! The command line (docs/PROTOCOL.md §8): the flags of the original, plus our settings.
//!
//! Parsing is a pure function from arguments to a [`Command`], so that every flag and every
//! mistake is tested without starting a process; `main` only prints and exits.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use std::path::PathBuf;

use crate::access::OriginPolicy;
use crate::allow::IpNet;
use crate::config::{Config, DEFAULT_PORT};
use crate::logfmt::LogFormat;
use crate::tls::TlsFiles;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Serve with this configuration, logging in this format.
    Run(Box<Config>, LogFormat),
    /// Print this text (help or version) and exit successfully.
    Print(String),
    /// `sign-key NAME --key-secret FILE`: print the signed key `NAME.SIG`, made with the
    /// first secret of the file, and exit successfully.
    SignKey {
        /// The name to sign, as it will appear in the URL path.
        name: String,
        /// The secrets file.
        key_secret: PathBuf,
    },
}

/// A command line that cannot be obeyed. `main` prints it and exits with status 2.
#[derive(Debug, PartialEq, Eq)]
pub enum CliError {
    /// A flag's value is missing or malformed.
    BadValue {
        /// The flag.
        flag: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// An argument no flag takes.
    Unknown(String),
    /// TLS needs both a key and a certificate; only one was given (or only `--ca`).
    TlsIncomplete,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadValue { flag, problem } => write!(f, "invalid value for {flag}: {problem}"),
            Self::Unknown(arg) => write!(f, "unexpected argument '{arg}'"),
            Self::TlsIncomplete => write!(
                f,
                "TLS needs both --key and --cert (--ca is optional); \
                 give both to serve wss://, or neither to serve ws://"
            ),
        }
    }
}

impl std::error::Error for CliError {}

/// The text of `--help`.
pub fn usage() -> String {
    format!(
        "\
Usage: sigver [options]
       sigver sign-key <name> --key-secret <file>   print the signed key <name>.<sig>

WebRTC signaling server for Netflux (https://coast-team.github.io/netflux/).

Options:
  -V, --version                  print the version
  -h, --host <ip>                address to bind (default: 0.0.0.0)
  -p, --port <number>            port to listen on, 0 for any free port (default: {DEFAULT_PORT})
  -k, --key <file>               TLS private key (PEM); with --cert, serves wss://
  -c, --cert <file>              TLS certificate chain (PEM)
  -a, --ca <file>                intermediate certificates (PEM), appended to the chain
      --no-tls-resumption        every TLS connection pays a full handshake (default:
                                 sessions resume with tickets, keys rotated every 6 h)
      --heartbeat-interval <ms>  time between heartbeats, at most 3600000 (default: 5000)
      --key-secret <file>        only keys signed with a secret of this file (one a line)
                                 may join; others are closed with 4741
      --help                     print this help

Limits (sizes in bytes, or with a K, M or G suffix for KiB, MiB, GiB):
      --max-message-size <bytes>     largest message, at most 1G; more closes with 1009
                                     (default: 2M)
      --max-send-queue <bytes>       unread bytes queued for one peer, at most 1G; more
                                     closes with 1008 (default: 4M)
      --memory-budget <bytes>        buffer memory of all connections; past it the heaviest
                                     are closed with 1008, or dropped (default: 256M)
      --rate-limit <n>               messages per second per peer, 0 for none (default: 1000)
      --handshake-timeout <ms>       time to complete the upgrade, at most 3600000
                                     (default: 10000)
      --max-connections <n>          open connections; more get 503 (default: what the
                                     open-file limit allows, raised to its hard limit)
      --max-connections-per-ip <n>   open connections per IP address; more get 429,
                                     0 for none (default: 512)
      --max-group-size <n>           members of a group; a newcomer to a full group is
                                     closed with 4746, 0 for none (default: 0)
      --ipv6-prefix <bits>           IPv6 clients count together by this prefix in the
                                     per-address limit (default: 64)

Public servers:
      --allow-origin <origin,...>    only pages from these origins may connect (others get
                                     403): https://app.example.org or https://*.example.org
                                     (default: any origin)
      --require-origin               refuse upgrades without an Origin header (Node.js bots
                                     and native apps send none; default: allowed)
      --trusted-proxies <CIDR,...>   reverse proxies whose X-Forwarded-For (or X-Real-IP)
                                     names the client, for limits, logs and --metrics-allow
                                     (default: none)
      --proxy-protocol               every connection starts with a PROXY protocol header
                                     (v1 or v2, as HAProxy's send-proxy-v2 sends) naming the
                                     client; one without is closed

Operations:
      --metrics-allow <CIDR,...>     clients allowed to read /metrics and the status page /
                                     (default: 127.0.0.0/8,::1/128); others get 403
      --status-interval <ms>         time between two samples of the status page's charts
                                     (/status.json keeps the last 360), at most 3600000
                                     (default: 10000: an hour of history)
  GET /health answers 200 while the server runs, GET /ready 200 (503 while stopping).
  Started by systemd socket activation (LISTEN_FDS), it serves the inherited sockets
  and ignores -h and -p.

The log level is set with RUST_LOG (default: info), e.g. RUST_LOG=debug.
--log-format json writes one JSON object per line (time, level, target, message, and the
connection, client, close code and limit where they apply); text is the default.
SIGHUP reloads the TLS files; SIGTERM or SIGINT stops gracefully (a second one at once).
SIGHUP also reloads the --key-secret file.

Examples:
  $ sigver                       # Signaling server is listening on 0.0.0.0:8000
  $ sigver -h 192.168.0.1 -p 80  # Signaling server is listening on 192.168.0.1:80
  $ sigver -p 0                  # any free port, printed on start
  $ sigver --key ./private.key --cert ./primary.crt --ca ./intermediate.crt --port 443
  $ sigver -k /etc/letsencrypt/live/example.org/privkey.pem \
           -c /etc/letsencrypt/live/example.org/fullchain.pem -p 443
  $ sigver --key-secret /etc/sigver/secrets  # signed keys only
  $ sigver sign-key room42 --key-secret /etc/sigver/secrets  # prints room42.<sig>
"
    )
}

/// Parses the arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, CliError> {
    let args: Vec<OsString> = args.into_iter().collect();
    if args.first().is_some_and(|a| a == SIGN_KEY) {
        return sign_key(args.into_iter().skip(1).collect());
    }
    let mut args = pico_args::Arguments::from_vec(args.into_iter().collect());
    if args.contains("--help") {
        return Ok(Command::Print(usage()));
    }
    if args.contains(["-V", "--version"]) {
        return Ok(Command::Print(format!("{}\n", env!("CARGO_PKG_VERSION"))));
    }
    let host: Option<String> = value(&mut args, ["-h", "--host"], "--host", Ok)?;
    let port: u16 = value(&mut args, ["-p", "--port"], "--port", |s| {
        s.parse::<u16>()
            .map_err(|_| format!("'{s}' is not a port number (0 to 65535)"))
    })?
    .unwrap_or(DEFAULT_PORT);
    let mut config = Config {
        handle_signals: true,
        socket_activation: true,
        ..Config::default()
    };
    if let Some(ms) = value(
        &mut args,
        "--heartbeat-interval",
        "--heartbeat-interval",
        millis,
    )? {
        config.heartbeat_interval = ms;
    }
    if let Some(ms) = value(
        &mut args,
        "--handshake-timeout",
        "--handshake-timeout",
        millis,
    )? {
        config.handshake_timeout = ms;
    }
    let max_message = "--max-message-size";
    if let Some(n) = value(&mut args, max_message, max_message, message_size)? {
        config.max_message_size = n;
    }
    if let Some(n) = value(
        &mut args,
        "--max-send-queue",
        "--max-send-queue",
        message_size,
    )? {
        config.max_send_queue = n;
    }
    if let Some(n) = value(&mut args, "--memory-budget", "--memory-budget", size)? {
        config.memory_budget = n;
    }
    if let Some(n) = value(&mut args, "--rate-limit", "--rate-limit", count)? {
        config.rate_limit = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(n) = value(&mut args, "--max-connections", "--max-connections", count)? {
        if n == 0 {
            return Err(CliError::BadValue {
                flag: "--max-connections",
                problem: "must be at least 1".into(),
            });
        }
        config.max_connections = Some(n);
    }
    let status = "--status-interval";
    if let Some(ms) = value(&mut args, status, status, millis)? {
        // Faster would wake the loop for little: the page polls every 2 s.
        if ms < Duration::from_millis(100) {
            return Err(CliError::BadValue {
                flag: status,
                problem: "must be at least 100 milliseconds".into(),
            });
        }
        config.status_interval = ms;
    }
    let allow = "--metrics-allow";
    if let Some(list) = value(&mut args, allow, allow, |s| IpNet::parse_list(&s))? {
        config.metrics_allow = list;
    }
    let per_ip = "--max-connections-per-ip";
    if let Some(n) = value(&mut args, per_ip, per_ip, count)? {
        config.max_connections_per_ip = n;
    }
    let group = "--max-group-size";
    if let Some(n) = value(&mut args, group, group, count)? {
        config.max_group_size = n;
    }
    let proxies = "--trusted-proxies";
    if let Some(list) = value(&mut args, proxies, proxies, |s| IpNet::parse_list(&s))? {
        config.trusted_proxies = list;
    }
    let prefix = "--ipv6-prefix";
    if let Some(bits) = value(&mut args, prefix, prefix, |s| match s.parse::<u8>() {
        Ok(bits) if bits <= 128 => Ok(bits),
        _ => Err(format!("'{s}' is not a prefix length (0 to 128)")),
    })? {
        config.ipv6_prefix = bits;
    }
    let origins = "--allow-origin";
    if let Some(list) = value(&mut args, origins, origins, |s| {
        OriginPolicy::parse_list(&s)
    })? {
        config.origins.allowed = list;
    }
    config.origins.require = args.contains("--require-origin");
    config.proxy_protocol = args.contains("--proxy-protocol");
    config.tls_resumption = !args.contains("--no-tls-resumption");
    let format = "--log-format";
    let log_format =
        value(&mut args, format, format, |s| LogFormat::parse(&s))?.unwrap_or_default();
    let path = |s: String| Ok(PathBuf::from(s));
    let key = value(&mut args, ["-k", "--key"], "--key", path)?;
    let cert = value(&mut args, ["-c", "--cert"], "--cert", path)?;
    let ca = value(&mut args, ["-a", "--ca"], "--ca", path)?;
    config.key_secret = value(&mut args, "--key-secret", "--key-secret", path)?;
    if let Some(arg) = args.finish().into_iter().next() {
        return Err(CliError::Unknown(arg.to_string_lossy().into_owned()));
    }
    let tls = match (key, cert, ca) {
        (Some(key), Some(cert), ca) => Some(TlsFiles { key, cert, ca }),
        (None, None, None) => None,
        _ => return Err(CliError::TlsIncomplete),
    };
    config.addr = resolve(host.as_deref(), port)?;
    config.tls = tls;
    Ok(Command::Run(Box::new(config), log_format))
}

/// The command that prints a signed key.
const SIGN_KEY: &str = "sign-key";

/// `sign-key NAME --key-secret FILE` (the arguments after `sign-key`).
fn sign_key(args: Vec<OsString>) -> Result<Command, CliError> {
    let mut args = pico_args::Arguments::from_vec(args);
    if args.contains("--help") {
        return Ok(Command::Print(usage()));
    }
    let flag = "--key-secret";
    let key_secret =
        value(&mut args, flag, flag, |s| Ok(PathBuf::from(s)))?.ok_or(CliError::BadValue {
            flag,
            problem: "sign-key needs the file of secrets".into(),
        })?;
    let bad = |problem: &str| CliError::BadValue {
        flag: SIGN_KEY,
        problem: problem.into(),
    };
    let mut free = args.finish().into_iter();
    let name = free.next().ok_or(bad("a name to sign is required"))?;
    if let Some(extra) = free.next() {
        return Err(CliError::Unknown(extra.to_string_lossy().into_owned()));
    }
    let name = name
        .into_string()
        .map_err(|_| bad("the name is not valid UTF-8"))?;
    if name.starts_with('-') {
        return Err(CliError::Unknown(name));
    }
    check_name(&name).map_err(bad)?;
    Ok(Command::SignKey { name, key_secret })
}

/// A name whose signed key a browser sends as is. The key is the URL path as sent
/// (docs/PROTOCOL.md §1): a character a browser percent-encodes, or one that ends the path,
/// would make the key sent differ from the name signed, and the key would be refused.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() + 1 + crate::keys::SIGNATURE_LEN > crate::hub::MAX_KEY_LEN {
        return Err("the signed key would be longer than 512 bytes (a name has at most 468)");
    }
    if name
        .bytes()
        .any(|b| !b.is_ascii_graphic() || b"\"#<>?`{}\\".contains(&b))
    {
        return Err(
            "a browser would percent-encode or cut the name at a space, a non-ASCII or control \
             character, or one of \" # < > ? ` { } \\: sign the name as the URL path carries it \
             (percent-encoded)",
        );
    }
    Ok(())
}

/// Longest duration a flag takes: an hour. Longer is a mistake (a typo, a unit taken for
/// another), and far past it the arithmetic of deadlines would overflow.
pub const MAX_MILLIS: u64 = 3_600_000;

/// Largest message or send queue a flag takes: 1 GiB, far past any signaling message.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

fn millis(s: String) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(ms) if ms > MAX_MILLIS => Err(format!(
            "'{s}' is more than {MAX_MILLIS} milliseconds (an hour)"
        )),
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(format!("'{s}' is not a positive number of milliseconds")),
    }
}

/// A byte size of at most [`MAX_MESSAGE_BYTES`].
fn message_size(s: String) -> Result<usize, String> {
    match size(s.clone())? {
        n if n > MAX_MESSAGE_BYTES => Err(format!("'{s}' is more than 1G")),
        n => Ok(n),
    }
}

fn count(s: String) -> Result<usize, String> {
    s.parse::<usize>()
        .map_err(|_| format!("'{s}' is not a whole number"))
}

/// A byte size: digits, optionally followed by K, M or G (powers of 1024), with an optional
/// `iB` or `B` after the letter. At least 1.
fn size(s: String) -> Result<usize, String> {
    let bad = || format!("'{s}' is not a size in bytes (e.g. 2097152, 512K, 2M, 1G)");
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let number: usize = s[..digits_end].parse().map_err(|_| bad())?;
    let shift = match s[digits_end..].to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(bad()),
    };
    match number.checked_mul(1 << shift) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(bad()),
    }
}

fn value<T>(
    args: &mut pico_args::Arguments,
    keys: impl Into<pico_args::Keys>,
    flag: &'static str,
    convert: impl Fn(String) -> Result<T, String>,
) -> Result<Option<T>, CliError> {
    let bad = |problem: String| CliError::BadValue { flag, problem };
    match args.opt_value_from_str::<_, String>(keys) {
        Ok(v) => v.map(convert).transpose().map_err(bad),
        Err(pico_args::Error::MissingOption(_) | pico_args::Error::OptionWithoutAValue(_)) => {
            Err(bad("a value is required".into()))
        }
        Err(pico_args::Error::Utf8ArgumentParsingFailed { cause, .. }) => Err(bad(cause)),
        Err(pico_args::Error::NonUtf8Argument) => Err(bad("not valid UTF-8".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// An IP address, or a host name resolved once at start (as the original's `listen` does).
fn resolve(host: Option<&str>, port: u16) -> Result<SocketAddr, CliError> {
    let Some(host) = host else {
        return Ok(SocketAddr::new(Config::default().addr.ip(), port));
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let bad = |problem: String| CliError::BadValue {
        flag: "--host",
        problem,
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(format!("cannot resolve '{host}': {e}")))?
        .next()
        .ok_or_else(|| bad(format!("'{host}' has no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, CliError> {
        match parse(args.iter().map(OsString::from))? {
            Command::Run(c, _) => Ok(*c),
            Command::Print(t) => panic!("printed {t}"),
            Command::SignKey { name, .. } => panic!("sign-key {name}"),
        }
    }

    fn printed(args: &[&str]) -> String {
        match parse(args.iter().map(OsString::from)) {
            Ok(Command::Print(t)) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_serve_all_interfaces_on_8000() {
        let c = run(&[]).unwrap();
        assert_eq!(c.addr, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(c.heartbeat_interval, Duration::from_millis(5000));
        assert!(c.tls_resumption);
        assert!(!run(&["--no-tls-resumption"]).unwrap().tls_resumption);
    }

    #[test]
    fn host_port_and_interval() {
        let c = run(&["-h", "127.0.0.1", "-p", "0", "--heartbeat-interval", "250"]).unwrap();
        assert_eq!(c.addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.heartbeat_interval, Duration::from_millis(250));
        let c = run(&["--host=::1", "--port=9000"]).unwrap();
        assert_eq!(c.addr, "[::1]:9000".parse().unwrap());
        let c = run(&["--host", "localhost"]).unwrap();
        assert!(c.addr.ip().is_loopback());
    }

    #[test]
    fn limits_have_flags() {
        let c = run(&[
            "--max-message-size=1M",
            "--max-send-queue",
            "512KiB",
            "--memory-budget=1g",
            "--rate-limit=0",
            "--handshake-timeout=2500",
            "--max-connections=100",
            "--max-connections-per-ip=0",
            "--max-group-size=50",
            "--trusted-proxies=10.0.0.0/8",
            "--ipv6-prefix=56",
            "--allow-origin=https://*.example.org",
            "--require-origin",
            "--metrics-allow=10.0.0.0/8,::1",
        ])
        .unwrap();
        assert_eq!(c.metrics_allow.len(), 2);
        assert!(c.metrics_allow[0].contains("10.9.8.7".parse().unwrap()));
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.max_send_queue, 512 << 10);
        assert_eq!(c.memory_budget, 1 << 30);
        assert_eq!(c.rate_limit, 0);
        assert_eq!(c.handshake_timeout, Duration::from_millis(2500));
        assert_eq!(c.max_connections, Some(100));
        assert_eq!(c.max_connections_per_ip, 0);
        assert_eq!(c.max_group_size, 50);
        assert_eq!(c.trusted_proxies.len(), 1);
        assert_eq!(c.ipv6_prefix, 56);
        assert!(c.origins.require && c.origins.allows(Some(b"https://a.example.org")));
        assert!(!c.origins.allows(Some(b"https://example.com")));
        let d = run(&[]).unwrap();
        assert_eq!(d.max_message_size, 2 << 20);
        assert_eq!(d.max_connections, None);
        assert_eq!(d.max_connections_per_ip, 512);
        assert!(d.handle_signals);
    }

    #[test]
    fn help_and_version() {
        assert!(printed(&["--help"]).contains("Examples:"));
        assert!(printed(&["--help"]).contains("-h, --host"));
        assert_eq!(printed(&["-V"]), format!("{}\n", env!("CARGO_PKG_VERSION")));
        assert_eq!(printed(&["--version"]), printed(&["-V"]));
    }

    #[test]
    fn bounds_are_accepted_up_to_their_maximum() {
        let c = run(&[
            "--heartbeat-interval=3600000",
            "--handshake-timeout=3600000",
            "--max-message-size=1G",
            "--max-send-queue=1G",
            "--status-interval=3600000",
        ])
        .unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_secs(3600));
        assert_eq!(c.status_interval, Duration::from_secs(3600));
        assert_eq!(c.max_message_size, 1 << 30);
        let c = run(&["--status-interval", "100"]).unwrap();
        assert_eq!(c.status_interval, Duration::from_millis(100));
    }

    #[test]
    fn mistakes_are_named() {
        let cases: &[(&[&str], &str)] = &[
            (&["-p", "70000"], "--port"),
            (&["-p", "abc"], "--port"),
            (&["-p"], "--port"),
            (&["-h"], "--host"),
            (&["--heartbeat-interval", "0"], "--heartbeat-interval"),
            (&["--heartbeat-interval", "-5"], "--heartbeat-interval"),
            (&["--max-message-size", "2X"], "--max-message-size"),
            (&["--max-message-size", "0"], "--max-message-size"),
            (
                &["--memory-budget", "99999999999999999999G"],
                "--memory-budget",
            ),
            (&["--rate-limit", "-1"], "--rate-limit"),
            (&["--max-connections", "0"], "--max-connections"),
            (
                &["--max-connections-per-ip", "x"],
                "--max-connections-per-ip",
            ),
            (&["--handshake-timeout", "0"], "--handshake-timeout"),
            (
                &["--handshake-timeout", "18446744073709551615"],
                "--handshake-timeout",
            ),
            (&["--heartbeat-interval", "3600001"], "--heartbeat-interval"),
            (&["--max-message-size", "2G"], "--max-message-size"),
            (&["--max-send-queue", "1025M"], "--max-send-queue"),
            (&["--metrics-allow", "10.0.0.0/40"], "--metrics-allow"),
            (&["--trusted-proxies", "nope"], "--trusted-proxies"),
            (&["--ipv6-prefix", "129"], "--ipv6-prefix"),
            (&["--allow-origin", "example.org"], "--allow-origin"),
            (&["--status-interval", "99"], "--status-interval"),
            (&["--status-interval", "3600001"], "--status-interval"),
            (&["--bogus"], "--bogus"),
            (&["extra"], "extra"),
        ];
        for (args, needle) in cases {
            let e = run(args).unwrap_err();
            assert!(e.to_string().contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn tls_needs_key_and_cert() {
        let c = run(&["-k", "k.pem", "-c", "c.pem"]).unwrap();
        let files = c.tls.unwrap();
        assert_eq!(
            (files.key, files.cert, files.ca),
            ("k.pem".into(), "c.pem".into(), None)
        );
        let c = run(&["--key=k", "--cert=c", "--ca=a"]).unwrap();
        assert_eq!(c.tls.unwrap().ca, Some("a".into()));
        let halves: [&[&str]; 4] = [
            &["-k", "k"],
            &["-c", "c"],
            &["--ca", "a"],
            &["-k", "k", "-a", "a"],
        ];
        for args in halves {
            assert_eq!(run(args).unwrap_err(), CliError::TlsIncomplete, "{args:?}");
        }
        assert!(run(&[]).unwrap().tls.is_none());
    }

    fn sign_key(args: &[&str]) -> Result<(String, PathBuf), CliError> {
        match parse(args.iter().map(OsString::from))? {
            Command::SignKey { name, key_secret } => Ok((name, key_secret)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn key_secret_is_a_path_and_off_by_default() {
        // Proves --key-secret is taken as a path, and that without it any key works.
        assert_eq!(
            run(&["--key-secret", "/etc/sigver/secrets"])
                .unwrap()
                .key_secret,
            Some("/etc/sigver/secrets".into())
        );
        assert_eq!(
            run(&["--key-secret=s"]).unwrap().key_secret,
            Some("s".into())
        );
        assert_eq!(run(&[]).unwrap().key_secret, None);
        let e = run(&["--key-secret"]).unwrap_err();
        assert!(e.to_string().contains("--key-secret"), "{e}");
        assert!(printed(&["--help"]).contains("--key-secret <file>"));
        assert!(printed(&["--help"]).contains("sign-key"));
    }

    #[test]
    fn sign_key_takes_a_name_and_the_secrets_file() {
        // Proves sign-key parses in either order, and that every mistake names its cause.
        let expected = ("room.42".to_string(), PathBuf::from("s.txt"));
        assert_eq!(
            sign_key(&["sign-key", "room.42", "--key-secret", "s.txt"]),
            Ok(expected.clone())
        );
        assert_eq!(
            sign_key(&["sign-key", "--key-secret=s.txt", "room.42"]),
            Ok(expected)
        );
        assert!(printed(&["sign-key", "--help"]).contains("sign-key"));
        let long = "n".repeat(469);
        let cases: &[(&[&str], &str)] = &[
            (&["sign-key", "room"], "--key-secret"),
            (&["sign-key", "--key-secret", "s"], "name to sign"),
            (&["sign-key", "a", "b", "--key-secret", "s"], "'b'"),
            (&["sign-key", "--bogus", "--key-secret", "s"], "--bogus"),
            (&["sign-key", "", "--key-secret", "s"], "empty"),
            (&["sign-key", "a b", "--key-secret", "s"], "percent-encode"),
            (
                &["sign-key", "caf\u{e9}", "--key-secret", "s"],
                "percent-encode",
            ),
            (&["sign-key", "a?b", "--key-secret", "s"], "percent-encode"),
            (&["sign-key", &long, "--key-secret", "s"], "512"),
            (&["-p", "0", "sign-key", "a"], "sign-key"),
        ];
        for (args, needle) in cases {
            let e = parse(args.iter().map(OsString::from)).unwrap_err();
            assert!(e.to_string().contains(needle), "{args:?}: {e}");
        }
        assert!(sign_key(&["sign-key", &"n".repeat(468), "--key-secret", "s"]).is_ok());
    }
}
