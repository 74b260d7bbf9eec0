//! `metigan-webhook inbox ...` (features `cli` and `inbox-admin`): the real binary against the
//! admin router served on 127.0.0.1 over an inbox holding a dead letter; each step seen in
//! `stats`, the dead letter listed, replayed and processed once the handler is fixed, done
//! events purged.

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use metigan_webhook::inbox::{admin, HandlerError, Inbox};
use metigan_webhook::VerifiedEvent;
use serde_json::{json, Value};

use crate::common::serve_axum;
use crate::{eventually, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_metigan-webhook");

/// Runs `metigan-webhook inbox ARGS` with `--admin-url` taken from `url` (through the
/// variable when `url` starts with `env:`).
async fn inbox_cmd(url: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(BIN);
    command
        .arg("inbox")
        .args(args)
        .env_remove("METIGAN_INBOX_ADMIN");
    match url.strip_prefix("env:") {
        Some(url) => {
            command.env("METIGAN_INBOX_ADMIN", url);
        }
        None => {
            command.args(["--admin-url", url]);
        }
    }
    command.output().await.expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited normally")
}

/// Runs a command that must succeed; its stdout.
async fn ok(url: &str, args: &[&str]) -> String {
    let output = inbox_cmd(url, args).await;
    assert_eq!(code(&output), 0, "{args:?}: {}", stderr(&output));
    assert!(stderr(&output).is_empty(), "{args:?}: {}", stderr(&output));
    stdout(&output)
}

/// `stats --json`, parsed.
async fn stats(url: &str) -> Value {
    let text = ok(url, &["stats", "--json"]).await;
    assert_eq!(text.lines().count(), 1, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn counts(queued: u64, dead: u64, done: u64) -> Value {
    json!({"queued": queued, "running": 0, "retrying": 0, "dead": dead, "done": done,
           "total": queued + dead + done})
}

async fn stats_become(url: &str, expected: Value) {
    eventually(
        Duration::from_secs(15),
        &format!("stats {expected}"),
        || {
            let expected = expected.clone();
            async move { stats(url).await == expected }
        },
    )
    .await;
}

/// Appends an event whose `messageId` is `message_id`; its id.
async fn deliver(inbox: &Inbox, message_id: &str) -> u64 {
    crate::deliver(inbox, message_id).await.get()
}

/// The human `stats` output's count of `state`.
fn stat_line(text: &str, state: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(state)).then(|| words.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {state} line: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_replayed_and_processed_then_purged() {
    let dir = TempDir::new("admin-cli");
    let inbox = Inbox::open(dir.file()).unwrap();
    // Events whose messageId starts with `bad` fail permanently until the handler is fixed.
    let fixed = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let worker = inbox
        .worker()
        .spawn_fn({
            let (fixed, handled) = (fixed.clone(), handled.clone());
            move |event: VerifiedEvent| {
                let id = event.message_id().unwrap_or_default().to_owned();
                let fails = !fixed.load(Ordering::SeqCst) && id.starts_with("bad");
                if !fails {
                    handled.lock().unwrap().push(id);
                }
                async move {
                    if fails {
                        return Err(HandlerError::permanent(
                            "relay refused\n2023-11-14 INFO forged line \u{1b}[2J",
                        ));
                    }
                    Ok(())
                }
            }
        })
        .unwrap();
    // Nested under a prefix, as an application would mount it beside other admin routes.
    let addr = serve_axum(Router::new().nest("/admin", admin::router(inbox.clone()))).await;
    let url = format!("http://{addr}/admin");
    let url = url.as_str();

    let ok_1 = deliver(&inbox, "ok-1").await;
    // A messageId with an escape sequence: printed escaped, never as is.
    let bad = deliver(&inbox, "bad-1\\u001b[31m").await;
    stats_become(url, counts(0, 1, 1)).await;

    // `stats`, as a table and through the variable.
    let text = ok(&format!("env:{url}"), &["stats"]).await;
    assert_eq!(stat_line(&text, "dead"), 1, "{text}");
    assert_eq!(stat_line(&text, "done"), 1, "{text}");
    assert_eq!(stat_line(&text, "total"), 2, "{text}");

    // `list --state dead` shows it, on one line, escaped.
    let text = ok(url, &["list", "--state", "dead"]).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("ID"), "{text}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row[..4],
        [bad.to_string().as_str(), "dead", "1", "0"],
        "{text}"
    );
    assert!(
        lines[1].contains("email.delivered:bad-1\\u{1b}[31m"),
        "{text}"
    );
    assert!(lines[1].contains("relay refused\\n2023-11-14 INFO forged line \\u{1b}[2J"));
    assert!(!text.contains('\u{1b}'), "{text:?}");
    let listed: Value = serde_json::from_str(
        &ok(url, &["list", "--state", "dead", "--json", "--limit", "5"]).await,
    )
    .unwrap();
    assert_eq!(listed["events"][0]["id"], bad);
    assert_eq!(listed["events"][0]["message_id"], "bad-1\u{1b}[31m");
    assert_eq!(
        ok(url, &["list", "--state", "retrying"]).await,
        "no events\n"
    );

    // `show`, with its body only on request; `--json` output is valid JSON without raw
    // controls.
    let text = ok(url, &["show", &bad.to_string()]).await;
    assert!(text.contains("message id   bad-1\\u{1b}[31m"), "{text}");
    assert!(!text.contains("body"), "{text}");
    let text = ok(url, &["show", &bad.to_string(), "--body"]).await;
    assert!(text.contains("body         (utf-8, "), "{text}");
    assert!(
        text.contains(r#""messageId": "bad-1\u001b[31m","#),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");
    let text = ok(url, &["show", &bad.to_string(), "--body", "--json"]).await;
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["body_encoding"], "utf-8");
    assert!(!text.contains('\u{1b}'), "{text:?}");

    // Refusals: exit 1, one line on stderr.
    let output = inbox_cmd(url, &["replay", "999"]).await;
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert_eq!(stderr(&output), "metigan-webhook: error: no event 999\n");
    let output = inbox_cmd(url, &["replay", &ok_1.to_string()]).await;
    assert_eq!(code(&output), 1);
    assert!(
        stderr(&output).contains("is done, not dead"),
        "{}",
        stderr(&output)
    );
    let output = inbox_cmd(url, &["show", "999"]).await;
    assert_eq!(code(&output), 1);
    assert_eq!(stats(url).await, counts(0, 1, 1));

    // Fixed, `replay ID` queues it again and the worker processes it.
    fixed.store(true, Ordering::SeqCst);
    let text = ok(url, &["replay", &bad.to_string()]).await;
    assert!(
        text.starts_with(&format!("replayed event {bad}: now ")),
        "{text}"
    );
    assert!(text.ends_with("(replay 1)\n"), "{text}");
    stats_become(url, counts(0, 0, 2)).await;
    assert_eq!(
        *handled.lock().unwrap(),
        ["ok-1".to_owned(), "bad-1\u{1b}[31m".to_owned()]
    );

    // `replay --all` with no dead letter left.
    assert_eq!(
        ok(url, &["replay", "--all"]).await,
        "replayed 0 dead letters\n"
    );

    // `purge`: nothing is a week old; everything done is at least 0 s old.
    let text = ok(url, &["purge", "--older-than", "7d"]).await;
    assert!(
        text.starts_with("purged 0 done events finished over 7d ago"),
        "{text}"
    );
    let text = ok(url, &["purge", "--older-than", "0s", "--json"]).await;
    let purged: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(purged["purged_events"], 2, "{text}");
    assert_eq!(stats(url).await, counts(0, 0, 0));

    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_and_unreachable_admin_ports_exit_3() {
    let dir = TempDir::new("admin-cli-errors");
    let inbox = Inbox::open(dir.file()).unwrap();
    let addr = serve_axum(admin::router(inbox.clone())).await;
    let url = format!("http://{addr}");

    // No URL at all.
    let output = tokio::process::Command::new(BIN)
        .args(["inbox", "stats"])
        .env_remove("METIGAN_INBOX_ADMIN")
        .output()
        .await
        .unwrap();
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("METIGAN_INBOX_ADMIN"));

    for args in [
        &["replay"][..],
        &["replay", "3", "--all"],
        &["purge"],
        &["purge", "--older-than", "7w"],
        &["list", "--state", "deceased"],
        &["list", "--limit", "0"],
        &["show", "abc"],
    ] {
        let output = inbox_cmd(&url, args).await;
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
    }
    // A cursor the API does not know is the caller's mistake too.
    let output = inbox_cmd(&url, &["list", "--cursor", "x&state=done"]).await;
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cursor: \"x&state=done\""),
        "{}",
        stderr(&output)
    );
    for bad_url in [
        "https://127.0.0.1:1",
        "http://user:pw@127.0.0.1:1",
        "127.0.0.1:1",
    ] {
        let output = inbox_cmd(bad_url, &["stats"]).await;
        assert_eq!(code(&output), 2, "{bad_url}: {}", stderr(&output));
    }

    // Nobody listening: 3.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = inbox_cmd(&format!("http://127.0.0.1:{port}"), &["stats"]).await;
    assert_eq!(code(&output), 3, "{}", stderr(&output));
    assert!(stderr(&output).contains("cannot reach the inbox admin API"));

    // A server that is not the admin router (a wrong prefix): 1, with a hint.
    let output = inbox_cmd(&format!("{url}/nowhere"), &["stats"]).await;
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert!(stderr(&output).contains("is --admin-url the admin router?"));
}
