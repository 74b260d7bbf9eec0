//! The receiver example as a child process, started with the test secret on a free port.
#![allow(dead_code)]

#[path = "example.rs"]
mod example;

use std::net::SocketAddr;
use std::path::PathBuf;

use example::Example;

/// The secret every receiver started here uses.
pub const SECRET: &str = "whsec_receiver_test_secret";

/// Builds the receiver example (cached after the first time) and returns its path.
pub fn receiver_binary() -> PathBuf {
    example::example_binary("receiver")
}

/// A running receiver: `WEBHOOK_SECRET=SECRET`, `PORT=0`, logs at `info`.
pub struct Receiver {
    inner: Example,
    /// Where it listens (127.0.0.1 and the port it chose).
    pub addr: SocketAddr,
}

impl Receiver {
    /// Starts the receiver with the test secret and `env` (e.g. `REDIS_URL`).
    pub async fn start(env: &[(&str, &str)]) -> Receiver {
        let mut all = vec![("WEBHOOK_SECRET", SECRET)];
        all.extend_from_slice(env);
        let inner = Example::start("receiver", &all).await;
        Receiver {
            addr: inner.addr,
            inner,
        }
    }

    /// The next line on stdout (5 s at most: the receiver flushes each line at once).
    pub async fn next_line(&mut self) -> String {
        self.inner.next_line().await
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
}
