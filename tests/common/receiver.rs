//! The receiver example as a child process: built once, started on a free port, stopped with
//! SIGTERM.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const SECRET: &str = "whsec_receiver_test_secret";

/// Builds the example (cached after the first time) and returns its path.
pub fn receiver_binary() -> PathBuf {
    let mut args = vec!["build", "--quiet", "--example", "receiver"];
    if !cfg!(debug_assertions) {
        args.push("--release");
    }
    let status = std::process::Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the receiver example failed");
    // Tests live in target/<profile>/deps; examples in target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join("receiver")
}

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

pub struct Receiver {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    pub addr: std::net::SocketAddr,
}

impl Receiver {
    /// Starts the receiver with `WEBHOOK_SECRET=SECRET`, `PORT=0` and `env`.
    pub async fn start(env: &[(&str, &str)]) -> Receiver {
        let mut child = Command::new(receiver_binary())
            .env("WEBHOOK_SECRET", SECRET)
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            // Only what the test sets: a developer's own REDIS_URL must not leak in.
            .env_remove("REDIS_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("receiver starts");
        let stdout = drain(child.stdout.take().unwrap());
        let mut stderr = drain(child.stderr.take().unwrap());
        // The receiver logs the address it bound (PORT=0 picks a free port).
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let line = stderr.recv().await.expect("receiver exited early");
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let port: u16 = rest
                        .split('/')
                        .next()
                        .and_then(|hp| hp.rsplit(':').next())
                        .and_then(|p| p.parse().ok())
                        .expect("port in the log line");
                    break std::net::SocketAddr::from(([127, 0, 0, 1], port));
                }
            }
        })
        .await
        .expect("receiver listening within 20 s");
        Receiver {
            child,
            stdout,
            stderr,
            addr,
        }
    }

    pub async fn next_line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), self.stdout.recv())
            .await
            .expect("a line on stdout within 5 s (flushed at once)")
            .expect("stdout open")
    }

    /// The receiver's process id.
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

    /// Stops the receiver and returns what it wrote afterwards on stdout and stderr.
    pub async fn stop(mut self) -> (Vec<String>, Vec<String>) {
        let pid = self.child.id().unwrap();
        // SIGTERM: the receiver shuts down gracefully.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("receiver stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "graceful exit, got {status}");
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
}
