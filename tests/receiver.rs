//! The receiver example as a user runs it: the real binary, driven over HTTP on 127.0.0.1.

mod common;

#[path = "common/receiver.rs"]
mod receiver;

use std::time::Duration;

use tokio::process::Command;

use common::{event_body, now, post};
use receiver::{receiver_binary, Receiver};

const SECRET: &str = receiver::SECRET;
const PATH: &str = "/webhooks/metigan";

fn signed_headers(body: &str, t: u64, secret: &str) -> String {
    metigan_webhook::sign(secret, t, body.as_bytes())
}

#[tokio::test]
async fn receiver_prints_one_line_per_event_and_rejects_bad_requests() {
    let mut receiver = Receiver::start(&[]).await;
    let addr = receiver.addr;

    // Every event type: 200 OK and exactly the documented line, flushed at once.
    let expected = [
        ("email.delivered", "Email delivered to jane@example.com"),
        ("email.opened", "Email opened by jane@example.com"),
        ("email.clicked", "Link clicked in email to jane@example.com"),
        ("email.bounced", "Email bounced for jane@example.com"),
        ("email.sent", "Received event: email.sent"),
        ("email.complained", "Received event: email.complained"),
        (
            "email.delivery_delayed",
            "Received event: email.delivery_delayed",
        ),
        ("email.unsubscribed", "Received event: email.unsubscribed"),
        ("email.failed", "Received event: email.failed"),
        ("contact.created", "Received event: contact.created"),
        ("contact.updated", "Received event: contact.updated"),
        ("contact.deleted", "Received event: contact.deleted"),
        ("audience.created", "Received event: audience.created"),
        ("audience.updated", "Received event: audience.updated"),
        ("audience.deleted", "Received event: audience.deleted"),
        (
            "email.brand_new_type",
            "Received event: email.brand_new_type",
        ),
    ];
    // One messageId for all: different event types of one email are all processed.
    for (event, line) in expected.iter() {
        let body = event_body(event, "msg-shared");
        let sig = signed_headers(&body, now(), SECRET);
        let answer = post(
            addr,
            PATH,
            &[
                ("x-webhook-signature", &sig),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
        assert_eq!(answer.status, 200, "{event}: {}", answer.text());
        assert_eq!(answer.text(), "OK");
        assert_eq!(receiver.next_line().await, *line);
    }

    // A retried delivery of a processed event: 200 OK, the handler does not run (nothing
    // printed, checked at the end).
    let body = event_body("email.delivered", "msg-shared");
    let sig = signed_headers(&body, now(), SECRET);
    let answer = post(addr, PATH, &[("x-webhook-signature", &sig)], body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "OK");

    // Rejections: status and reason code; nothing printed on stdout.
    let body = event_body("email.delivered", "msg-bad");
    let good_sig = signed_headers(&body, now(), SECRET);
    /// Extra headers, body, expected status, expected reason code.
    type BadRequest = (Vec<(&'static str, String)>, String, u16, &'static str);
    let cases: Vec<BadRequest> = vec![
        (vec![], body.clone(), 401, "missing_signature"),
        (
            vec![("x-webhook-signature", "t=abc,v1=00".to_owned())],
            body.clone(),
            401,
            "malformed_signature",
        ),
        (
            vec![(
                "x-webhook-signature",
                signed_headers(&body, now() - 3600, SECRET),
            )],
            body.clone(),
            401,
            "timestamp_out_of_tolerance",
        ),
        (
            vec![(
                "x-webhook-signature",
                signed_headers(&body, now(), "whsec_wrong"),
            )],
            body.clone(),
            401,
            "signature_mismatch",
        ),
        (
            vec![("x-webhook-signature", good_sig.clone())],
            body.replace("jane", "john"),
            401,
            "signature_mismatch",
        ),
        (
            vec![(
                "x-webhook-signature",
                signed_headers("not json", now(), SECRET),
            )],
            "not json".to_owned(),
            400,
            "invalid_payload",
        ),
    ];
    for (headers, body, status, code) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = post(addr, PATH, &headers, body).await;
        assert_eq!(answer.status.as_u16(), status, "{code}");
        assert!(answer.text().starts_with(code), "{code}: {}", answer.text());
    }

    // Over the default 1 MiB limit: 413, even correctly signed.
    let big = format!(
        r#"{{"event":"email.delivered","messageId":"big","data":{{"pad":"{}"}}}}"#,
        "x".repeat(1024 * 1024)
    );
    let sig = signed_headers(&big, now(), SECRET);
    // Sent head first: the 413 arrives before the body is sent at all (the server refuses on
    // Content-Length and would reset a connection still pushing 1 MiB at it).
    let answer = head_only(addr, &sig, big.len()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");

    // Just under the limit passes.
    let mut fits = format!(
        r#"{{"event":"email.opened","messageId":"fits","data":{{"recipient":"big@example.com","pad":"{}"}}}}"#,
        "y".repeat(1024 * 1024 - 200)
    );
    while fits.len() < 1024 * 1024 - 10 {
        fits.insert(fits.len() - 3, 'y');
    }
    let sig = signed_headers(&fits, now(), SECRET);
    let answer = post(addr, PATH, &[("x-webhook-signature", &sig)], fits).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        receiver.next_line().await,
        "Email opened by big@example.com"
    );

    // Unknown path: 404, not a signature error.
    let answer = post(addr, "/elsewhere", &[], "{}").await;
    assert_eq!(answer.status, 404);

    let (stdout, stderr) = receiver.stop().await;
    assert!(
        stdout.is_empty(),
        "rejections print nothing on stdout: {stdout:?}"
    );
    let log = stderr.join("\n");
    for code in ["missing_signature", "signature_mismatch", "body_too_large"] {
        assert!(log.contains(code), "stderr logs the reason {code}: {log}");
    }
    for secret_part in [SECRET, "whsec_wrong", "jane@example.com", "not json"] {
        assert!(
            !log.contains(secret_part),
            "stderr leaks {secret_part:?}: {log}"
        );
    }
}

/// Sends only a request head declaring `len` body bytes; returns the answer's text.
async fn head_only(addr: std::net::SocketAddr, signature: &str, len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\nx-webhook-signature: {signature}\r\n\
         content-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&answer).contains("body_too_large") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn receiver_refuses_to_start_without_a_usable_secret() {
    let binary = receiver_binary();
    for secret in [None, Some(""), Some("whsec_pasted\n")] {
        let mut command = Command::new(&binary);
        command.env_remove("WEBHOOK_SECRET").env("PORT", "0");
        if let Some(secret) = secret {
            command.env("WEBHOOK_SECRET", secret);
        }
        let output = tokio::time::timeout(Duration::from_secs(20), command.output())
            .await
            .expect("exits at once")
            .unwrap();
        assert!(!output.status.success(), "{secret:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("WEBHOOK_SECRET"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains("whsec_pasted"), "{stderr}");
        assert!(output.stdout.is_empty());
    }
}

/// `DEDUPE=off`: every delivery runs the handler, retries included; a wrong value, or `off`
/// together with `REDIS_URL`, stops the receiver at start with one line.
#[tokio::test]
async fn receiver_with_deduplication_off_processes_every_delivery() {
    let mut receiver = Receiver::start(&[("DEDUPE", "off")]).await;
    let body = event_body("email.opened", "msg-twice");
    for _ in 0..2 {
        let sig = signed_headers(&body, now(), SECRET);
        let answer = post(
            receiver.addr,
            PATH,
            &[("x-webhook-signature", &sig)],
            body.clone(),
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            receiver.next_line().await,
            "Email opened by jane@example.com"
        );
    }
    let (stdout, _) = receiver.stop().await;
    assert!(stdout.is_empty(), "{stdout:?}");

    let binary = receiver_binary();
    for (env, needle) in [
        (vec![("DEDUPE", "sometimes")], "DEDUPE must be"),
        (
            vec![("DEDUPE", "off"), ("REDIS_URL", "redis://127.0.0.1:1")],
            "choose one",
        ),
    ] {
        let mut command = Command::new(&binary);
        command
            .env("WEBHOOK_SECRET", SECRET)
            .env("PORT", "0")
            .envs(env);
        let output = tokio::time::timeout(Duration::from_secs(20), command.output())
            .await
            .expect("exits at once")
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{needle}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}

/// A `GET` on the webhook route (a health checker, a browser) is answered `405` by the router,
/// before the signature layer: not logged as a rejection. Values printed from an event are
/// escaped: a recipient with a newline or a terminal escape sequence cannot forge a line.
#[tokio::test]
async fn receiver_answers_405_to_other_methods_and_escapes_what_it_prints() {
    let mut receiver = Receiver::start(&[]).await;
    let addr = receiver.addr;

    for method in ["GET", "HEAD", "PUT", "DELETE"] {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{PATH}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let answer = common::send(request).await;
        assert_eq!(answer.status, 405, "{method}");
        assert_eq!(answer.headers["allow"], "POST", "{method}");
    }

    let forged = [
        (
            "a@b.c\nEmail delivered to forged@x",
            r"Email delivered to a@b.c\nEmail delivered to forged@x",
        ),
        (
            "a@b.c\r\u{1b}[2KEmail delivered to forged@x\u{2028}\\",
            r"Email delivered to a@b.c\r\u{1b}[2KEmail delivered to forged@x\u{2028}\\",
        ),
    ];
    for (i, (recipient, line)) in forged.iter().enumerate() {
        let body = serde_json::json!({
            "event": "email.delivered",
            "messageId": format!("forged-{i}"),
            "data": { "recipient": recipient },
            "timestamp": 1_700_000_000_000u64,
        })
        .to_string();
        let sig = signed_headers(&body, now(), SECRET);
        let answer = post(addr, PATH, &[("x-webhook-signature", &sig)], body).await;
        assert_eq!(answer.status, 200);
        assert_eq!(receiver.next_line().await, *line);
    }
    // An unknown event type is printed escaped too.
    let body = event_body("email.new\ntype", "forged-type").replace("\n", "\\n");
    let sig = signed_headers(&body, now(), SECRET);
    let answer = post(addr, PATH, &[("x-webhook-signature", &sig)], body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        receiver.next_line().await,
        r"Received event: email.new\ntype"
    );

    let (stdout, stderr) = receiver.stop().await;
    assert!(stdout.is_empty(), "one line per event: {stdout:?}");
    let log = stderr.join("\n");
    assert!(
        !log.contains("rejected") && !log.contains("missing_signature"),
        "a GET is not a rejection: {log}"
    );
}

/// Every edge setting is read from the environment; a bad value stops the receiver at start
/// with one line naming the variable (exit code 2).
#[tokio::test]
async fn receiver_refuses_bad_edge_settings() {
    let binary = receiver_binary();
    for (name, value) in [
        ("HEADER_READ_TIMEOUT_SECS", "ten"),
        ("BODY_READ_TIMEOUT_SECS", "0"),
        ("REQUEST_TIMEOUT_SECS", "-1"),
        ("SHUTDOWN_TIMEOUT_SECS", "NaN"),
        ("REQUEST_TIMEOUT_SECS", "1e30"),
        ("MAX_CONNECTIONS", "0"),
        ("MAX_CONNECTIONS", "1.5"),
        ("MAX_BUFFERED_BYTES", "1024"),
        ("MAX_BUFFERED_BYTES", "lots"),
    ] {
        let mut command = Command::new(&binary);
        command
            .env("WEBHOOK_SECRET", SECRET)
            .env("PORT", "0")
            .env(name, value);
        let output = tokio::time::timeout(Duration::from_secs(20), command.output())
            .await
            .expect("exits at once")
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(name), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
