//! The receiver's durable inbox, through the real binary on 127.0.0.1: duplicates, leases, a
//! worker killed mid-handler, a slow handler, shutdown with the worker busy, `INBOX=off`, one
//! receiver per file, a store that cannot write, and the testing aids. Each test takes a few
//! seconds.

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command as StdCommand;
use std::time::Duration;

use tokio::process::Command;
use tokio::task::JoinSet;
use tokio::time::Instant;

use common::{event_body, post_signed, Answer};
use receiver::{receiver_binary, Receiver, TempDir, SECRET};

const PATH: &str = "/webhooks/metigan";
/// Slack for a busy 2-core machine on top of every deadline.
const MARGIN: Duration = Duration::from_secs(2);

/// An `email.delivered` event for `who@example.com`, `messageId` `id`.
fn delivered(id: &str, who: &str) -> String {
    format!(
        r#"{{"event":"email.delivered","messageId":"{id}","data":{{"recipient":"{who}@example.com"}},"timestamp":1700000000000}}"#
    )
}

fn line_for(who: &str) -> String {
    format!("Email delivered to {who}@example.com")
}

async fn deliver(addr: SocketAddr, body: &str) -> Answer {
    post_signed(addr, PATH, SECRET, body).await
}

/// `n` concurrent copies of `body`; the statuses they got.
async fn copies(addr: SocketAddr, body: &str, n: usize) -> BTreeMap<u16, usize> {
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let body = body.to_owned();
        tasks.spawn(async move { deliver(addr, &body).await.status.as_u16() });
    }
    let mut statuses = BTreeMap::new();
    while let Some(status) = tasks.join_next().await {
        *statuses.entry(status.unwrap()).or_default() += 1;
    }
    statuses
}

/// Lines printed until none came for `quiet`.
async fn lines_until_quiet(receiver: &mut Receiver, quiet: Duration) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(line) = receiver.line_within(quiet).await {
        lines.push(line);
    }
    lines
}

/// A delivery sent twice in a row, and 100 concurrent copies of one, each run the handler once:
/// with the layer's deduplication in front of the inbox (the default), after a restart that
/// emptied the layer's memory (the inbox's key answers), and with the inbox's key alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_run_the_handler_once() {
    let dir = TempDir::new("dup");
    let inbox = dir.inbox();
    let mut receiver = Receiver::start(&[("INBOX_PATH", &inbox)]).await;
    let addr = receiver.addr;

    let twice = delivered("twice", "twice");
    for _ in 0..2 {
        let answer = deliver(addr, &twice).await;
        assert_eq!(
            (answer.status.as_u16(), answer.text().as_str()),
            (200, "OK")
        );
    }
    let hundred = delivered("hundred", "hundred");
    let statuses = copies(addr, &hundred, 100).await;
    println!("100 concurrent copies, layer and inbox: {statuses:?}");
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 409) && statuses.get(&200) >= Some(&1),
        "stored (200), already stored (200) or in flight (409 + Retry-After): {statuses:?}"
    );
    // A last event: once its line is out, the worker has nothing else to print.
    let marker = delivered("marker-1", "marker-1");
    assert_eq!(deliver(addr, &marker).await.status, 200);
    let mut lines = Vec::new();
    while !lines.contains(&line_for("marker-1")) {
        lines.push(receiver.next_line().await);
    }
    lines.extend(lines_until_quiet(&mut receiver, Duration::from_millis(300)).await);
    lines.sort();
    assert_eq!(
        lines,
        [line_for("hundred"), line_for("marker-1"), line_for("twice")]
    );
    let (rest, _) = receiver.stop().await;
    assert!(rest.is_empty(), "{rest:?}");

    // Restarted on the same file: the layer's memory is empty, the inbox still knows the keys.
    let mut receiver = Receiver::start(&[("INBOX_PATH", &inbox)]).await;
    let addr = receiver.addr;
    for body in [&twice, &hundred] {
        assert_eq!(deliver(addr, body).await.status, 200);
    }
    let marker = delivered("marker-2", "marker-2");
    assert_eq!(deliver(addr, &marker).await.status, 200);
    assert_eq!(receiver.next_line().await, line_for("marker-2"));
    assert_eq!(
        lines_until_quiet(&mut receiver, Duration::from_millis(300)).await,
        Vec::<String>::new()
    );
    receiver.stop().await;

    // DEDUPE=inbox: the inbox's key alone; every concurrent copy is answered 200.
    let mut receiver = Receiver::start(&[("INBOX_PATH", &inbox), ("DEDUPE", "inbox")]).await;
    let addr = receiver.addr;
    let concurrent = delivered("inbox-only", "inbox-only");
    let statuses = copies(addr, &concurrent, 100).await;
    println!("100 concurrent copies, inbox only: {statuses:?}");
    assert_eq!(statuses, BTreeMap::from([(200, 100)]));
    let twice = delivered("inbox-twice", "inbox-twice");
    for _ in 0..2 {
        assert_eq!(deliver(addr, &twice).await.status, 200);
    }
    let mut lines = vec![receiver.next_line().await, receiver.next_line().await];
    lines.extend(lines_until_quiet(&mut receiver, Duration::from_millis(300)).await);
    lines.sort();
    assert_eq!(lines, [line_for("inbox-only"), line_for("inbox-twice")]);
    receiver.stop().await;
}

