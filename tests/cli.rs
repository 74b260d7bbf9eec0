//! The `metigan-webhook` command-line tool, run as a user runs it: the real binary, against the
//! project's receiver example and its own `listen`, on 127.0.0.1 only.

#[path = "common/receiver.rs"]
mod receiver;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use metigan_webhook::{sign, EventType};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;

use receiver::Receiver;

const BIN: &str = env!("CARGO_BIN_EXE_metigan-webhook");
const SECRET: &str = "whsec_cli_test_secret_value";

/// Runs the tool to completion (it bounds its own network waits with --timeout).
fn run(args: &[&str], secret: Option<&str>, stdin: Option<&[u8]>) -> Output {
    let mut command = std::process::Command::new(BIN);
    command
        .args(args)
        .env_remove("WEBHOOK_SECRET")
        .env_remove("METIGAN_WEBHOOK_URL")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(secret) = secret {
        command.env("WEBHOOK_SECRET", secret);
    }
    let mut child = command.spawn().expect("the binary runs");
    if let Some(input) = stdin {
        use std::io::Write;
        // The tool may exit before reading (a usage error): a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(input);
    }
    let output = child.wait_with_output().unwrap();
    // Whatever happened, the secret never shows.
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(SECRET), "secret printed: {text}");
        assert!(!text.contains(receiver::SECRET), "secret printed: {text}");
    }
    output
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

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A port nobody listens on (bound, then released), for "cannot connect".
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A fresh directory under the target dir's temp space.
fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cli-{name}-{}-{}",
        std::process::id(),
        now()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn help_documents_exit_codes_and_hides_the_secret() {
    let output = run(&["--help"], Some(SECRET), None);
    assert_eq!(code(&output), 0);
    let help = stdout(&output);
    for needle in [
        "sign",
        "send",
        "verify",
        "listen",
        "Exit codes",
        "0  success",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    for sub in ["sign", "send", "verify", "listen", "sample"] {
        // `run` checks that the secret (set in the environment here) is never printed.
        let output = run(&[sub, "--help"], Some(SECRET), None);
        assert_eq!(code(&output), 0, "{sub}");
        assert!(stdout(&output).contains("Exit codes"), "{sub}");
        if sub != "sample" {
            assert!(stdout(&output).contains("WEBHOOK_SECRET"), "{sub}");
        }
    }
    let output = run(&["send", "--no-such-flag"], None, None);
    assert_eq!(code(&output), 2);
}

#[test]
fn sign_matches_the_library_and_refuses_bad_secrets() {
    let body = br#"{"event":"email.delivered","messageId":"m1","data":{}}"#;
    let output = run(
        &["sign", "--timestamp", "1700000000"],
        Some(SECRET),
        Some(body),
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("{}\n", sign(SECRET, 1_700_000_000, body))
    );

    let dir = temp_dir("sign");
    let file = dir.join("event.json");
    std::fs::write(&file, body).unwrap();
    let output = run(
        &[
            "sign",
            "--secret",
            SECRET,
            "--timestamp",
            "5",
            file.to_str().unwrap(),
        ],
        None,
        None,
    );
    assert_eq!(stdout(&output).trim(), sign(SECRET, 5, body));

    // No secret, a pasted newline, a missing file.
    let output = run(&["sign"], None, Some(body));
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).starts_with("metigan-webhook: error: no secret"));
    let output = run(&["sign"], Some(&format!("{SECRET}\n")), Some(body));
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("whitespace"),
        "{}",
        stderr(&output)
    );
    let output = run(&["sign", "/no/such/file.json"], Some(SECRET), None);
    assert_eq!(code(&output), 3);
}

#[test]
fn sample_prints_every_type() {
    let output = run(&["sample", "--list"], None, None);
    let listed: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    let known: Vec<String> = EventType::KNOWN.iter().map(|e| e.to_string()).collect();
    assert_eq!(listed, known);
    let output = run(&["sample", "all"], None, None);
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), EventType::KNOWN.len());
    for (line, kind) in lines.iter().zip(EventType::KNOWN) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["event"], kind.as_str());
        assert!(value["data"].is_object());
    }
    let output = run(
        &[
            "sample",
            "email.clicked",
            "--pretty",
            "--set",
            "metadata.url=https://x.example/",
        ],
        None,
        None,
    );
    assert!(stdout(&output).contains("\n  \"data\": {"));
    assert!(stdout(&output).contains("https://x.example/"));
}

