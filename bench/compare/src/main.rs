//! Times the verifier, the envelope parse and a whole request through the layer, of two
//! versions of the crate in alternating rounds (see run.sh), with a bare HMAC-SHA256 of the same
//! bytes as the floor.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

#[path = "../../../benches/common/mod.rs"]
mod common;
use common::{event_body, NOW, SECRET};

const ROUNDS: usize = 101;
const ITERATIONS: u32 = 2000;

/// Polls a future that never waits (a full body, an always-ready inner service) to its end.
fn run<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    match std::pin::pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the layer waited on a ready body"),
    }
}

/// One version's layer around a trivial inner service, as a closure sending one request: the
/// signed 1 KiB event (`accepted`, with or without in-memory deduplication, every request its
/// own `messageId`), or the same without its signature (`rejected`).
macro_rules! layer_case {
    ($krate:ident, $body:expr, $header:expr, $dedupe:expr, $signed:expr) => {{
        use tower::{Layer, ServiceExt};
        let mut builder = $krate::MetiganSignatureLayer::builder()
            .secret(SECRET)
            .clock(|| NOW);
        if $dedupe {
            builder = builder.deduplicate($krate::idempotency::Dedupe::in_memory());
        }
        let layer = builder.build().expect("valid secret");
        let inner = tower::service_fn(|req: http::Request<$krate::VerifiedBody>| async move {
            let ok = req.extensions().get::<$krate::VerifiedEvent>().is_some();
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                Bytes::from_static(if ok { b"OK" } else { b"no event" }),
            )))
        });
        let service = layer.layer(inner);
        let body: Bytes = $body;
        let header = http::HeaderValue::from_str(&$header).expect("header");
        let mut n = 0u64;
        Box::new(move || {
            let mut request =
                http::Request::post("/webhooks").body(http_body_util::Full::new(body.clone()));
            if $dedupe {
                // A new messageId each time: the store is filled and evicting, its worst case.
                n += 1;
                let text = String::from_utf8_lossy(&body).replacen("msg_", &format!("m{n:x}_"), 1);
                let header = $krate::sign(SECRET, NOW, text.as_bytes());
                request = http::Request::post("/webhooks")
                    .header("x-webhook-signature", header)
                    .body(http_body_util::Full::new(Bytes::from(text)));
            } else if $signed {
                request = http::Request::post("/webhooks")
                    .header("x-webhook-signature", header.clone())
                    .body(http_body_util::Full::new(body.clone()));
            }
            let response = run(service.clone().oneshot(request.expect("request"))).expect("answer");
            black_box(response.status());
        }) as Box<dyn FnMut() + '_>
    }};
}

fn per_iteration(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..ITERATIONS {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(ITERATIONS)
}

fn main() {
    let size = std::env::args()
        .nth(1)
        .map_or(1024, |s| s.parse().expect("SIZE in bytes"));
    let body = Bytes::from(event_body(size));
    let header = after::sign(SECRET, NOW, &body);
    let h = header.as_bytes();
    assert_eq!(header, before::sign(SECRET, NOW, &body));
    let key = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    let prefix = format!("{NOW}.");
    let vb = before::Verifier::new([SECRET]).expect("secret");
    let va = after::Verifier::new([SECRET]).expect("secret");
    let hb = vb.check_header(Some(h), None, NOW).expect("valid");
    let ha = va.check_header(Some(h), None, NOW).expect("valid");
    assert!(vb.check_body(&hb, &body).is_ok() && va.check_body(&ha, &body).is_ok());

    type Case<'a> = (&'static str, Box<dyn FnMut() + 'a>);
    let mut cases: Vec<Case<'_>> = vec![
        (
            "hmac_sha256_bare",
            Box::new(|| {
                let mut mac = key.clone();
                mac.update(black_box(prefix.as_bytes()));
                mac.update(black_box(&body));
                black_box(mac.finalize());
            }),
        ),
        (
            "serde_json_ignored_any",
            Box::new(|| {
                black_box(
                    serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&body)).is_ok(),
                );
            }),
        ),
        (
            "check_header/before",
            Box::new(|| {
                black_box(vb.check_header(black_box(Some(h)), None, NOW).is_ok());
            }),
        ),
        (
            "check_header/after",
            Box::new(|| {
                black_box(va.check_header(black_box(Some(h)), None, NOW).is_ok());
            }),
        ),
        (
            "check_body/before",
            Box::new(|| {
                black_box(vb.check_body(black_box(&hb), black_box(&body)).is_ok());
            }),
        ),
        (
            "check_body/after",
            Box::new(|| {
                black_box(va.check_body(black_box(&ha), black_box(&body)).is_ok());
            }),
        ),
        (
            "envelope/before",
            Box::new(|| {
                black_box(before::Envelope::parse(black_box(&body).clone()).is_ok());
            }),
        ),
        (
            "envelope/after",
            Box::new(|| {
                black_box(after::Envelope::parse(black_box(&body).clone()).is_ok());
            }),
        ),
        (
            "verify_and_envelope/before",
            Box::new(|| {
                black_box(vb.verify(black_box(Some(h)), None, &body, NOW).is_ok());
                black_box(before::Envelope::parse(black_box(&body).clone()).is_ok());
            }),
        ),
        (
            "verify_and_envelope/after",
            Box::new(|| {
                black_box(va.verify(black_box(Some(h)), None, &body, NOW).is_ok());
                black_box(after::Envelope::parse(black_box(&body).clone()).is_ok());
            }),
        ),
        (
            "layer_accepted/before",
            layer_case!(before, body.clone(), header, false, true),
        ),
        (
            "layer_accepted/after",
            layer_case!(after, body.clone(), header, false, true),
        ),
        (
            "layer_accepted_dedupe/before",
            layer_case!(before, body.clone(), header, true, true),
        ),
        (
            "layer_accepted_dedupe/after",
            layer_case!(after, body.clone(), header, true, true),
        ),
        (
            "layer_rejected_header/before",
            layer_case!(before, body.clone(), header, false, false),
        ),
        (
            "layer_rejected_header/after",
            layer_case!(after, body.clone(), header, false, false),
        ),
    ];

    let mut samples = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for (_, case) in &mut cases {
        per_iteration(case);
    }
    for _ in 0..ROUNDS {
        for (i, (_, case)) in cases.iter_mut().enumerate() {
            samples[i].push(per_iteration(case));
        }
    }
    let median: Vec<f64> = samples
        .iter_mut()
        .map(|s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect();
    println!("{size} B body, {ROUNDS} alternating rounds of {ITERATIONS} iterations, medians:");
    println!("{:28} {:>10} {:>12}", "case", "ns", "x HMAC");
    for (i, (name, _)) in cases.iter().enumerate() {
        println!(
            "{name:28} {:>10.1} {:>12.2}",
            median[i],
            median[i] / median[0]
        );
    }
    for pair in (2..cases.len()).step_by(2) {
        let what = cases[pair].0.trim_end_matches("/before");
        println!(
            "{what}: after/before = {:.2}",
            median[pair + 1] / median[pair]
        );
    }
}
