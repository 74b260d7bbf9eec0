//! The whole layer in process: `tower::ServiceExt::oneshot` on a trivial inner service, for an
//! accepted 1 KiB event and for rejections; and the cost of a header rejection against the
//! declared body size (1 KiB and 1 MiB), which must not grow since the body is never read.
//!
//! ```sh
//! cargo bench --bench layer
//! ```

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderValue, StatusCode};
use metigan_webhook::sign;
use sha2::Sha256;
use tower::ServiceExt;

mod common;
#[path = "common/service.rs"]
mod service;
use common::{event_body, label, NOW, SECRET};
use service::{request, run, service, status_of, unique_event};

fn layer_1kib(c: &mut Criterion) {
    let svc = service(false);
    let deduplicating = service(true);
    let key = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    let body = Bytes::from(event_body(1024));
    let good = HeaderValue::try_from(sign(SECRET, NOW, &body)).expect("header");
    let forged = HeaderValue::try_from(sign("whsec_not_the_secret", NOW, &body)).expect("header");
    assert_eq!(status_of(&svc, request(&body, Some(&good))), StatusCode::OK);
    assert_eq!(
        status_of(&svc, request(&body, None)),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_of(&svc, request(&body, Some(&forged))),
        StatusCode::UNAUTHORIZED
    );

    let mut group = c.benchmark_group("layer_1KiB");
    let prefix = format!("{NOW}.");
    group.bench_function("hmac_sha256_bare", |b| {
        b.iter(|| {
            let mut mac = key.clone();
            mac.update(black_box(prefix.as_bytes()));
            mac.update(black_box(&body));
            mac.finalize().into_bytes()
        })
    });
    // The request is built outside the timing (hyper builds it in any server, with or without
    // the layer); the layer, the inner call and dropping the response are timed.
    // Every request its own messageId, so each is claimed and completed in the store (which
    // fills up to its 100,000 keys and then evicts: the steady state of a busy receiver).
    let (body_0, signature_0) = unique_event(0);
    assert_eq!(
        status_of(&deduplicating, request(&body_0, Some(&signature_0))),
        StatusCode::OK
    );
    let mut n = 0;
    group.bench_function("accepted_dedupe_in_memory", |b| {
        b.iter_batched(
            || {
                n += 1;
                let (body, signature) = unique_event(n);
                request(&body, Some(&signature))
            },
            |req| run(deduplicating.clone().oneshot(req)),
            BatchSize::SmallInput,
        )
    });
    for (name, signature) in [
        ("accepted", Some(&good)),
        ("rejected_missing_signature", None),
        ("rejected_signature_mismatch", Some(&forged)),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || request(&body, signature),
                |req| run(svc.clone().oneshot(req)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// DESIGN.md 6: a request rejected on its header costs the same whatever its declared size.
fn rejection_by_declared_size(c: &mut Criterion) {
    let svc = service(false);
    let stale = HeaderValue::from_static(
        "t=1600000000,v1=0000000000000000000000000000000000000000000000000000000000000000",
    );
    let malformed = HeaderValue::from_static(
        "t=17e8,v1=0000000000000000000000000000000000000000000000000000000000000000",
    );
    let mut group = c.benchmark_group("rejection_by_declared_size");
    for size in [1024, 1024 * 1024] {
        // A real body of that size sits behind the request: reading or hashing it would show.
        let body = Bytes::from(event_body(size));
        for (name, signature) in [
            ("missing_signature", None),
            ("timestamp_out_of_tolerance", Some(&stale)),
            ("malformed_signature", Some(&malformed)),
        ] {
            assert_eq!(
                status_of(&svc, request(&body, signature)),
                StatusCode::UNAUTHORIZED
            );
            group.bench_with_input(BenchmarkId::new(name, label(size)), &body, |b, body| {
                b.iter_batched(
                    || request(body, signature),
                    |req| run(svc.clone().oneshot(req)),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

/// The in-memory store alone, as the layer drives it for each new event: make the key, a
/// token, claim, complete; the store full (100,000 keys) and evicting, its steady state under
/// load.
fn memory_store(c: &mut Criterion) {
    use metigan_webhook::idempotency::{new_token, IdempotencyStore, MemoryStore};
    use std::time::Duration;
    let store = MemoryStore::default();
    let lease = Duration::from_secs(60);
    let ttl = Duration::from_secs(24 * 60 * 60);
    let mut n = 0u64;
    let mut next = move || {
        n += 1;
        let key = format!("email.clicked:msg_{n:020}");
        let token = new_token();
        let claimed = store.claim_immediately(&key, &token, lease);
        let completed = store.complete_immediately(&key, &token, ttl);
        (claimed, completed)
    };
    for _ in 0..200_000 {
        next();
    }
    c.bench_function("memory_store/claim_and_complete_full", |b| {
        b.iter(|| black_box(next()))
    });
}

criterion_group!(
    benches,
    layer_1kib,
    rejection_by_declared_size,
    memory_store
);
criterion_main!(benches);
