//! A webhook URL is public: lying lengths, endless and trickling bodies, garbage and oversized
//! headers, non-UTF-8 bytes and replays, each against a real server on 127.0.0.1 and bounded in
//! time.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use metigan_webhook::idempotency::Dedupe;
use metigan_webhook::{sign, MetiganSignatureLayer, VerifiedEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_http::timeout::TimeoutLayer;

use common::{event_body, now, post as http_post, serve_axum};

const SECRET: &str = "whsec_adversarial";
const T0: u64 = 1_800_000_000;

struct Server {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    clock: Arc<AtomicU64>,
}

/// The documented deployment: the layer (64 KiB limit, dedupe in memory, injectable clock)
/// behind a 1 s `TimeoutLayer`, so no client can hold a request longer than that.
async fn server() -> Server {
    let calls = Arc::new(AtomicUsize::new(0));
    let clock = Arc::new(AtomicU64::new(T0));
    let c = calls.clone();
    let k = clock.clone();
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .body_limit(64 * 1024)
        .clock(move || k.load(Ordering::SeqCst))
        .deduplicate(Dedupe::in_memory())
        .build()
        .unwrap();
    #[allow(deprecated)]
    let timeout = TimeoutLayer::new(Duration::from_secs(1));
    let app = Router::new()
        .route(
            "/hook",
            post(move |_event: VerifiedEvent| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    "OK"
                }
            }),
        )
        .layer(layer)
        .layer(timeout);
    Server {
        addr: serve_axum(app).await,
        calls,
        clock,
    }
}

