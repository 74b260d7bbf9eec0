//! A real PostgreSQL server (Debian's packages) on a free port of 127.0.0.1, in a temporary
//! directory, started and stopped by the test.
//!
//! `initdb` runs once per test process into a template directory; each server copies it and
//! starts with `pg_ctl` (a second or less). As root, both run as the `postgres` user, since
//! PostgreSQL refuses to run as root.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub struct PostgresServer {
    pub port: u16,
    dir: PathBuf,
    running: bool,
    /// Extra `-c name=value` settings of this server (TLS).
    settings: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directory holding initdb, pg_ctl and postgres: `PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/*/bin`, else what `pg_config --bindir` says.
fn bindir() -> PathBuf {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR
        .get_or_init(|| {
            if let Ok(dir) = std::env::var("PG_BINDIR") {
                return PathBuf::from(dir);
            }
            let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|entry| {
                    let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = entry.path().join("bin");
                    bin.join("initdb").exists().then_some((version, bin))
                })
                .collect();
            found.sort();
            if let Some((_, bin)) = found.pop() {
                return bin;
            }
            let output = Command::new("pg_config").arg("--bindir").output();
            match output {
                Ok(out) if out.status.success() => {
                    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
                }
                _ => panic!(
                    "PostgreSQL's server binaries (initdb, pg_ctl) were not found: install them \
                     (`apt-get install postgresql`) or run scripts/test-all, which does"
                ),
            }
        })
        .clone()
}

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
    })
}

/// `program` from the server binaries, run as `postgres` when we are root.
fn command(program: &str) -> Command {
    let path = bindir().join(program);
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

fn run(mut command: Command, what: &str) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    output
}

/// Makes `path` (a directory we created) belong to `postgres` when we are root.
fn hand_over(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown runs");
        assert!(status.success(), "chown -R postgres {}", path.display());
    }
}

/// A fresh temporary directory that the server's user may use.
fn temp_dir(name: &str) -> PathBuf {
    // A counter, not a port number: a port comes back free, and two servers started at once
    // would share (and remove) one directory.
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "metigan-pg-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    hand_over(&dir);
    dir
}

/// Removes the directories of test processes that are gone (a template outlives its process,
/// and a killed test leaves its servers' directories).
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("metigan-pg-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The data directory `initdb` made once for this process; every server copies it.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        remove_leftovers();
        let dir = temp_dir("template");
        let data = dir.join("data");
        let mut initdb = command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        let out = run(initdb, "initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        data
    })
}

impl PostgresServer {
    /// A new server with an empty database `postgres`, listening on 127.0.0.1 only.
    pub fn start() -> PostgresServer {
        Self::start_with(String::new(), |_| {})
    }

    /// A new server that also accepts TLS (`ssl=on`) with this certificate and key (PEM).
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> PostgresServer {
        let (cert_pem, key_pem) = (cert_pem.to_owned(), key_pem.to_owned());
        Self::start_with(
            "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".to_owned(),
            move |data| {
                std::fs::write(data.join("server.crt"), &cert_pem).unwrap();
                let key = data.join("server.key");
                std::fs::write(&key, &key_pem).unwrap();
                // PostgreSQL refuses a key that others may read.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            },
        )
    }

    fn start_with(settings: String, prepare: impl FnOnce(&Path)) -> PostgresServer {
        let dir = temp_dir("server");
        let copy = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(dir.join("data"))
            .status()
            .expect("cp runs");
        assert!(copy.success(), "copying the template data directory");
        prepare(&dir.join("data"));
        hand_over(&dir);
        let mut server = PostgresServer {
            port: free_port(),
            dir,
            running: false,
            settings,
        };
        // The free port was released before the server bound it: another one if it was taken.
        for _ in 0..5 {
            if server.try_start() {
                return server;
            }
            server.port = free_port();
        }
        panic!(
            "PostgreSQL did not start; its log:\n{}",
            std::fs::read_to_string(server.dir.join("log")).unwrap_or_default()
        );
    }

    /// The URL of its `postgres` database, as the superuser (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn try_start(&mut self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 {}",
            self.port,
            self.dir.display(),
            self.settings
        );
        let mut pg_ctl = command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-o", &options, "-w", "-t", "30", "start"]);
        let out = run(pg_ctl, "pg_ctl start");
        self.running = out.status.success();
        self.running
    }

    /// Stops it as `pg_ctl stop -m fast` does: clients are disconnected, what was committed
    /// stays.
    pub fn stop(&mut self) {
        self.stop_with("fast");
    }

    /// Starts it again on the same port and data.
    pub fn start_again(&mut self) {
        assert!(
            self.try_start(),
            "PostgreSQL did not start again; its log:\n{}",
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    fn stop_with(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let mut pg_ctl = command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", mode, "-w", "-t", "30", "stop"]);
        let _ = run(pg_ctl, "pg_ctl stop");
        self.running = false;
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop_with("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
