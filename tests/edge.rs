//! The receiver binary at the edge of the internet, on 127.0.0.1: a flood of forged slow
//! uploads, silent and half-sent connections, and SIGTERM with slow clients attached. Each test
//! is bounded in connections (a few hundred) and time (seconds).

mod common;

#[path = "common/receiver.rs"]
mod receiver;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use common::{event_body, now, post_signed};
use receiver::{Receiver, SECRET};

const PATH: &str = "/webhooks/metigan";
/// Slack for a busy 2-core machine on top of every deadline.
const MARGIN: Duration = Duration::from_secs(2);
/// The layer's default body limit, which every forged upload declares.
const BODY_LEN: usize = 1024 * 1024;

/// A request head with a well-formed signature header any attacker can write: a fresh `t` and
/// 64 hex zeros.
fn forged_head(len: usize) -> String {
    format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\nx-webhook-signature: t={},v1={}\r\n\
         content-type: application/json\r\ncontent-length: {len}\r\n\r\n",
        now(),
        "0".repeat(64)
    )
}

/// One shared megabyte, so 300 clients do not hold 300 copies.
fn payload() -> &'static [u8] {
    static PAYLOAD: OnceLock<Vec<u8>> = OnceLock::new();
    PAYLOAD.get_or_init(|| vec![b'x'; BODY_LEN])
}

/// Reads until the server closes the connection (EOF or reset), at most `limit`; returns what
/// was read and whether it was closed.
async fn until_closed(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> (String, bool) {
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&read).into_owned(), closed)
}

/// What one flooding client saw.
#[derive(Debug)]
struct Flooded {
    /// The answer's status line, if one arrived before the close.
    status: Option<String>,
    /// From the request head sent to the connection closed by the server.
    closed_after: Option<Duration>,
}

/// Sends a forged head declaring 1 MiB, all of the body but its last byte, then holds the
/// connection open until the server closes it.
async fn slow_forged_upload(addr: SocketAddr, limit: Duration) -> Flooded {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return Flooded {
            status: None,
            closed_after: None,
        };
    };
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let sent = async {
        writer.write_all(forged_head(BODY_LEN).as_bytes()).await?;
        writer.write_all(&payload()[..BODY_LEN - 1]).await
    };
    // A refused upload is closed while it is still being written: that is fine.
    let _ = sent.await;
    let (answer, closed) = until_closed(&mut reader, limit).await;
    drop(writer);
    Flooded {
        status: answer.lines().next().map(str::to_owned),
        closed_after: closed.then(|| started.elapsed()),
    }
}

