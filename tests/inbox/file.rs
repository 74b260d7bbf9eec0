//! The file store: the behaviour suite, and what only a file promises (mode 0600, one owner,
//! group commit, what survives a reopen).

use std::sync::Arc;
use std::time::{Duration, Instant};

use metigan_webhook::inbox::{
    Appended, ClaimRequest, ErrorKind, FileStore, InboxStore, Settle, State,
};

use crate::{new_event, TempDir};

async fn file_store() -> (FileStore, TempDir) {
    let dir = TempDir::new("suite");
    (FileStore::open(dir.file()).unwrap(), dir)
}

store_suite!(file_store);

#[cfg(unix)]
#[test]
fn the_file_is_created_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("mode");
    let store = FileStore::open(dir.file()).unwrap();
    let mode = std::fs::metadata(dir.file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    drop(store);
}

#[test]
fn a_second_open_of_the_same_file_fails_at_once() {
    let dir = TempDir::new("lock");
    let store = FileStore::open(dir.file()).unwrap();
    let started = Instant::now();
    let err = FileStore::open(dir.file()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "at once");
    assert_eq!(err.kind(), ErrorKind::AlreadyOpen);
    let text = err.to_string();
    assert!(text.contains("already open"), "{text}");
    assert!(
        text.contains(&dir.file().display().to_string()),
        "names the file: {text}"
    );
    // Once the first store is dropped, the file is free again.
    drop(store);
    FileStore::open(dir.file()).unwrap();
}

/// The child half of `a_second_process_on_the_same_file_fails_at_once`: does nothing unless
/// `INBOX_PROBE_FILE` is set.
#[test]
#[ignore = "run by a_second_process_on_the_same_file_fails_at_once"]
fn second_process_probe() {
    let Ok(path) = std::env::var("INBOX_PROBE_FILE") else {
        return;
    };
    match FileStore::open(&path) {
        Ok(_) => println!("PROBE opened"),
        Err(err) => println!("PROBE {:?}: {err}", err.kind()),
    }
}

#[test]
fn a_second_process_on_the_same_file_fails_at_once() {
    let dir = TempDir::new("process");
    let store = FileStore::open(dir.file()).unwrap();
    let started = Instant::now();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "file::second_process_probe", "--include-ignored"])
        .args(["--nocapture", "--test-threads=1"])
        .env("INBOX_PROBE_FILE", dir.file())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("PROBE AlreadyOpen: "), "{stdout}");
    assert!(stdout.contains("is already open"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(10), "at once");
    drop(store);
}

#[test]
fn a_file_that_is_not_an_inbox_is_refused() {
    let dir = TempDir::new("garbage");
    std::fs::write(dir.file(), vec![0x5a; 8192]).unwrap();
    let err = FileStore::open(dir.file()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_acknowledged_is_there_after_a_reopen() {
    let dir = TempDir::new("reopen");
    let store = FileStore::open(dir.file()).unwrap();
    let id = store.append(new_event(Some("m-1"))).await.unwrap().id();
    store.append(new_event(None)).await.unwrap();
    drop(store);
    let store = FileStore::open(dir.file()).unwrap();
    assert_eq!(store.counts().await.unwrap().queued, 2);
    assert_eq!(
        store.append(new_event(Some("m-1"))).await.unwrap(),
        Appended::Duplicate(id),
        "keys survive too"
    );
    let next = store.append(new_event(None)).await.unwrap().id();
    assert_eq!(next.get(), 3, "ids are never reused");
}

/// 64 concurrent appenders share commits: far fewer syncs than appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    const APPENDERS: usize = 64;
    const EACH: usize = 40;
    let dir = TempDir::new("group");
    let store = Arc::new(FileStore::open(dir.file()).unwrap());
    let before = store.stats();
    let started = Instant::now();
    let appenders: Vec<_> = (0..APPENDERS)
        .map(|a| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    let id = format!("m-{a}-{n}");
                    let appended = store.append(new_event(Some(&id))).await.unwrap();
                    assert!(matches!(appended, Appended::Stored(_)));
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.await.unwrap();
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    let appends = stats.appends - before.appends;
    let syncs = stats.syncs - before.syncs;
    let commits = stats.durable_commits - before.durable_commits;
    assert_eq!(appends, (APPENDERS * EACH) as u64);
    let per_append = syncs as f64 / appends as f64;
    println!(
        "group commit: {appends} appends from {APPENDERS} concurrent appenders in {elapsed:?} \
         ({:.0} appends/s): {commits} durable commits, {syncs} syncs, {per_append:.3} syncs \
         per append, {:.1} appends per commit",
        appends as f64 / elapsed.as_secs_f64(),
        appends as f64 / commits.max(1) as f64,
    );
    assert!(per_append < 0.25, "{per_append:.3} syncs per append");
    assert_eq!(
        store.counts().await.unwrap().get(State::Queued),
        (APPENDERS * EACH) as u64
    );
}

/// Many settlements in one `settle_many` are one transaction: one sync for all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_many_is_one_durable_commit() {
    const EVENTS: usize = 100;
    let dir = TempDir::new("settle-many");
    let store = FileStore::open(dir.file()).unwrap();
    for n in 0..EVENTS {
        store
            .append(new_event(Some(&format!("m-{n}"))))
            .await
            .unwrap();
    }
    let request = ClaimRequest::new(EVENTS, Duration::from_secs(60), 5);
    let leases: Vec<_> = store
        .claim(request)
        .await
        .unwrap()
        .events
        .iter()
        .map(|event| (event.lease, Settle::Done))
        .collect();
    assert_eq!(leases.len(), EVENTS);
    let before = store.stats();
    let answers = store.settle_many(leases).await;
    let after = store.stats();
    assert!(answers.into_iter().all(|answer| answer.unwrap()));
    assert_eq!(after.durable_commits - before.durable_commits, 1);
    assert_eq!(
        after.syncs - before.syncs,
        1,
        "one sync for {EVENTS} settlements"
    );
    assert_eq!(store.counts().await.unwrap().done, EVENTS as u64);
}

/// A lone append is committed at once: no wait for company.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_append_is_not_delayed() {
    let dir = TempDir::new("lone");
    let store = FileStore::open(dir.file()).unwrap();
    let before = store.stats();
    let mut slowest = Duration::ZERO;
    for n in 0..20 {
        let started = Instant::now();
        store
            .append(new_event(Some(&format!("m-{n}"))))
            .await
            .unwrap();
        slowest = slowest.max(started.elapsed());
    }
    let stats = store.stats();
    assert_eq!(
        stats.durable_commits - before.durable_commits,
        20,
        "one commit each"
    );
    assert!(stats.syncs - before.syncs >= 20, "each one synced");
    println!("lone appends: slowest {slowest:?}");
}