/// SIGKILL while a handler runs: after the restart, the event runs again once its lease has
/// run out (not before), and once. A second event, waiting behind it (concurrency 1), runs at
/// once. (Its append is also what puts the first one's claim on disk: the file store commits
/// claims without a sync of their own, so a claim that no durable commit followed is undone by
/// the crash, and its event simply runs at once after the restart, which is just as safe with
/// one process per file.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_handler_runs_the_event_again_after_its_lease() {
    const LEASE: Duration = Duration::from_secs(2);
    let dir = TempDir::new("killed");
    let inbox = dir.inbox();
    let lease = LEASE.as_secs_f64().to_string();
    let admin = format!("127.0.0.1:{}", free_port());
    let receiver = Receiver::start(&[
        ("INBOX_PATH", &inbox),
        ("INBOX_LEASE_SECS", &lease),
        ("INBOX_CONCURRENCY", "1"),
        ("HANDLER_DELAY_MS", "30000"),
        ("ADMIN_ADDR", &admin),
    ])
    .await;
    let addr = receiver.addr;
    assert_eq!(deliver(addr, &delivered("k", "killed")).await.status, 200);
    // The worker claims the event at once; wait until its claim is committed (the second
    // event's append must come after the claim, to put it on disk).
    wait_for_stats(&admin, r#""running":1"#).await;
    assert_eq!(deliver(addr, &delivered("w", "waiting")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (out, _) = receiver.kill().await;
    let killed = Instant::now();
    assert!(out.is_empty(), "{out:?}");

    // One handler at a time, oldest due first: on a slow machine the restart can take longer
    // than the lease, and both events would then be claimed together and run in either order.
    let mut receiver = Receiver::start(&[
        ("INBOX_PATH", &inbox),
        ("INBOX_LEASE_SECS", &lease),
        ("INBOX_CONCURRENCY", "1"),
    ])
    .await;
    assert_eq!(receiver.next_line().await, line_for("waiting"));
    let waiting_after = killed.elapsed();
    let line = receiver
        .line_within(LEASE + MARGIN * 2)
        .await
        .expect("the event runs again after its lease");
    let after = killed.elapsed();
    println!(
        "killed mid-handler (lease {LEASE:?}): the waiting event ran {waiting_after:?} after \
         the kill, the killed one again {after:?} after it"
    );
    assert_eq!(line, line_for("killed"));
    // Its lease, taken about 0.8 s before the kill, ran out about 1.2 s after it.
    assert!(after >= LEASE / 3, "{after:?}");
    assert_eq!(
        lines_until_quiet(&mut receiver, LEASE).await,
        Vec::<String>::new()
    );
    receiver.stop().await;
}

/// A handler that takes three leases long keeps its event (the lease is renewed): it runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_its_lease_runs_once() {
    let mut receiver = Receiver::start(&[
        ("INBOX_LEASE_SECS", "0.6"),
        ("HANDLER_DELAY_MS", "2000"),
        ("INBOX_CONCURRENCY", "4"),
    ])
    .await;
    for who in ["slow-1", "slow-2"] {
        assert_eq!(
            deliver(receiver.addr, &delivered(who, who)).await.status,
            200
        );
    }
    let mut lines = vec![receiver.next_line().await, receiver.next_line().await];
    lines.extend(lines_until_quiet(&mut receiver, Duration::from_millis(1000)).await);
    lines.sort();
    assert_eq!(lines, [line_for("slow-1"), line_for("slow-2")]);
    let (_, stderr) = receiver.stop().await;
    let log = stderr.join("\n");
    assert!(!log.contains("lease was lost"), "{log}");
}

/// SIGTERM while every handler is busy: the receiver exits within its shutdown deadline, and
/// the events not handled (running or waiting) are handled after the restart, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_worker_busy_exits_in_time_and_the_rest_runs_after_a_restart() {
    let dir = TempDir::new("sigterm");
    let inbox = dir.inbox();
    let receiver = Receiver::start(&[
        ("INBOX_PATH", &inbox),
        ("INBOX_CONCURRENCY", "2"),
        ("HANDLER_DELAY_MS", "5000"),
        ("SHUTDOWN_TIMEOUT_SECS", "1"),
    ])
    .await;
    let names: Vec<String> = (0..6).map(|i| format!("term-{i}")).collect();
    for name in &names {
        assert_eq!(
            deliver(receiver.addr, &delivered(name, name)).await.status,
            200
        );
    }
    // Two handlers are running: they cannot finish before the deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    let (out, stderr) = receiver.stop().await;
    let took = stopping.elapsed();
    println!("SIGTERM with 2 handlers running and 4 events waiting: exited after {took:?}");
    assert!(out.is_empty(), "{out:?}");
    assert!(took <= Duration::from_secs(1) + MARGIN, "{took:?}");
    let log = stderr.join("\n");
    assert!(
        log.contains("2 stopped at the deadline and given back"),
        "{log}"
    );

    let mut receiver = Receiver::start(&[("INBOX_PATH", &inbox)]).await;
    let mut lines = Vec::new();
    for _ in 0..names.len() {
        lines.push(receiver.next_line().await);
    }
    lines.extend(lines_until_quiet(&mut receiver, Duration::from_millis(300)).await);
    lines.sort();
    let expected: Vec<String> = names.iter().map(|n| line_for(n)).collect();
    assert_eq!(lines, expected);
    receiver.stop().await;
}