/// Opens a connection that sends `partial` (maybe nothing) and then holds; returns how long the
/// server took to close it.
async fn held_open(addr: SocketAddr, partial: &'static [u8], limit: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let started = Instant::now();
    if !partial.is_empty() {
        stream.write_all(partial).await.ok()?;
    }
    let (_, closed) = until_closed(&mut stream, limit).await;
    closed.then(|| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_slow_uploads_stays_bounded_and_real_deliveries_get_through() {
    const FLOOD: usize = 300;
    const HELD: usize = 20;
    const MAX_BUFFERED: usize = 16 * 1024 * 1024;
    let timeout = Duration::from_secs(3);
    let mut receiver = Receiver::start(&[
        ("MAX_BUFFERED_BYTES", &MAX_BUFFERED.to_string()),
        ("HEADER_READ_TIMEOUT_SECS", "3"),
        ("BODY_READ_TIMEOUT_SECS", "3"),
        ("REQUEST_TIMEOUT_SECS", "6"),
    ])
    .await;
    let addr = receiver.addr;
    let at_start = receiver.peak_rss_kib();

    let limit = timeout + MARGIN * 3;
    let mut flood = JoinSet::new();
    for _ in 0..FLOOD {
        flood.spawn(slow_forged_upload(addr, limit));
    }
    let mut held = JoinSet::new();
    for i in 0..HELD {
        let partial: &'static [u8] = if i % 2 == 0 {
            b""
        } else {
            b"POST /webhooks/metigan HTTP/1.1\r\nhost: x\r\nx-webhook-sig"
        };
        held.spawn(held_open(addr, partial, limit));
    }

    // While the flood holds the receiver: a real delivery is answered within 3 s, 200 or 503
    // with Retry-After (Metigan retries that).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let body = event_body("email.delivered", "during-the-flood");
    let started = Instant::now();
    let during = tokio::time::timeout(
        Duration::from_secs(3),
        post_signed(addr, PATH, SECRET, &body),
    )
    .await
    .expect("a delivery during the flood is answered within 3 s");
    println!(
        "delivery during the flood: {} in {:?} ({})",
        during.status,
        started.elapsed(),
        during.text().trim_end()
    );
    match during.status.as_u16() {
        200 => assert_eq!(
            receiver.next_line().await,
            "Email delivered to jane@example.com"
        ),
        503 => assert!(during.headers.contains_key("retry-after"), "{during:?}"),
        other => panic!("during the flood: {other} {}", during.text()),
    }

    // Every flooding, silent and half-sent connection is closed by the timeouts.
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    let mut slowest = Duration::ZERO;
    while let Some(flooded) = flood.join_next().await {
        let flooded = flooded.unwrap();
        let closed = flooded
            .closed_after
            .unwrap_or_else(|| panic!("a flooding connection still open: {flooded:?}"));
        slowest = slowest.max(closed);
        *statuses
            .entry(flooded.status.unwrap_or_else(|| "(reset)".into()))
            .or_default() += 1;
    }
    println!("flood answers: {statuses:?}; the last closed {slowest:?} after its head");
    assert!(slowest <= timeout + MARGIN, "{slowest:?}");
    let mut slowest_held = Duration::ZERO;
    while let Some(closed) = held.join_next().await {
        let closed = closed
            .unwrap()
            .expect("a silent or half-sent connection was closed");
        slowest_held = slowest_held.max(closed);
    }
    println!("silent and half-sent connections: the last closed after {slowest_held:?}");
    assert!(slowest_held <= timeout + MARGIN, "{slowest_held:?}");

    let peak = receiver.peak_rss_kib();
    println!(
        "receiver peak RSS (VmHWM): {:.1} MiB at start, {:.1} MiB after {FLOOD} forged 1 MiB \
         uploads (bound: {} MiB buffered + 40 MB)",
        at_start as f64 / 1024.0,
        peak as f64 / 1024.0,
        MAX_BUFFERED / (1024 * 1024)
    );

    // After the flood: delivered and printed.
    let body = event_body("email.opened", "after-the-flood");
    let after = post_signed(addr, PATH, SECRET, &body).await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(
        receiver.next_line().await,
        "Email opened by jane@example.com"
    );
    receiver.stop().await;

    let bound_kib = (MAX_BUFFERED + 40 * 1000 * 1000) / 1024;
    assert!(
        peak <= bound_kib as u64,
        "peak RSS {peak} KiB over the buffer bound + 40 MB ({bound_kib} KiB)"
    );

    // The same flood against a receiver whose bound is out of reach (1 TiB): what the bound
    // saves, measured in the same run, and proof that this flood really floods.
    let unbounded = Receiver::start(&[
        ("MAX_BUFFERED_BYTES", "1099511627776"),
        ("HEADER_READ_TIMEOUT_SECS", "3"),
        ("BODY_READ_TIMEOUT_SECS", "3"),
        ("REQUEST_TIMEOUT_SECS", "6"),
    ])
    .await;
    let mut flood = JoinSet::new();
    for _ in 0..FLOOD {
        flood.spawn(slow_forged_upload(unbounded.addr, limit));
    }
    while flood.join_next().await.is_some() {}
    let unbounded_peak = unbounded.peak_rss_kib();
    unbounded.stop().await;
    println!(
        "the same flood without the bound: peak RSS {:.1} MiB (with it: {:.1} MiB)",
        unbounded_peak as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    assert!(
        unbounded_peak > bound_kib as u64,
        "without the bound the flood should cost more than the bound + 40 MB: {unbounded_peak} KiB"
    );
}

#[tokio::test]
async fn silent_and_half_sent_connections_are_closed_after_the_header_read_timeout() {
    let receiver = Receiver::start(&[("HEADER_READ_TIMEOUT_SECS", "0.5")]).await;
    let addr = receiver.addr;
    let limit = Duration::from_secs(10);
    let timeout = Duration::from_millis(500);
    for (what, partial) in [
        ("silent", &b""[..]),
        (
            "half a head",
            &b"POST /webhooks/metigan HTTP/1.1\r\nhost: x\r\ncontent-le"[..],
        ),
        ("half the HTTP/2 preface", &b"PRI * HTTP/2.0\r\n"[..]),
    ] {
        let closed = held_open(addr, partial, limit)
            .await
            .unwrap_or_else(|| panic!("{what}: still open after {limit:?}"));
        println!("{what}: closed after {closed:?}");
        assert!(
            closed >= timeout - Duration::from_millis(50) && closed <= timeout + MARGIN,
            "{what}: {closed:?}"
        );
    }

    // A keep-alive connection: answered, then closed once idle for the timeout.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {PATH} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = until_closed(&mut stream, limit).await;
    assert!(closed, "idle keep-alive connection closed");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let idle = started.elapsed();
    println!("idle keep-alive: closed after {idle:?}");
    assert!(idle <= timeout + MARGIN, "{idle:?}");
    receiver.stop().await;
}

#[tokio::test]
async fn sigterm_with_slow_uploads_attached_exits_within_the_shutdown_timeout() {
    const UPLOADS: usize = 20;
    // Only the shutdown deadline can end these uploads: every other timeout is longer.
    let mut receiver = Receiver::start(&[
        ("SHUTDOWN_TIMEOUT_SECS", "1"),
        ("HEADER_READ_TIMEOUT_SECS", "60"),
        ("BODY_READ_TIMEOUT_SECS", "60"),
        ("REQUEST_TIMEOUT_SECS", "60"),
    ])
    .await;
    let addr = receiver.addr;
    let mut uploads = JoinSet::new();
    for _ in 0..UPLOADS {
        uploads.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(forged_head(1000).as_bytes())
                .await
                .unwrap();
            // One byte a second, until the server closes the connection.
            loop {
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let body = event_body("email.delivered", "before-sigterm");
    let answer = post_signed(addr, PATH, SECRET, &body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        receiver.next_line().await,
        "Email delivered to jane@example.com"
    );

    let started = Instant::now();
    let (stdout, _) = receiver.stop().await;
    let took = started.elapsed();
    println!("SIGTERM with {UPLOADS} slow uploads attached: exited after {took:?}");
    assert!(stdout.is_empty(), "{stdout:?}");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_secs(1) + MARGIN,
        "{took:?}"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while uploads.join_next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "every upload saw its connection closed");
}
