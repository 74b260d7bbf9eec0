//! The pure verifier against its floor, a bare HMAC-SHA256 of the same bytes, and against a peer
//! (the Standard Webhooks verifier); the envelope parse of a realistic 1 KiB event.
//!
//! ```sh
//! cargo bench --bench verify
//! ```
//!
//! Every group holds its floor, so ratios come from one run on one machine state.

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, KeyInit, Mac};
use metigan_webhook::{sign, Envelope, VerifiedEvent, Verifier};
use sha2::Sha256;

mod common;
use common::{event_body, label, NOW, SECRET};

const SIZES: [usize; 4] = [256, 1024, 16 * 1024, 1024 * 1024];

/// The floor: HMAC-SHA256 of `t.body` with the key state prepared once (cloned per message, as
/// any verifier must), fed without a concatenated copy. Nothing else: no parsing, no compare.
fn bare_hmac(key: &Hmac<Sha256>, prefix: &[u8], body: &[u8]) -> [u8; 32] {
    let mut mac = key.clone();
    mac.update(prefix);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn verify_sizes(c: &mut Criterion) {
    let key = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    let verifier = Verifier::new([SECRET]).expect("valid secret");
    // The peer, keyed with the same bytes (Standard Webhooks secrets are base64 behind
    // `whsec_`; `from_bytes` takes raw key bytes).
    let peer = standardwebhooks::Webhook::from_bytes(SECRET.as_bytes().to_vec()).expect("key");
    let mut group = c.benchmark_group("verify");
    for size in SIZES {
        let body = event_body(size);
        let prefix = format!("{NOW}.");
        let header = sign(SECRET, NOW, &body);
        assert!(verifier
            .verify(Some(header.as_bytes()), None, &body, NOW)
            .is_ok());

        // The peer checks its timestamp against the real clock: sign with it.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64;
        let msg_id = "msg_2f9c81d07be34a6f9d1e";
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", msg_id.parse().expect("header"));
        headers.insert(
            "webhook-timestamp",
            now.to_string().parse().expect("header"),
        );
        let peer_sig = peer.sign(msg_id, now, &body).expect("utf-8 body");
        headers.insert("webhook-signature", peer_sig.parse().expect("header"));
        peer.verify(&body, &headers)
            .expect("peer verifies its own signature");

        group.throughput(Throughput::Bytes(size as u64));
        let size_label = label(size);
        group.bench_with_input(
            BenchmarkId::new("hmac_sha256_bare", &size_label),
            &body,
            |b, body| b.iter(|| bare_hmac(&key, black_box(prefix.as_bytes()), black_box(body))),
        );
        group.bench_with_input(
            BenchmarkId::new("metigan_verify", &size_label),
            &body,
            |b, body| {
                b.iter(|| {
                    verifier.verify(
                        black_box(Some(header.as_bytes())),
                        None,
                        black_box(body),
                        black_box(NOW),
                    )
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("standardwebhooks_verify", &size_label),
            &body,
            |b, body| b.iter(|| peer.verify(black_box(body), black_box(&headers))),
        );
    }
    group.finish();
}

/// DESIGN.md 6: verify + envelope of a 1 KiB event within 2x a bare HMAC of it.
fn event_1kib(c: &mut Criterion) {
    let key = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    let verifier = Verifier::new([SECRET]).expect("valid secret");
    let body = Bytes::from(event_body(1024));
    let prefix = format!("{NOW}.");
    let header = sign(SECRET, NOW, &body);
    let envelope = Envelope::parse(body.clone()).expect("valid event");
    assert_eq!(envelope.event_type().as_str(), "email.clicked");

    let mut group = c.benchmark_group("event_1KiB");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("hmac_sha256_bare", |b| {
        b.iter(|| bare_hmac(&key, black_box(prefix.as_bytes()), black_box(&body)))
    });
    // What the design choices buy, against the floor: the key state prepared per message
    // instead of once, a concatenated copy of `t.body` instead of incremental hashing, and a
    // DOM of the whole body instead of the envelope with `data` kept raw.
    group.bench_function("hmac_sha256_key_per_message", |b| {
        b.iter(|| {
            let key = Hmac::<Sha256>::new_from_slice(black_box(SECRET.as_bytes())).expect("key");
            bare_hmac(&key, black_box(prefix.as_bytes()), black_box(&body))
        })
    });
    group.bench_function("hmac_sha256_concatenated_copy", |b| {
        b.iter(|| {
            let mut message = Vec::with_capacity(prefix.len() + body.len());
            message.extend_from_slice(black_box(prefix.as_bytes()));
            message.extend_from_slice(black_box(&body));
            bare_hmac(&key, b"", &message)
        })
    });
    group.bench_function("envelope_parse", |b| {
        b.iter(|| Envelope::parse(black_box(&body).clone()))
    });
    group.bench_function("serde_json_value_dom", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)))
    });
    // A handler's first accessor call (`recipient()`, as the receiver's line needs): one pass
    // over `data` picking the members the accessors read, against the same lookup in a
    // `serde_json::Value` of `data` (what the accessors did before). Both build the event.
    group.bench_function("recipient_first_use", |b| {
        b.iter(|| {
            let event = VerifiedEvent::new(black_box(&envelope).clone(), NOW, None, 0);
            event.recipient().map(str::len)
        })
    });
    group.bench_function("recipient_via_data_dom", |b| {
        b.iter(|| {
            let event = VerifiedEvent::new(black_box(&envelope).clone(), NOW, None, 0);
            event
                .data()
                .get("recipient")
                .and_then(|v| v.as_str())
                .map(str::len)
        })
    });
    group.bench_function("verify_and_envelope", |b| {
        b.iter(|| {
            let verified = verifier.verify(
                black_box(Some(header.as_bytes())),
                None,
                black_box(&body),
                black_box(NOW),
            );
            (verified, Envelope::parse(black_box(&body).clone()))
        })
    });
    group.finish();
}

criterion_group!(benches, verify_sizes, event_1kib);
criterion_main!(benches);