/// `INBOX=off`: the handler runs inside the request (the answer waits for it, the line is out
/// when it comes), no file is created, and a failing handler answers 500, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_off_handles_each_event_inside_the_request() {
    let dir = TempDir::new("off");
    let inbox = dir.inbox();
    let mut receiver = Receiver::start(&[
        ("INBOX", "off"),
        ("INBOX_PATH", &inbox),
        ("HANDLER_DELAY_MS", "300"),
        ("HANDLER_FAIL", "email.bounced"),
    ])
    .await;
    let started = Instant::now();
    let answer = deliver(receiver.addr, &delivered("off", "off")).await;
    assert_eq!(answer.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        receiver.line_within(Duration::from_millis(500)).await,
        Some(line_for("off"))
    );
    let bounced = event_body("email.bounced", "bounce-1");
    for _ in 0..2 {
        let answer = deliver(receiver.addr, &bounced).await;
        assert_eq!(answer.status, 500);
        assert_eq!(answer.text(), "handler_failed\n");
    }
    let (out, _) = receiver.stop().await;
    assert!(out.is_empty(), "{out:?}");
    assert!(
        !std::path::Path::new(&inbox).exists(),
        "INBOX=off opened {inbox}"
    );
}

/// The testing aids with the inbox: `email.opened:2` fails twice, then is handled (retried
/// with `INBOX_BACKOFF_SECS`); `email.bounced:permanent` is a dead letter at once; nothing is
/// answered but 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_failures_are_retried_or_dead_lettered() {
    let mut receiver = Receiver::start(&[
        ("HANDLER_FAIL", "email.opened:2,email.bounced:permanent"),
        ("INBOX_BACKOFF_SECS", "0.2"),
    ])
    .await;
    let started = Instant::now();
    for event in ["email.opened", "email.bounced"] {
        let answer = deliver(receiver.addr, &event_body(event, "aid-1")).await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(
        receiver.next_line().await,
        "Email opened by jane@example.com"
    );
    // Two failures: delays of about 0.2 s and 0.4 s (±25 %).
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(450), "{took:?}");
    receiver.wait_stderr("dead letter").await;
    assert_eq!(
        lines_until_quiet(&mut receiver, Duration::from_millis(500)).await,
        Vec::<String>::new()
    );
    let (_, stderr) = receiver.stop().await;
    assert!(!stderr.join("\n").contains("jane@example.com"));
}