/// `send` output for one delivery: status line and body, by delivery.
fn answers(stdout: &str) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for block in stdout.split("\n> POST ") {
        let Some(status_line) = block.lines().find(|l| l.starts_with("< HTTP/")) else {
            continue;
        };
        let status: u16 = status_line
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        // The body runs from the empty `<` line to the blank line after it.
        let after = block.split("\n<\n").nth(1).unwrap_or_default();
        let body = after
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        out.push((status, body));
    }
    out
}

#[tokio::test]
async fn send_every_type_and_every_fault_to_the_receiver_example() {
    let mut receiver = Receiver::start(&[]).await;
    let url = format!("http://{}/webhooks/metigan", receiver.addr);
    let secret = Some(receiver::SECRET);
    let send = |args: Vec<&str>| {
        let mut full = vec!["send", "--url", url.as_str(), "--timeout", "10"];
        full.extend(args);
        let full: Vec<String> = full.into_iter().map(str::to_owned).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = full.iter().map(String::as_str).collect();
                run(&args, secret, None)
            })
            .await
            .unwrap()
        }
    };

    // One sample of every type: all accepted, one line each on the receiver.
    let output = send(vec!["all"]).await;
    assert_eq!(code(&output), 0, "{}{}", stdout(&output), stderr(&output));
    let got = answers(&stdout(&output));
    assert_eq!(got.len(), EventType::KNOWN.len(), "{}", stdout(&output));
    assert!(got.iter().all(|(s, b)| *s == 200 && b == "OK"), "{got:?}");
    assert!(stdout(&output).ends_with("sent 15: 15 answered 2xx, 0 did not\n"));
    // The receiver's inbox worker runs several handlers at once: lines may come in any order.
    let mut expected: Vec<String> = EventType::KNOWN
        .iter()
        .map(|kind| match kind {
            EventType::EmailDelivered => "Email delivered to jane@example.com".to_owned(),
            EventType::EmailOpened => "Email opened by jane@example.com".to_owned(),
            EventType::EmailClicked => "Link clicked in email to jane@example.com".to_owned(),
            EventType::EmailBounced => "Email bounced for jane@example.com".to_owned(),
            other => format!("Received event: {other}"),
        })
        .collect();
    let mut printed = Vec::new();
    for _ in 0..expected.len() {
        printed.push(receiver.next_line().await);
    }
    expected.sort();
    printed.sort();
    assert_eq!(printed, expected);

    // A retried delivery: both answered 200, processed once.
    let output = send(vec!["email.opened", "--duplicate"]).await;
    assert_eq!(code(&output), 0);
    assert_eq!(answers(&stdout(&output)).len(), 2);
    assert!(stdout(&output).contains("delivery 2/2, duplicate"));
    assert_eq!(
        receiver.next_line().await,
        "Email opened by jane@example.com"
    );

    // --repeat: distinct events, each processed.
    let output = send(vec!["email.delivered", "--repeat", "3"]).await;
    assert_eq!(code(&output), 0);
    for _ in 0..3 {
        assert_eq!(
            receiver.next_line().await,
            "Email delivered to jane@example.com"
        );
    }

    // Each fault on purpose: 401 with the exact reason, exit code 1, nothing processed.
    for (flag, reason) in [
        ("--stale", "timestamp_out_of_tolerance"),
        ("--future", "timestamp_out_of_tolerance"),
        ("--wrong-secret", "signature_mismatch"),
        ("--tamper", "signature_mismatch"),
    ] {
        let output = send(vec!["email.bounced", flag]).await;
        assert_eq!(code(&output), 1, "{flag}: {}", stdout(&output));
        let got = answers(&stdout(&output));
        assert_eq!(got.len(), 1, "{flag}");
        assert_eq!(got[0].0, 401, "{flag}");
        assert!(got[0].1.starts_with(reason), "{flag}: {:?}", got[0]);
        assert!(stdout(&output).ends_with("sent 1: 0 answered 2xx, 1 did not\n"));
    }

    // A body file, sent byte for byte.
    let dir = temp_dir("send-body");
    let file = dir.join("event.json");
    std::fs::write(
        &file,
        r#"{"event":"email.clicked","messageId":"from-file","data":{"recipient":"bob@example.com"}}"#,
    )
    .unwrap();
    let output = send(vec!["--body", file.to_str().unwrap()]).await;
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        receiver.next_line().await,
        "Link clicked in email to bob@example.com"
    );

    // Network and usage errors.
    let closed = format!("http://127.0.0.1:{}/none", free_port());
    let output = tokio::task::spawn_blocking(move || {
        run(
            &["send", "--url", &closed, "--timeout", "5"],
            Some(receiver::SECRET),
            None,
        )
    })
    .await
    .unwrap();
    assert_eq!(code(&output), 3, "{}", stderr(&output));
    assert!(stderr(&output).contains("cannot connect"));
    let output = run(
        &["send", "--url", "https://example.com/"],
        Some(receiver::SECRET),
        None,
    );
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("plain HTTP"),
        "{}",
        stderr(&output)
    );

    // Nothing else was printed by the receiver.
    let (rest, _) = receiver.stop().await;
    assert!(rest.is_empty(), "unexpected lines: {rest:?}");
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

