//! The real `sigver` binary, started with arguments, its stderr read line by line.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use super::WAIT;

/// The real binary, killed when dropped, with its stderr lines on a channel.
pub struct Binary {
    child: Child,
    lines: Receiver<String>,
}

impl Binary {
    pub fn start(args: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigver"));
        cmd.args(args);
        Self::spawn_command(cmd)
    }

    /// Runs `script` with `sh -c`, where `$0` is the binary (to set a ulimit first, say).
    pub fn start_shell(script: &str) -> Self {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script, env!("CARGO_BIN_EXE_sigver")]);
        Self::spawn_command(cmd)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a prepared command (its stderr is taken over).
    pub fn spawn_command(mut cmd: Command) -> Self {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(e) => panic!("no line containing {needle:?} ({e}); the server said: {seen:#?}"),
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        let line = self.wait_for("Signaling server is listening on ");
        let addr = line.rsplit("listening on ").next().unwrap().trim();
        addr.parse().unwrap()
    }

    /// How many of its log lines so far (lowercased) `matches`: a reload request logs a line,
    /// so once that line shows, everything before it has been read.
    pub fn count_lines(&self, matches: impl Fn(&str) -> bool) -> usize {
        let lines = self.lines_until_reload();
        lines.iter().filter(|l| matches(&l.to_lowercase())).count()
    }

    /// Its log lines from now until a reload request's line (that one included): a reload
    /// logs a line, so everything logged before it has been read.
    pub fn lines_until_reload(&self) -> Vec<String> {
        self.sighup();
        let mut lines = Vec::new();
        loop {
            let line = self.wait_for("");
            let done = line.to_lowercase().contains("reload");
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// Sends a signal by name (`HUP`, `TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {WAIT:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