/// Writes `head` (and then `body` parts with pauses), reads the first answer's status line.
async fn raw(
    addr: SocketAddr,
    head: impl AsRef<[u8]>,
    parts: &[(&[u8], Duration)],
) -> (u16, String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_ref()).await.unwrap();
    let writer = {
        let parts: Vec<(Vec<u8>, Duration)> = parts.iter().map(|(b, d)| (b.to_vec(), *d)).collect();
        let (mut read, mut write) = stream.into_split();
        let task = tokio::spawn(async move {
            for (bytes, pause) in parts {
                tokio::time::sleep(pause).await;
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            // Keep the write side open: the server must not wait for more.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(write);
        });
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let read_all = async {
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        answer.extend_from_slice(&buf[..n]);
                        if let Some(end) = find_end(&answer) {
                            answer.truncate(end);
                            break;
                        }
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .expect("an answer within 10 s");
        task.abort();
        answer
    };
    let text = String::from_utf8_lossy(&writer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text, started.elapsed())
}

/// End of the first response: headers plus a `content-length` body.
fn find_end(data: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(data);
    let head_end = text.find("\r\n\r\n")? + 4;
    let len = text[..head_end]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (data.len() >= head_end + len).then_some(head_end + len)
}

fn signed_head(body: &str, content_length: usize, t: u64) -> String {
    let sig = sign(SECRET, t, body.as_bytes());
    format!(
        "POST /hook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-webhook-signature: {sig}\r\ncontent-length: {content_length}\r\n\r\n"
    )
}

#[tokio::test]
async fn content_length_longer_than_the_body_times_out() {
    let s = server().await;
    let body = event_body("email.sent", "lie-long");
    let head = signed_head(&body, body.len() + 500, T0);
    let (status, _, took) = raw(s.addr, &head, &[(body.as_bytes(), Duration::ZERO)]).await;
    assert_eq!(status, 408, "the body never completes: the timeout answers");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn content_length_shorter_than_the_body_is_a_mismatch() {
    let s = server().await;
    let body = event_body("email.sent", "lie-short");
    // Signed over the whole body, but only the first half is declared: the server verifies
    // what was declared, which does not match. The rest is never taken as part of the event.
    let head = signed_head(&body, body.len() / 2, T0);
    let (status, text, _) = raw(s.addr, &head, &[(body.as_bytes(), Duration::ZERO)]).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("signature_mismatch"), "{text}");
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn chunked_body_that_never_ends_times_out() {
    let s = server().await;
    let sig = sign(SECRET, T0, b"whatever");
    let head = format!(
        "POST /hook HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\
         x-webhook-signature: {sig}\r\n\r\n"
    );
    let chunk: &[u8] = b"10\r\n0123456789abcdef\r\n";
    let parts: Vec<(&[u8], Duration)> = (0..20)
        .map(|_| (chunk, Duration::from_millis(20)))
        .collect();
    let (status, _, took) = raw(s.addr, &head, &parts).await;
    assert_eq!(status, 408);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn trickling_body_is_cut_by_the_timeout() {
    let s = server().await;
    let body = event_body("email.sent", "trickle");
    let head = signed_head(&body, body.len(), T0);
    // One byte a second: it would take minutes; the server gives up after 1 s.
    let parts: Vec<(&[u8], Duration)> = body
        .as_bytes()
        .chunks(1)
        .map(|b| (b, Duration::from_secs(1)))
        .collect();
    let (status, _, took) = raw(s.addr, &head, &parts).await;
    assert_eq!(status, 408);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);
}

/// A request whose signature header holds `extra` bytes (sent as is, not UTF-8) after a valid
/// or invalid signature.
fn head_with_raw_signature(signature: &[u8], body: &str) -> Vec<u8> {
    let mut head = b"POST /hook HTTP/1.1\r\nhost: x\r\nx-webhook-signature: ".to_vec();
    head.extend_from_slice(signature);
    head.extend_from_slice(format!("\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes());
    head
}

#[tokio::test]
async fn non_utf8_signature_bytes_are_handled() {
    let s = server().await;
    let body = event_body("email.sent", "bytes");
    let good = sign(SECRET, T0, body.as_bytes());

    // Bytes 0xFF 0xFE in the timestamp: malformed.
    let head = head_with_raw_signature(b"t=1\xff\xfe,v1=00", &body);
    assert!(
        std::str::from_utf8(&head).is_err(),
        "really not UTF-8 on the wire"
    );
    let (status, text, _) = raw(s.addr, &head, &[(body.as_bytes(), Duration::ZERO)]).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("malformed_signature"), "{text}");

    // In a `v1` value: it never matches.
    let mut bad_v1 = format!("t={T0},v1=").into_bytes();
    bad_v1.extend_from_slice(&[0xff; 64]);
    let head = head_with_raw_signature(&bad_v1, &body);
    let (status, text, _) = raw(s.addr, &head, &[(body.as_bytes(), Duration::ZERO)]).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("signature_mismatch"), "{text}");
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);

    // In a token the parser ignores, beside a valid signature: accepted.
    let mut extra = good.into_bytes();
    extra.extend_from_slice(b",x=\xff\xfe");
    let head = head_with_raw_signature(&extra, &body);
    let (status, text, _) = raw(s.addr, &head, &[(body.as_bytes(), Duration::ZERO)]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
}

/// Header rejections are answered without reading the body: the request declares a body and
/// never sends it, yet the 401 arrives at once (and `Expect: 100-continue` gets no `100`).
#[tokio::test]
async fn header_rejections_never_wait_for_the_body() {
    let s = server().await;
    let body = event_body("email.sent", "unread");
    let cases = [
        (None, "missing_signature"),
        (Some("t=abc,v1=00".to_owned()), "malformed_signature"),
        (
            Some(sign(SECRET, T0 - 3600, body.as_bytes())),
            "timestamp_out_of_tolerance",
        ),
    ];
    for (signature, code) in cases {
        for expect_continue in [false, true] {
            let mut head =
                "POST /hook HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n".to_owned();
            if let Some(signature) = &signature {
                head.push_str(&format!("x-webhook-signature: {signature}\r\n"));
            }
            if expect_continue {
                head.push_str("expect: 100-continue\r\n");
            }
            head.push_str("\r\n");
            // No body at all; the connection stays open.
            let (status, text, took) = raw(s.addr, &head, &[]).await;
            assert_eq!(status, 401, "{code}: {text}");
            assert!(text.contains(code), "{text}");
            assert!(!text.contains("100 Continue"), "{text}");
            assert!(
                took < Duration::from_millis(900),
                "answered before the 1 s timeout: {took:?}"
            );
        }
    }
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_garbage_headers_are_all_401() {
    let s = server().await;
    let body = event_body("email.sent", "garbage");
    // A small deterministic generator (xorshift): reproducible garbage, no extra dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet: Vec<u8> = (0x20u8..0x7f).chain(0x80..=0xff).chain([b'\t']).collect();
    let pieces: [&[u8]; 8] = [
        b"t=",
        b"v1=",
        b",",
        b" ",
        b"=",
        b"v0=",
        b"1700000000",
        b"abcdef0123",
    ];
    let mut headers = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let len = (next() % 200) as usize + 1;
        let mut h = Vec::with_capacity(len);
        while h.len() < len {
            if next() % 3 == 0 {
                h.extend_from_slice(pieces[(next() % 8) as usize]);
            } else {
                h.push(alphabet[(next() as usize) % alphabet.len()]);
            }
        }
        // A header value cannot start or end with whitespace on the wire.
        while h.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            h.remove(0);
        }
        while h.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            h.pop();
        }
        if h.is_empty() {
            h.push(b'x');
        }
        headers.push(h);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let headers = Arc::new(headers);
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let (client, headers, body, addr) = (client.clone(), headers.clone(), body.clone(), s.addr);
        tasks.push(tokio::spawn(async move {
            let mut statuses = std::collections::HashMap::<u16, usize>::new();
            for h in headers.iter().skip(worker).step_by(32) {
                let req = http::Request::post(format!("http://{addr}/hook"))
                    .header(
                        "x-webhook-signature",
                        http::HeaderValue::from_bytes(h).unwrap(),
                    )
                    .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
                    .unwrap();
                let status = client.request(req).await.unwrap().status().as_u16();
                *statuses.entry(status).or_default() += 1;
            }
            statuses
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    for task in tasks {
        let statuses = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("10,000 requests within 60 s")
            .unwrap();
        assert_eq!(
            statuses.keys().copied().collect::<Vec<_>>(),
            vec![401],
            "{statuses:?}"
        );
        total += statuses[&401];
    }
    assert_eq!(total, 10_000);
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);
    eprintln!("10,000 garbage headers rejected in {:?}", started.elapsed());
}

/// POSTs `body` to the test server with `signature` as `X-Webhook-Signature`.
async fn post_signature(addr: SocketAddr, signature: &str, body: &str) -> common::Answer {
    http_post(
        addr,
        "/hook",
        &[("x-webhook-signature", signature)],
        body.to_owned(),
    )
    .await
}

#[tokio::test]
async fn hundred_v1_values_and_huge_headers() {
    let s = server().await;
    let body = event_body("email.sent", "many-v1");
    let good = sign(SECRET, T0, body.as_bytes());
    let good_v1 = good.split_once(",v1=").unwrap().1;
    let bogus = format!(",v1={}", "ab".repeat(32));

    // 100 values of 64 hex chars make a header over 4 KiB: malformed, never parsed further.
    let header = format!("t={T0}{}", bogus.repeat(100));
    let answer = post_signature(s.addr, &header, &body).await;
    assert_eq!(answer.status, 401);
    assert!(
        answer.text().starts_with("malformed_signature"),
        "{}",
        answer.text()
    );
    // 60 of them fit in 4 KiB: only 16 are compared, a mismatch.
    let header = format!("t={T0}{}", bogus.repeat(60));
    assert!(header.len() <= 4096);
    let answer = post_signature(s.addr, &header, &body).await;
    assert_eq!(answer.status, 401);
    assert!(
        answer.text().starts_with("signature_mismatch"),
        "{}",
        answer.text()
    );
    // 100 short values (under 4 KiB): a mismatch too.
    let header = format!("t={T0}{}", ",v1=00".repeat(100));
    let answer = post_signature(s.addr, &header, &body).await;
    assert!(
        answer.text().starts_with("signature_mismatch"),
        "{}",
        answer.text()
    );

    // Only the first 16 values count: a valid one in 17th place is not looked at.
    let header = format!("t={T0}{},v1={good_v1}", bogus.repeat(16));
    let answer = post_signature(s.addr, &header, &body).await;
    assert!(answer.text().starts_with("signature_mismatch"));
    let header = format!("t={T0}{},v1={good_v1}", bogus.repeat(15));
    let answer = post_signature(s.addr, &header, &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    // An 8 KiB header: malformed, whatever it contains.
    let header = format!("{good},{}", "x".repeat(8 * 1024));
    let answer = post_signature(s.addr, &header, &body).await;
    assert_eq!(answer.status, 401);
    assert!(answer.text().starts_with("malformed_signature"));
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn replays_are_stopped() {
    let s = server().await;
    // A captured valid request: body and signature header, signed at T0.
    let body = event_body("email.delivered", "captured");
    let captured = sign(SECRET, T0, body.as_bytes());
    let headers = [("x-webhook-signature", captured.as_str())];
    let replay = || http_post(s.addr, "/hook", &headers, body.clone());

    assert_eq!(replay().await.status, 200);
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);

    // Replayed within the tolerance: verified, but deduplication stops the second processing.
    s.clock.store(T0 + 120, Ordering::SeqCst);
    let again = replay().await;
    assert_eq!(again.status, 200);
    assert_eq!(s.calls.load(Ordering::SeqCst), 1, "not processed twice");

    // Replayed after the tolerance: rejected before the body is even read.
    s.clock.store(T0 + 301, Ordering::SeqCst);
    let late = replay().await;
    assert_eq!(late.status, 401);
    assert!(late.text().starts_with("timestamp_out_of_tolerance"));
    // And from before it was signed (a clock far behind).
    s.clock.store(T0 - 301, Ordering::SeqCst);
    assert_eq!(replay().await.status, 401);
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);

    // Changing `t` to look fresh breaks the signature.
    s.clock.store(T0 + 3600, Ordering::SeqCst);
    let forged = captured.replacen(&format!("t={T0}"), &format!("t={}", T0 + 3600), 1);
    let answer = post_signature(s.addr, &forged, &body).await;
    assert!(answer.text().starts_with("signature_mismatch"));
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
    let _ = now();
}

/// A forged header with a fresh `t` and 64 zeros: it passes every check that needs no body.
fn forged_head(framing: &str) -> String {
    format!(
        "POST /hook HTTP/1.1\r\nhost: x\r\nx-webhook-signature: t={T0},v1={}\r\n{framing}\r\n",
        "0".repeat(64)
    )
}

/// Reads the status line and headers of the first answer on `stream`, within `limit`.
async fn read_head(stream: &mut TcpStream, limit: Duration) -> String {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(limit, async {
        while find_end(&data).is_none() {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => data.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "an answer came within {limit:?}");
    String::from_utf8_lossy(&data).into_owned()
}

#[tokio::test]
async fn the_bytes_buffered_at_once_are_bounded_across_requests() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // Each body may be 32 KiB; all bodies together 64 KiB.
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .body_limit(32 * 1024)
        .max_buffered_bytes(64 * 1024)
        .clock(|| T0)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/hook",
            post(move |_event: VerifiedEvent| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    "OK"
                }
            }),
        )
        .layer(layer);
    let addr = serve_axum(app).await;

    // Two forged uploads declaring 30,000 bytes each hold 60,000 of the 65,536: they send a
    // little and hang.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(forged_head("content-length: 30000\r\n").as_bytes())
            .await
            .unwrap();
        stream.write_all(&[b' '; 1000]).await.unwrap();
        holders.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A third declaring 30,000 is answered 503 with Retry-After at once, without a byte of its
    // body being sent.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(forged_head("content-length: 30000\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut third, Duration::from_secs(2)).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 5"),
        "{head}"
    );

    // A chunked upload (no declared length) is refused as it grows past the bound.
    let mut chunked = TcpStream::connect(addr).await.unwrap();
    chunked
        .write_all(forged_head("transfer-encoding: chunked\r\n").as_bytes())
        .await
        .unwrap();
    let chunk = format!("1000\r\n{}\r\n", " ".repeat(0x1000));
    for _ in 0..3 {
        if chunked.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let head = read_head(&mut chunked, Duration::from_secs(2)).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("overloaded") || head.to_ascii_lowercase().contains("retry-after"));

    // A genuine delivery in the meantime is told to come back (Metigan retries a 503)...
    let good = event_body("email.delivered", "msg-budget");
    let sig = sign(SECRET, T0, good.as_bytes());
    let answer = http_post(
        addr,
        "/hook",
        &[("x-webhook-signature", &sig)],
        good.clone(),
    )
    .await;
    assert!(
        answer.status == 200 || answer.status == 503,
        "{}",
        answer.status
    );
    if answer.status == 503 {
        assert_eq!(answer.headers["retry-after"], "5");
    }
    // ...and once the forged uploads are gone, their bytes are given back: accepted.
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = http_post(
            addr,
            "/hook",
            &[("x-webhook-signature", &sig)],
            good.clone(),
        )
        .await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 503, "{}", answer.text());
        assert!(Instant::now() < deadline, "the budget was given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(calls.load(Ordering::SeqCst) >= 1);
}