/// `listen` as a child process.
struct Listener {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    url: String,
}

impl Listener {
    async fn start(args: &[&str]) -> Listener {
        let mut child = tokio::process::Command::new(BIN)
            .arg("listen")
            .args(["--port", "0"])
            .args(args)
            .env("WEBHOOK_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = drain(child.stdout.take().unwrap());
        let mut stderr = drain(child.stderr.take().unwrap());
        let url = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let line = stderr.recv().await.expect("listen exited");
                if let Some(rest) = line.strip_prefix("listening on ") {
                    break rest.split_whitespace().next().unwrap().to_owned();
                }
            }
        })
        .await
        .expect("listening within 20 s");
        Listener {
            child,
            stdout,
            stderr,
            url,
        }
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), self.stdout.recv())
            .await
            .expect("a line within 5 s")
            .expect("stdout open")
    }

    async fn err_line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), self.stderr.recv())
            .await
            .expect("a line within 5 s")
            .expect("stderr open")
    }

    /// SIGTERM: exits 0.
    async fn stop(mut self) {
        terminate(&mut self.child).await;
    }
}

/// Sends SIGTERM to a running `listen` and checks it exits 0 within 10 s.
async fn terminate(child: &mut tokio::process::Child) {
    let pid = child.id().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("listen stops on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

async fn send_to(url: &str, args: &[&str]) -> Output {
    let mut full = vec![
        "send".to_owned(),
        "--url".to_owned(),
        format!("{url}/hooks/metigan"),
    ];
    full.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = full.iter().map(String::as_str).collect();
        run(&args, Some(SECRET), None)
    })
    .await
    .unwrap()
}

fn verify(args: &[&str], secret: &str) -> (i32, Vec<String>) {
    let mut full = vec!["verify"];
    full.extend(args);
    let output = run(&full, Some(secret), None);
    let lines = stdout(&output).lines().map(str::to_owned).collect();
    (code(&output), lines)
}