/// One receiver per inbox file: a second one (here on the default `metigan-inbox.redb` of its
/// working directory, which is the first one's file) exits at once with one line, exit code 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_receiver_on_the_same_file_exits_at_once_with_one_line() {
    let dir = TempDir::new("second");
    let inbox = dir.inbox();
    let mut receiver = Receiver::start(&[("INBOX_PATH", &inbox)]).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&inbox).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    let started = Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new(receiver_binary())
            .current_dir(dir.path())
            .env_remove("INBOX_PATH")
            .env_remove("REDIS_URL")
            .env("WEBHOOK_SECRET", SECRET)
            .env("PORT", "0")
            .output(),
    )
    .await
    .expect("exits at once")
    .unwrap();
    println!("the second receiver exited after {:?}", started.elapsed());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("receiver: inbox: "), "{stderr}");
    assert!(
        stderr.contains("metigan-inbox.redb is already open"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty());
    // The first one is unaffected.
    assert_eq!(
        deliver(receiver.addr, &delivered("first", "first"))
            .await
            .status,
        200
    );
    // Handled by its worker (waited for: a stop before the worker took it would leave it in
    // the file for the next start, which is right but not what this test is about).
    assert_eq!(receiver.next_line().await, line_for("first"));
    let (out, _) = receiver.stop().await;
    assert!(out.is_empty(), "{out:?}");
}

/// A bad inbox setting stops the receiver at start with one line naming it (exit code 2),
/// before any file is created.
#[tokio::test]
async fn bad_inbox_settings_stop_the_receiver_at_start() {
    let dir = TempDir::new("bad");
    let inbox = dir.inbox();
    for (env, needle) in [
        (vec![("INBOX", "maybe")], "INBOX"),
        (vec![("INBOX_CONCURRENCY", "0")], "INBOX_CONCURRENCY"),
        (vec![("INBOX_LEASE_SECS", "-1")], "INBOX_LEASE_SECS"),
        (vec![("INBOX_MAX_ATTEMPTS", "many")], "INBOX_MAX_ATTEMPTS"),
        (vec![("INBOX_BACKOFF_SECS", "0")], "INBOX_BACKOFF_SECS"),
        (vec![("HANDLER_DELAY_MS", "0.5")], "HANDLER_DELAY_MS"),
        (vec![("HANDLER_FAIL", "email.opened:0")], "HANDLER_FAIL"),
        (vec![("ADMIN_ADDR", "nine-thousand")], "ADMIN_ADDR"),
        (vec![("DEDUPE", "inbox"), ("INBOX", "off")], "DEDUPE=inbox"),
        (
            vec![("DEDUPE", "inbox"), ("REDIS_URL", "redis://127.0.0.1:1")],
            "choose one",
        ),
        (
            vec![("ADMIN_ADDR", "127.0.0.1:0"), ("INBOX", "off")],
            "ADMIN_ADDR",
        ),
    ] {
        let output = tokio::time::timeout(
            Duration::from_secs(20),
            Command::new(receiver_binary())
                .env_remove("REDIS_URL")
                .env("WEBHOOK_SECRET", SECRET)
                .env("PORT", "0")
                .env("INBOX_PATH", &inbox)
                .envs(env.iter().copied())
                .output(),
        )
        .await
        .expect("exits at once")
        .unwrap();
        assert_eq!(output.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(needle), "{env:?}: {stderr}");
        assert!(!std::path::Path::new(&inbox).exists(), "{env:?}");
    }
}

/// A tmpfs of 4 MiB mounted on a directory, unmounted when dropped; `None` when this process
/// may not mount one (not root, or no mount capability).
struct SmallFs(TempDir);

impl SmallFs {
    fn mount() -> Option<SmallFs> {
        let dir = TempDir::new("smallfs");
        let mounted = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(SmallFs(dir))
    }

