//! Secret hygiene: no secret, expected signature or body in any log line or response, for every
//! kind of rejection; `Debug` of every configured type is redacted.

mod common;

use std::time::Duration;

use axum::routing::post;
use axum::Router;
use metigan_webhook::idempotency::Dedupe;
use metigan_webhook::{sign, MetiganSignatureLayer, Reason, VerifiedEvent, Verifier};

use common::{post as http_post, serve_axum, Answer};

const SECRET: &str = "whsec_TOP_SECRET_value_42";
const T0: u64 = 1_800_000_000;
/// A marker that only appears inside bodies.
const BODY_MARK: &str = "PRIVATE-BODY-CONTENT-7c1e";

fn body(kind: &str) -> String {
    format!(
        r#"{{"event":"{kind}","messageId":"m-1","data":{{"recipient":"{BODY_MARK}@example.com","note":"{BODY_MARK}"}}}}"#
    )
}

/// A rejection kind with the headers and body that provoke it.
type Case = (Reason, Vec<(&'static str, String)>, String);

/// Every rejection kind, with what was sent.
fn cases() -> Vec<Case> {
    let good = body("email.delivered");
    let sig = |t: u64, b: &str| sign(SECRET, t, b.as_bytes());
    let not_json = format!("{BODY_MARK} is not json");
    vec![
        (Reason::MissingSignature, vec![], good.clone()),
        (
            Reason::MalformedSignature,
            vec![("x-webhook-signature", format!("t=x{},v1=00", BODY_MARK))],
            good.clone(),
        ),
        (
            Reason::TimestampOutOfTolerance,
            vec![("x-webhook-signature", sig(T0 - 1000, &good))],
            good.clone(),
        ),
        (
            Reason::SignatureMismatch,
            vec![("x-webhook-signature", sig(T0, "something else"))],
            good.clone(),
        ),
        (
            Reason::BodyTooLarge,
            vec![("x-webhook-signature", sig(T0, &good))],
            format!("{good}{}", " ".repeat(5000)),
        ),
        (
            Reason::InvalidPayload,
            vec![("x-webhook-signature", sig(T0, &not_json))],
            not_json,
        ),
        // Under the body limit, over the layer's bound on buffered bytes.
        (
            Reason::Overloaded,
            vec![("x-webhook-signature", sig(T0, &good))],
            format!("{good}{}", " ".repeat(3500)),
        ),
    ]
}

#[tokio::test]
async fn no_rejection_leaks_into_logs_or_responses() {
    let (capture, _guard) = common::LogCapture::install();

    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .body_limit(4096)
        .max_buffered_bytes(3000)
        .clock(|| T0)
        .deduplicate(Dedupe::in_memory())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/hook", post(|_e: VerifiedEvent| async { "OK" }))
        .layer(layer);
    let addr = serve_axum(app).await;

    let mut forbidden: Vec<String> = vec![SECRET.to_owned(), BODY_MARK.to_owned()];
    let mut answers: Vec<(Reason, Answer)> = Vec::new();
    for (reason, headers, body) in cases() {
        // The signature the server would expect for this body: never to be shown.
        let expected = sign(SECRET, T0, body.as_bytes());
        forbidden.push(expected.split_once("v1=").unwrap().1.to_owned());
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = http_post(addr, "/hook", &headers, body).await;
        assert_eq!(answer.status, reason.status(), "{reason}");
        answers.push((reason, answer));
    }
    // A body read error: the client declares more than it sends, then closes.
    {
        use tokio::io::AsyncWriteExt;
        let good = body("email.opened");
        let head = format!(
            "POST /hook HTTP/1.1\r\nhost: x\r\nx-webhook-signature: {}\r\ncontent-length: {}\r\n\r\n",
            sign(SECRET, T0, good.as_bytes()),
            good.len() + 10
        );
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(good.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = Vec::new();
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("body_read_error"), "{text}");
        for secret in &forbidden {
            assert!(!text.contains(secret.as_str()), "response leaks {secret:?}");
        }
    }

    let log = capture.text();
    for &reason in Reason::ALL {
        assert!(log.contains(reason.code()), "the log names {reason}: {log}");
    }
    for (reason, answer) in &answers {
        let text = format!("{:?}{}", answer.headers, answer.text());
        for secret in &forbidden {
            assert!(
                !text.contains(secret.as_str()),
                "{reason} response leaks {secret:?}"
            );
        }
    }
    for secret in &forbidden {
        assert!(
            !log.contains(secret.as_str()),
            "log leaks {secret:?}: {log}"
        );
    }
}

#[test]
fn debug_output_is_redacted() {
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .secret("whsec_second_secret")
        .deduplicate(Dedupe::in_memory())
        .build()
        .unwrap();
    let builder = MetiganSignatureLayer::builder().secret(SECRET);
    let verifier = Verifier::new([SECRET]).unwrap();
    let b = body("email.delivered");
    let header = sign(SECRET, T0, b.as_bytes());
    let parsed = verifier
        .check_header(Some(header.as_bytes()), None, T0)
        .unwrap();
    let envelope = metigan_webhook::Envelope::parse(bytes::Bytes::from(b.clone())).unwrap();
    let event = VerifiedEvent::new(envelope.clone(), T0, None, 0);
    let verified_body = metigan_webhook::VerifiedBody::new(bytes::Bytes::from(b));
    let service = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(|_r: http::Request<metigan_webhook::VerifiedBody>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        });
    let signature_hex = header.split_once("v1=").unwrap().1.to_owned();
    for (what, text) in [
        ("layer", format!("{layer:?}")),
        ("builder", format!("{builder:?}")),
        ("verifier", format!("{verifier:?}")),
        ("header", format!("{parsed:?}")),
        ("envelope", format!("{envelope:?}")),
        ("event", format!("{event:?}")),
        ("body", format!("{verified_body:?}")),
        ("service", format!("{service:?}")),
    ] {
        for secret in [
            SECRET,
            "whsec_second_secret",
            BODY_MARK,
            signature_hex.as_str(),
        ] {
            assert!(
                !text.contains(secret),
                "{what} Debug leaks {secret:?}: {text}"
            );
        }
    }
}

/// Under a flood, the rejection log stays small: ten lines a second naming the client's
/// address, then one line summing up the rest per reason.
#[tokio::test]
async fn rejection_lines_name_the_peer_and_are_rate_limited() {
    use axum::extract::{ConnectInfo, Request};
    use metigan_webhook::PeerAddr;
    use std::net::SocketAddr;

    let (capture, _guard) = common::LogCapture::install();
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .clock(|| T0)
        .build()
        .unwrap();
    // With `axum::serve`, the peer's address comes from `ConnectInfo`: hand it to the layer.
    let app = Router::new()
        .route("/hook", post(|_e: VerifiedEvent| async { "OK" }))
        .layer(layer)
        .layer(axum::middleware::map_request(
            |ConnectInfo(peer): ConnectInfo<SocketAddr>, mut request: Request| async move {
                request.extensions_mut().insert(PeerAddr(peer));
                request
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).await.unwrap();
    });

    let good = body("email.delivered");
    let forged = sign("whsec_not_the_secret", T0, good.as_bytes());
    let started = std::time::Instant::now();
    for _ in 0..50 {
        let answer = http_post(
            addr,
            "/hook",
            &[("x-webhook-signature", &forged)],
            good.clone(),
        )
        .await;
        assert_eq!(answer.status, 401);
    }
    let flood_took = started.elapsed();
    let log = capture.text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Metigan webhook rejected"))
        .collect();
    if flood_took < Duration::from_millis(900) {
        assert_eq!(lines.len(), 10, "{log}");
    }
    assert!(lines.len() < 50, "{log}");
    for line in &lines {
        assert!(line.contains("reason=\"signature_mismatch\""), "{line}");
        assert!(line.contains("peer=127.0.0.1:"), "{line}");
    }

    // A second later, the next rejection opens a new window and sums up what was not logged.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = http_post(addr, "/hook", &[], good.clone()).await;
    assert_eq!(answer.status, 401);
    let log = capture.text();
    // Every forged request is either a line of its own or counted in a summary line.
    let summaries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("more requests were answered than logged"))
        .collect();
    assert!(!summaries.is_empty(), "a summary line: {log}");
    let summed: usize = summaries
        .iter()
        .map(|line| {
            let counts = line
                .split("counts=signature_mismatch=")
                .nth(1)
                .unwrap_or("0");
            let digits: String = counts.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().unwrap_or(0)
        })
        .sum();
    assert_eq!(summed, 50 - lines.len(), "{log}");
    assert!(log.contains("reason=\"missing_signature\""), "{log}");
}
