//! The receiver example as a child process, started with the test secret on a free port, its
//! inbox in a fresh directory.
#![allow(dead_code)]

#[path = "example.rs"]
mod example;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use example::Example;

/// The secret every receiver started here uses.
pub const SECRET: &str = "whsec_receiver_test_secret";

/// Builds the receiver example (cached after the first time) and returns its path.
pub fn receiver_binary() -> PathBuf {
    example::example_binary("receiver")
}

/// A fresh directory under the target's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "receiver-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The inbox file's path in it, as `INBOX_PATH` takes it.
    pub fn inbox(&self) -> String {
        self.0.join("metigan-inbox.redb").display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running receiver: `WEBHOOK_SECRET=SECRET`, `PORT=0`, logs at `info`.
pub struct Receiver {
    inner: Example,
    /// Where it listens (127.0.0.1 and the port it chose).
    pub addr: SocketAddr,
    /// Its inbox's directory, when the test did not choose the file.
    _dir: Option<TempDir>,
}

impl Receiver {
    /// Starts the receiver with the test secret and `env` (e.g. `REDIS_URL`). Unless `env` sets
    /// `INBOX_PATH` or `DATABASE_URL`, its inbox file is in a fresh directory, removed when it stops: receivers
    /// started at once never share the default `metigan-inbox.redb`.
    pub async fn start(env: &[(&str, &str)]) -> Receiver {
        let mut all = vec![("WEBHOOK_SECRET", SECRET)];
        all.extend_from_slice(env);
        let dir = (!env
            .iter()
            .any(|(name, _)| *name == "INBOX_PATH" || *name == "DATABASE_URL"))
        .then(|| TempDir::new("inbox"));
        let path = dir.as_ref().map(TempDir::inbox);
        if let Some(path) = &path {
            all.push(("INBOX_PATH", path));
        }
        let inner = Example::start("receiver", &all).await;
        Receiver {
            addr: inner.addr,
            inner,
            _dir: dir,
        }
    }

    /// The next line on stdout (5 s at most: the receiver flushes each line at once).
    pub async fn next_line(&mut self) -> String {
        self.inner.next_line().await
    }

    /// The next line on stdout within `limit`, or `None`.
    pub async fn line_within(&mut self, limit: Duration) -> Option<String> {
        self.inner.line_within(limit).await
    }

    /// The stdout lines read so far and not taken yet, without waiting.
    pub fn take_lines(&mut self) -> Vec<String> {
        self.inner.take_lines()
    }

    /// The stderr lines read so far and not taken yet, without waiting.
    pub fn take_stderr(&mut self) -> Vec<String> {
        self.inner.take_stderr()
    }

    /// Waits (10 s at most) for a stderr line containing `needle`.
    pub async fn wait_stderr(&mut self, needle: &str) -> String {
        self.inner.wait_stderr(needle).await
    }

    /// The receiver's process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// Peak resident memory so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.inner.peak_rss_kib()
    }

    /// Stops it with SIGTERM (a graceful exit is expected); returns what it wrote afterwards on
    /// stdout and stderr.
    pub async fn stop(self) -> (Vec<String>, Vec<String>) {
        self.inner.stop().await
    }

    /// Kills it with SIGKILL (a crash); returns what it wrote on stdout and stderr that was not
    /// taken yet.
    pub async fn kill(self) -> (Vec<String>, Vec<String>) {
        self.inner.kill().await
    }
}