    /// Fills what is left of the file system.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.0.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.write_all(&[0u8; 512]);
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// A full file system under the inbox: deliveries are answered 503 with `Retry-After`, never
/// 2xx without a commit; whatever was answered 200 is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_write_answers_503_never_2xx() {
    let Some(fs) = SmallFs::mount() else {
        println!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let inbox = fs.0.inbox();
    let mut receiver = Receiver::start(&[("INBOX_PATH", &inbox)]).await;
    let addr = receiver.addr;
    assert_eq!(
        deliver(addr, &delivered("before", "before")).await.status,
        200
    );
    assert_eq!(receiver.next_line().await, line_for("before"));

    let filler = fs.fill();
    let mut statuses = BTreeMap::<u16, usize>::new();
    let mut acked = vec![line_for("before")];
    for n in 0..40 {
        let who = format!("full-{n}");
        let answer = deliver(addr, &delivered(&who, &who)).await;
        *statuses.entry(answer.status.as_u16()).or_default() += 1;
        match answer.status.as_u16() {
            200 => acked.push(line_for(&who)),
            503 => {
                assert!(answer.headers.contains_key("retry-after"), "{answer:?}");
                assert!(answer.text().starts_with("inbox_unavailable"), "{answer:?}");
            }
            other => panic!("a full file system answered {other}: {}", answer.text()),
        }
    }
    println!("40 deliveries on a full file system: {statuses:?}");
    assert!(
        statuses.contains_key(&503),
        "a full file system refused nothing"
    );

    // Room again. The file store does not write again after an I/O error (redb wants the file
    // reopened): a restart reopens it; what was answered 200 is handled, new deliveries stored.
    std::fs::remove_file(filler).unwrap();
    let still = deliver(addr, &delivered("room", "room")).await.status;
    println!("with room again, before a restart: {still}");
    assert_ne!(
        still.as_u16(),
        200,
        "recovered without a restart: update this test"
    );
    receiver.stop().await;
    let mut receiver = Receiver::start(&[("INBOX_PATH", &inbox)]).await;
    let answer = deliver(receiver.addr, &delivered("after", "after")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // At least once: an event whose outcome could not be recorded (the disk filled up just
    // after its handler ran) runs again.
    let mut lines = vec![line_for("before")];
    while !lines.contains(&line_for("after")) {
        lines.push(receiver.next_line().await);
    }
    for line in &acked {
        assert!(lines.contains(line), "answered 200, never handled: {line}");
    }
    receiver.stop().await;
    drop(fs);
}

/// A free port on 127.0.0.1 (bound, then released for the receiver to take).
/// Polls the admin API's `/inbox/stats` at `admin` until its JSON contains `needle` (10 s at
/// most).
async fn wait_for_stats(admin: &str, needle: &str) {
    let addr: SocketAddr = admin.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let request = http::Request::get(format!("http://{addr}/inbox/stats"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let stats = common::send(request).await.text();
        if stats.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "never {needle} in {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `metigan-webhook inbox <args>` against the admin API at `admin`: exit code and stdout.
fn inbox_cli(cli: &str, admin: &str, args: &[&str]) -> (i32, String) {
    let output = StdCommand::new(cli)
        .arg("inbox")
        .arg("--admin-url")
        .arg(admin)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The whole repair loop through the real processes: a handler that always fails leaves a dead
/// letter, `metigan-webhook inbox list` shows it through the receiver's `ADMIN_ADDR`, and once
/// the handler is fixed (the receiver restarted without the failure) `inbox replay --all` gets
/// it processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_and_replayed_through_admin_addr_once_the_handler_is_fixed() {
    let Some(cli) = option_env!("CARGO_BIN_EXE_metigan-webhook") else {
        println!("skipped: the metigan-webhook binary needs --features cli");
        return;
    };
    let dir = TempDir::new("replay");
    let inbox = dir.inbox();
    let admin = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{admin}");
    let mut broken = Receiver::start(&[
        ("INBOX_PATH", &inbox),
        ("ADMIN_ADDR", &admin),
        ("HANDLER_FAIL", "email.bounced:permanent"),
    ])
    .await;
    let answer = deliver(broken.addr, &event_body("email.bounced", "dead-1")).await;
    assert_eq!(answer.status, 200, "acknowledged: stored before the answer");
    broken.wait_stderr("dead letter").await;
    // The line is logged as the worker decides; the dead letter is committed just after.
    wait_for_stats(&admin, r#""dead":1"#).await;

    let (code, listed) = inbox_cli(cli, &url, &["list", "--state", "dead"]);
    assert_eq!(code, 0, "{listed}");
    assert!(listed.contains("email.bounced"), "{listed}");
    assert!(listed.contains("dead"), "{listed}");
    let (code, stats) = inbox_cli(cli, &url, &["--json", "stats"]);
    assert_eq!(code, 0, "{stats}");
    assert!(stats.contains(r#""dead":1"#), "{stats}");
    let (_, stderr) = broken.stop().await;
    assert!(
        !stderr.join("\n").contains("jane@example.com"),
        "no body in the log"
    );

    // The handler is fixed: the same file, no failure; the dead letter waits for a replay.
    let admin = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{admin}");
    let mut fixed = Receiver::start(&[("INBOX_PATH", &inbox), ("ADMIN_ADDR", &admin)]).await;
    assert_eq!(fixed.line_within(Duration::from_millis(500)).await, None);
    let (code, replayed) = inbox_cli(cli, &url, &["replay", "--all"]);
    assert_eq!(code, 0, "{replayed}");
    assert_eq!(
        fixed.next_line().await,
        "Email bounced for jane@example.com"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, stats) = inbox_cli(cli, &url, &["--json", "stats"]);
        assert_eq!(code, 0, "{stats}");
        if stats.contains(r#""done":1"#) && stats.contains(r#""dead":0"#) {
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fixed.stop().await;
}
