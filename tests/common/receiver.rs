//! The receiver example as a child process: built once, started on a free port, stopped with
//! SIGTERM.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

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

pub struct Receiver {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
    pub addr: std::net::SocketAddr,
}

impl Receiver {
    /// Starts the receiver with `WEBHOOK_SECRET=SECRET`, `PORT=0` and `env`.
    pub async fn start(env: &[(&str, &str)]) -> Receiver {
        let mut child = Command::new(receiver_binary())
            .env("WEBHOOK_SECRET", SECRET)
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("receiver starts");
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        // The receiver logs the address it bound (PORT=0 picks a free port).
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let line = stderr
                    .next_line()
                    .await
                    .unwrap()
                    .expect("receiver exited early");
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
        tokio::time::timeout(Duration::from_secs(5), self.stdout.next_line())
            .await
            .expect("a line on stdout within 5 s (flushed at once)")
            .unwrap()
            .expect("stdout open")
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
        while let Ok(Some(line)) = self.stdout.next_line().await {
            out.push(line);
        }
        let mut err = Vec::new();
        while let Ok(Some(line)) = self.stderr.next_line().await {
            err.push(line);
        }
        (out, err)
    }
}