fn saved(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn listen_prints_saves_and_verify_explains_the_captures() {
    let dir = temp_dir("listen");
    let dir_arg = dir.to_str().unwrap().to_owned();
    let mut listener = Listener::start(&["--format", "line", "--save", &dir_arg]).await;
    let url = listener.url.clone();

    // 1. A good delivery: printed as one JSON line. Its keys are in sorted order, so a
    // re-serialisation with serde_json (which sorts keys) changes only the whitespace.
    let body_file = temp_dir("listen-body").join("event.json");
    std::fs::write(
        &body_file,
        r#"{"data":{"recipient":"jane@example.com","subject":"Welcome"},"event":"email.complained","messageId":"msg_listen_1","timestamp":1700000000000}"#,
    )
    .unwrap();
    let output = send_to(&url, &["--body", body_file.to_str().unwrap()]).await;
    assert_eq!(code(&output), 0, "{}", stdout(&output));
    let line = listener.line().await;
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["event"], "email.complained");
    assert_eq!(value["messageId"], "msg_listen_1");
    assert!(listener
        .err_line()
        .await
        .starts_with("saved POST /hooks/metigan"));

    // 2-4. Refused ones: reason on stderr, nothing on stdout.
    for (flag, reason) in [
        ("--stale", "timestamp_out_of_tolerance"),
        ("--tamper", "signature_mismatch"),
        ("--wrong-secret", "signature_mismatch"),
    ] {
        let output = send_to(&url, &["email.sent", flag]).await;
        assert_eq!(code(&output), 1);
        assert!(listener.err_line().await.starts_with("saved "));
        let line = listener.err_line().await;
        assert_eq!(
            line,
            format!("rejected POST /hooks/metigan: {reason} (401)")
        );
    }
    listener.stop().await;

    // verify on each capture: the verdict, and the likely cause.
    let files = saved(&dir);
    assert_eq!(files.len(), 4, "{files:?}");
    let path = |i: usize| files[i].to_str().unwrap().to_owned();

    let (status, lines) = verify(&["--request", &path(0)], SECRET);
    assert_eq!(status, 0, "{lines:?}");
    assert_eq!(lines[0], "ok");
    assert!(
        lines.iter().any(|l| l == "event: email.complained"),
        "{lines:?}"
    );

    let (status, lines) = verify(&["--request", &path(1)], SECRET);
    assert_eq!(status, 1);
    assert_eq!(lines[0], "timestamp_out_of_tolerance");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("in the past") && l.contains("off by")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("only the time is refused")));
    // With the window off, its signature is fine.
    let (status, lines) = verify(&["--request", &path(1), "--ignore-timestamp"], SECRET);
    assert_eq!((status, lines[0].as_str()), (0, "ok"));

    let (status, lines) = verify(&["--request", &path(2)], SECRET);
    assert_eq!((status, lines[0].as_str()), (1, "signature_mismatch"));
    let (status, lines) = verify(&["--request", &path(3)], SECRET);
    assert_eq!((status, lines[0].as_str()), (1, "signature_mismatch"));
    assert!(
        lines.iter().any(|l| l.contains("the wrong secret")),
        "{lines:?}"
    );

    // The good capture, checked later: by then it may be stale; --now sets the time it was
    // received (the file name starts with it).
    let received: String = files[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .to_owned();
    let (status, lines) = verify(&["--request", &path(0), "--now", &received], SECRET);
    assert_eq!((status, lines[0].as_str()), (0, "ok"));

    // A secret with a pasted newline.
    let (status, lines) = verify(&["--request", &path(0)], &format!("{SECRET}\n"));
    assert_eq!((status, lines[0].as_str()), (1, "signature_mismatch"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("likely cause: secret #0 has surrounding whitespace")),
        "{lines:?}"
    );

    // The body as a framework hands it over after JSON.parse + JSON.stringify(_, null, 2),
    // checked against the signature that came with the raw bytes.
    let raw = std::fs::read(&files[0]).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let header = head
        .lines()
        .find_map(|l| l.strip_prefix("x-webhook-signature: "))
        .unwrap()
        .to_owned();
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    let reparsed = dir.join("reparsed.json");
    std::fs::write(&reparsed, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    let (status, lines) = verify(
        &[
            "--signature",
            &header,
            "--now",
            &received,
            reparsed.to_str().unwrap(),
        ],
        SECRET,
    );
    assert_eq!((status, lines[0].as_str()), (1, "signature_mismatch"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("valid JSON but not byte-identical")),
        "{lines:?}"
    );
    // The original bytes, from stdin, verify.
    let output = run(
        &["verify", "--signature", &header, "--now", &received, "-"],
        Some(SECRET),
        Some(body),
    );
    assert_eq!(code(&output), 0, "{}", stdout(&output));

    // The computed signature only on request.
    let (_, lines) = verify(&["--request", &path(2), "--show-expected"], SECRET);
    assert!(lines
        .iter()
        .any(|l| l.starts_with("expected (secret #0): t=")));
    let (_, lines) = verify(&["--request", &path(2)], SECRET);
    assert!(!lines.iter().any(|l| l.contains("expected")));
}

#[tokio::test]
async fn listen_pretty_format_and_dedupe() {
    let mut listener = Listener::start(&["--dedupe"]).await;
    let url = listener.url.clone();
    let output = send_to(&url, &["email.clicked", "--duplicate"]).await;
    assert_eq!(code(&output), 0);
    let summary = listener.line().await;
    assert!(
        summary.starts_with("── POST /hooks/metigan  email.clicked  messageId=msg_"),
        "{summary}"
    );
    assert!(summary.contains("recipient=jane@example.com"), "{summary}");
    assert_eq!(listener.line().await, "{");
    assert_eq!(listener.line().await, "  \"event\": \"email.clicked\",");
    // The duplicate is answered 200 but not printed.
    while !listener
        .err_line()
        .await
        .starts_with("duplicate POST /hooks/metigan: AlreadyProcessed")
    {}
    listener.stop().await;
}

#[test]
fn verify_usage_errors() {
    let (status, _) = verify(&["--signature", "t=1,v1=00"], SECRET);
    assert_eq!(status, 2);
    let output = run(
        &["verify", "--signature", "t=1,v1=00", "-"],
        None,
        Some(b"{}"),
    );
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("no secret"));
    let output = run(
        &["verify", "--signature", "t=1,v1=00", "/no/such/body.json"],
        Some(SECRET),
        None,
    );
    assert_eq!(code(&output), 3);
    // Header problems are verdicts, not usage errors.
    let output = run(
        &["verify", "--signature", "t=17e8,v1=00", "-"],
        Some(SECRET),
        Some(b"{}"),
    );
    assert_eq!(code(&output), 1);
    assert!(stdout(&output).starts_with("malformed_signature\n"));
}

