//! Any example as a child process: built once, started on a free port of 127.0.0.1, read line
//! by line, stopped with SIGTERM. (`receiver.rs` wraps it for the receiver.)
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Reads a pipe line by line in the background, so the child never blocks on a full pipe.
fn drain(pipe: impl AsyncRead + Unpin + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Builds the example (cached after the first time) and returns its path.
pub fn example_binary(name: &str) -> PathBuf {
    let mut args = vec!["build", "--quiet", "--example", name];
    if !cfg!(debug_assertions) {
        args.push("--release");
    }
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo.args(&args).current_dir(env!("CARGO_MANIFEST_DIR"));
    // The variables cargo sets for this test process only: ring's build script reruns when
    // one of them changes, so passing them on would rebuild the example's dependencies here
    // and again at the next plain `cargo build`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_test = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name == "CARGO_PRIMARY_PACKAGE"
            || name == "CARGO_TARGET_TMPDIR";
        if per_test {
            cargo.env_remove(name.as_ref());
        }
    }
    let status = cargo.status().expect("cargo runs");
    assert!(status.success(), "building the {name} example failed");
    // Tests live in target/<profile>/deps; examples in target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join(name)
}

/// Runs the example to completion with `env` (for its start-up errors); 20 s at most.
pub async fn run_to_exit(name: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let child = Command::new(example_binary(name))
        .env_remove("WEBHOOK_SECRET")
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env_remove("TLS_CERT")
        .env_remove("TLS_KEY")
        .env("PORT", "0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the example starts");
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits within 20 s")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub struct Example {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// The address it listens on (127.0.0.1 and the port it printed).
    pub addr: SocketAddr,
}

impl Example {
    /// Starts the example with `PORT=0`, `RUST_LOG=info` and `env`, and waits for its
    /// `listening on http(s)://...` log line.
    pub async fn start(name: &str, env: &[(&str, &str)]) -> Example {
        let mut child = Command::new(example_binary(name))
            // Only what the test sets: a developer's own settings must not leak in.
            .env_remove("REDIS_URL")
            .env_remove("DATABASE_URL")
            .env_remove("TLS_CERT")
            .env_remove("TLS_KEY")
            .env_remove("TLS_DEV_CERT_OUT")
            .env_remove("MAILING_LIST_DB")
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the example starts");
        let stdout = drain(child.stdout.take().unwrap());
        let mut stderr = drain(child.stderr.take().unwrap());
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let line = stderr
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("{name} exited before listening"));
                let rest = line
                    .split("listening on http://")
                    .nth(1)
                    .or_else(|| line.split("listening on https://").nth(1));
                if let Some(rest) = rest {
                    let port: u16 = rest
                        .split('/')
                        .next()
                        .and_then(|hp| hp.rsplit(':').next())
                        .and_then(|p| p.trim().parse().ok())
                        .expect("port in the log line");
                    break SocketAddr::from(([127, 0, 0, 1], port));
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name} listening within 20 s"));
        Example {
            child,
            stdout,
            stderr,
            addr,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Peak resident memory so far (Linux `VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// The next stdout line (5 s at most).
    pub async fn next_line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), self.stdout.recv())
            .await
            .expect("a line on stdout within 5 s")
            .expect("stdout open")
    }

    /// The next stderr line containing `needle` (10 s at most).
    pub async fn wait_stderr(&mut self, needle: &str) -> String {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let line = self.stderr.recv().await.expect("stderr open");
                if line.contains(needle) {
                    break line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{needle:?} on stderr within 10 s"))
    }

    /// The next stdout line within `limit`, or `None` (also when stdout is closed).
    pub async fn line_within(&mut self, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, self.stdout.recv())
            .await
            .ok()
            .flatten()
    }

    /// Every stdout line read so far and not taken yet, without waiting.
    pub fn take_lines(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.stdout.try_recv() {
            lines.push(line);
        }
        lines
    }

    /// Every stderr line read so far and not taken yet, without waiting.
    pub fn take_stderr(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.stderr.try_recv() {
            lines.push(line);
        }
        lines
    }

    /// Kills it with SIGKILL (a crash) and returns what it wrote on stdout and stderr that was
    /// not taken yet.
    pub async fn kill(mut self) -> (Vec<String>, Vec<String>) {
        let _ = self.child.start_kill();
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("dies on SIGKILL")
            .unwrap();
        self.rest().await
    }

    /// What it still writes until its pipes close.
    async fn rest(&mut self) -> (Vec<String>, Vec<String>) {
        let mut out = Vec::new();
        while let Some(line) = self.stdout.recv().await {
            out.push(line);
        }
        let mut err = Vec::new();
        while let Some(line) = self.stderr.recv().await {
            err.push(line);
        }
        (out, err)
    }

    /// Stops it with SIGTERM (a graceful exit is expected) and returns what it wrote
    /// afterwards on stdout and stderr.
    pub async fn stop(mut self) -> (Vec<String>, Vec<String>) {
        let pid = self.child.id().unwrap();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("stops on SIGTERM within 20 s")
            .unwrap();
        assert!(status.success(), "graceful exit, got {status}");
        // The child is gone: its pipes end, and the readers close the channels.
        self.rest().await
    }
}