/// Writes `raw` to a fresh file and runs `verify --request` on it.
fn verify_raw(name: &str, raw: &[u8], extra: &[&str]) -> Output {
    let file = temp_dir(name).join("request.http");
    std::fs::write(&file, raw).unwrap();
    let mut args = vec!["verify", "--request", file.to_str().unwrap()];
    args.extend(extra);
    run(&args, Some(SECRET), None)
}

#[test]
fn verify_request_refuses_bad_chunk_framing_without_panicking() {
    // A chunk size that overflows `size + 2`, one larger than the file, one whose data is not
    // followed by CRLF: each a one-line error, exit 2, no panic.
    for (name, chunks) in [
        ("huge", &b"ffffffffffffffff\r\nab\r\n0\r\n\r\n"[..]),
        ("huger", b"fffffffffffffffff\r\nab\r\n0\r\n\r\n"),
        ("long", b"10\r\nab\r\n0\r\n\r\n"),
        ("no-crlf", b"2\r\nabXY0\r\n\r\n"),
    ] {
        let mut raw =
            b"POST /hook HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Webhook-Signature: t=1,v1=00\r\n\r\n"
                .to_vec();
        raw.extend_from_slice(chunks);
        let output = verify_raw(&format!("chunk-{name}"), &raw, &[]);
        assert_eq!(code(&output), 2, "{name}: {}", stderr(&output));
        assert!(
            stderr(&output).starts_with("metigan-webhook: error: ")
                && stderr(&output).contains("chunk")
                && stderr(&output).lines().count() == 1,
            "{name}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn verify_request_reads_header_values_that_are_not_utf8() {
    // As `listen --save` writes them: header values are bytes, 0x80-0xFF included.
    let body = br#"{"event":"email.delivered","messageId":"m1","data":{}}"#;
    let t = now();
    let mut raw = b"POST /hooks/metigan HTTP/1.1\r\nx-custom: caf\xe9 \xff\r\n".to_vec();
    raw.extend_from_slice(format!("x-webhook-signature: {}\r\n", sign(SECRET, t, body)).as_bytes());
    raw.extend_from_slice(b"x-webhook-id: wh_\xe9\r\n");
    raw.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    raw.extend_from_slice(body);
    let output = verify_raw("non-utf8", &raw, &["--now", &t.to_string()]);
    assert_eq!(code(&output), 0, "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).starts_with("ok\n"), "{}", stdout(&output));
}

#[test]
fn send_refuses_header_values_and_urls_it_cannot_send_safely() {
    let url = format!("http://127.0.0.1:{}/hooks", free_port());
    for id in ["id\r", "id\nX-Injected: 1", "id\u{7f}"] {
        let output = run(
            &["send", "--url", &url, "--webhook-id", id],
            Some(SECRET),
            None,
        );
        assert_eq!(code(&output), 2, "{id:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("--webhook-id"),
            "{}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{}", stdout(&output));
    }

    // Credentials in the URL would be printed and forwarded in `Host`: refused, not echoed.
    let port = free_port();
    for url in [
        format!("http://user:pa55word@127.0.0.1:{port}/hooks"),
        format!("http://user@127.0.0.1:{port}/hooks"),
    ] {
        let output = run(&["send", "--url", &url], Some(SECRET), None);
        assert_eq!(code(&output), 2, "{url}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("user name or password"),
            "{}",
            stderr(&output)
        );
        let all = format!("{}{}", stdout(&output), stderr(&output));
        assert!(!all.contains("pa55word") && !all.contains("user@"), "{all}");
    }
}

#[test]
fn sign_to_a_closed_pipe_ends_quietly() {
    // `metigan-webhook sign | head -0`: stdout's reader is gone before the tool writes.
    let mut child = std::process::Command::new(BIN)
        .args(["sign", "--timestamp", "5"])
        .env("WEBHOOK_SECRET", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"{}").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}

/// Waits until something accepts connections on `port`.
async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on port {port} after 10 s");
}

#[tokio::test]
async fn listen_keeps_serving_when_stderr_is_closed() {
    let port = free_port();
    let mut child = tokio::process::Command::new(BIN)
        .args(["listen", "--format", "line", "--port", &port.to_string()])
        .env("WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Nobody reads stderr: every log line (listening, rejected, stopped) meets a closed pipe.
    drop(child.stderr.take());
    let mut stdout = drain(child.stdout.take().unwrap());
    wait_for_port(port).await;
    let url = format!("http://127.0.0.1:{port}");
    let output = send_to(&url, &["email.sent", "--tamper"]).await;
    assert_eq!(code(&output), 1, "{}", stdout_of(&output));
    let output = send_to(&url, &["email.sent"]).await;
    assert_eq!(code(&output), 0, "{}", stdout_of(&output));
    let line = tokio::time::timeout(Duration::from_secs(5), stdout.recv())
        .await
        .expect("a line within 5 s")
        .expect("stdout open");
    assert!(line.contains("\"event\":\"email.sent\""), "{line}");
    terminate(&mut child).await;
}

fn stdout_of(output: &Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

/// Sends `raw` on a new connection and returns the answer's status code.
async fn raw_request(url: &str, raw: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"))
}

#[tokio::test]
async fn listen_saves_every_request_even_a_refused_body() {
    let dir = temp_dir("listen-save-all");
    let dir_arg = dir.to_str().unwrap().to_owned();
    let mut listener =
        Listener::start(&["--format", "line", "--save", &dir_arg, "--body-limit", "64"]).await;
    let url = listener.url.clone();

    // A body over --body-limit: refused before the layer, saved anyway and marked truncated.
    let body = format!(
        r#"{{"event":"email.sent","messageId":"big","data":{{"pad":"{}"}}}}"#,
        "x".repeat(200)
    );
    let t = now();
    let mut raw = format!(
        "POST /hooks/metigan HTTP/1.1\r\nhost: x\r\nx-webhook-signature: {}\r\ncontent-length: {}\r\n\r\n",
        sign(SECRET, t, body.as_bytes()),
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body.as_bytes());
    assert_eq!(raw_request(&url, &raw).await, 413);
    let saved_line = listener.err_line().await;
    assert!(
        saved_line.starts_with("saved POST /hooks/metigan to ") && saved_line.contains("truncated"),
        "{saved_line}"
    );
    assert_eq!(
        listener.err_line().await,
        "rejected POST /hooks/metigan: body_too_large (413)"
    );

    // A body cut off by the client: a read error, saved with what arrived.
    let mut raw = format!(
        "POST /hooks/metigan HTTP/1.1\r\nhost: x\r\nx-webhook-signature: {}\r\ncontent-length: 50\r\n\r\n",
        sign(SECRET, t, b"{}"),
    )
    .into_bytes();
    raw.extend_from_slice(br#"{"event":"#);
    {
        use tokio::io::AsyncWriteExt;
        let addr = url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(&raw).await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
    }
    let saved_line = listener.err_line().await;
    assert!(
        saved_line.starts_with("saved POST /hooks/metigan to ") && saved_line.contains("truncated"),
        "{saved_line}"
    );
    assert!(listener
        .err_line()
        .await
        .starts_with("rejected POST /hooks/metigan: body_read_error"),);

    // A header value with bytes 0x80-0xFF, verified and saved byte for byte.
    let body = br#"{"event":"email.sent","messageId":"m8","data":{}}"#;
    let mut raw = format!(
        "POST /hooks/metigan HTTP/1.1\r\nhost: x\r\nx-webhook-signature: {}\r\ncontent-length: {}\r\n",
        sign(SECRET, t, body),
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(b"x-note: caf\xe9\r\n\r\n");
    raw.extend_from_slice(body);
    assert_eq!(raw_request(&url, &raw).await, 200);
    assert!(listener.line().await.contains("\"messageId\":\"m8\""));
    assert!(listener.err_line().await.starts_with("saved "));
    listener.stop().await;

    let files = saved(&dir);
    assert_eq!(files.len(), 3, "{files:?}");
    let path = |i: usize| files[i].to_str().unwrap().to_owned();
    let t = t.to_string();

    let output = run(
        &[
            "verify",
            "--request",
            &path(0),
            "--now",
            &t,
            "--body-limit",
            "64",
        ],
        Some(SECRET),
        None,
    );
    assert_eq!(code(&output), 1, "{}", stdout_of(&output));
    assert!(
        stdout(&output).starts_with("body_too_large\n"),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("truncated"), "{}", stdout(&output));

    let output = run(
        &["verify", "--request", &path(1), "--now", &t],
        Some(SECRET),
        None,
    );
    assert_eq!(code(&output), 1, "{}", stdout_of(&output));
    assert!(stdout(&output).contains("truncated"), "{}", stdout(&output));

    let output = run(
        &["verify", "--request", &path(2), "--now", &t],
        Some(SECRET),
        None,
    );
    assert_eq!(code(&output), 0, "{}", stdout_of(&output));
    let needle = b"x-note: caf\xe9\r\n";
    assert!(std::fs::read(&files[2])
        .unwrap()
        .windows(needle.len())
        .any(|w| w == needle));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn listen_backs_off_when_accept_fails() {
    // Out of file descriptors (EMFILE): the pending connection stays queued, so the listener is
    // ready again at once; without a pause the accept loop spins and floods stderr.
    let port = free_port();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 16 && exec \"$0\" listen --port \"$1\"")
        .arg(BIN)
        .arg(port.to_string())
        .env("WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = drain(child.stderr.take().unwrap());
    wait_for_port(port).await;
    // Idle connections hold the descriptors until the limit is reached.
    let mut held = Vec::new();
    for _ in 0..24 {
        held.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while !stderr
            .recv()
            .await
            .expect("listen exited")
            .starts_with("accept failed")
        {}
    })
    .await
    .expect("accept fails within 10 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut failures = 0;
    while let Ok(line) = stderr.try_recv() {
        if line.starts_with("accept failed") {
            failures += 1;
        }
    }
    assert!(
        (1..=60).contains(&failures),
        "{failures} accept failures in one second"
    );
    drop(held);
    terminate(&mut child).await;
}

/// `listen` escapes what it prints from an event: a recipient holding a newline and a terminal
/// escape cannot forge a second summary line or rewrite the screen.
#[tokio::test]
async fn listen_escapes_what_it_prints_from_an_event() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut listener = Listener::start(&[]).await;
    let authority = listener.url.trim_start_matches("http://").to_owned();
    let path = "/hooks/metigan";
    let body = r#"{"event":"email.delivered","messageId":"m\nforged","data":{"recipient":"a@b.c\n── POST /forged  email.opened\u001b[2J"},"timestamp":1700000000000}"#;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-webhook-signature: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        sign(SECRET, t, body.as_bytes()),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let summary = listener.line().await;
    assert!(summary.contains(r"messageId=m\nforged"), "{summary}");
    assert!(
        summary.contains(r"recipient=a@b.c\n── POST /forged  email.opened\u{1b}[2J"),
        "{summary}"
    );
    assert!(!summary.contains('\u{1b}'), "{summary}");
    // The pretty JSON that follows holds the same characters as JSON escapes, never raw.
    let mut shown = Vec::new();
    loop {
        let line = listener.line().await;
        assert!(!line.contains('\u{1b}'), "{line}");
        assert!(
            !line.starts_with("── POST /forged"),
            "a forged line: {line}"
        );
        let end = line == "}";
        shown.push(line);
        if end {
            break;
        }
    }
    assert!(shown.iter().any(|l| l.contains(r"a@b.c\n")), "{shown:?}");
    listener.stop().await;
}
