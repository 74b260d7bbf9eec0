//! What the `metrics` feature costs per request, in one run: the layer with no recorder
//! installed (the `metrics` facade's no-op path) and with the Prometheus recorder the receiver
//! example installs (`metrics-exporter-prometheus`, buckets on both histograms), side by side
//! for each kind of request.
//!
//! A binary built with the feature cannot also measure the build without it: "no recorder" is
//! the facade's no-op path (a relaxed atomic load per recording, the clock read for the two
//! histograms). BENCHMARKS.md section 9 has the figures.
//!
//! Then the same comparison interleaved (blocks of requests alternating between the two, timed
//! in the thread's CPU time), whose figures hold up better on a shared machine than criterion's
//! consecutive windows of wall-clock time.
//!
//! ```sh
//! cargo bench --bench metrics
//! ```

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, BatchSize, Criterion};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use metigan_webhook::metrics::{
    SIGNATURE_SKEW_SECONDS, SKEW_BUCKETS, VERIFICATION_BUCKETS, VERIFICATION_DURATION_SECONDS,
};
use metigan_webhook::sign;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use tower::{Service, ServiceExt};

mod common;
#[path = "common/service.rs"]
mod service;
use common::{event_body, NOW, SECRET};
use service::{request, run, service, status_of, unique_event};

/// The receiver example's recorder (buckets on both histograms).
fn prometheus() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(VERIFICATION_DURATION_SECONDS.to_owned()),
            VERIFICATION_BUCKETS,
        )
        .expect("buckets")
        .set_buckets_for_metric(
            Matcher::Full(SIGNATURE_SKEW_SECONDS.to_owned()),
            SKEW_BUCKETS,
        )
        .expect("buckets")
        .build_recorder()
}

/// Each variant twice, side by side: with no recorder (the facade's no-op path), then with the
/// Prometheus recorder installed for the benchmark's thread (`metrics::with_local_recorder`,
/// the same recording path as a global recorder once the facade has found it), so that the
/// two figures of a pair are taken seconds apart on this shared machine. The recorder's
/// upkeep (draining histogram samples, every 5 s in the receiver) runs outside the timing,
/// every 4096 requests.
fn metrics_cost(c: &mut Criterion) {
    let svc = service(false);
    let deduplicating = service(true);
    let body = Bytes::from(event_body(1024));
    let good = HeaderValue::try_from(sign(SECRET, NOW, &body)).expect("header");
    let forged = HeaderValue::try_from(sign("whsec_not_the_secret", NOW, &body)).expect("header");
    assert_eq!(status_of(&svc, request(&body, Some(&good))), StatusCode::OK);
    let recorder = prometheus();
    let handle = recorder.handle();

    let mut group = c.benchmark_group("metrics_1KiB");
    let mut n = 0u64;
    let mut tick = || {
        n += 1;
        if n.is_multiple_of(4096) {
            handle.run_upkeep();
        }
        n
    };
    for (name, signature) in [
        ("accepted", Some(&good)),
        ("rejected_signature_mismatch", Some(&forged)),
        ("rejected_missing_signature", None),
    ] {
        let mut bench = |group: &mut criterion::BenchmarkGroup<'_, _>, label: &str| {
            group.bench_function(format!("{name}/{label}"), |b| {
                b.iter_batched(
                    || {
                        tick();
                        request(&body, signature)
                    },
                    |req| run(svc.clone().oneshot(req)),
                    BatchSize::SmallInput,
                )
            });
        };
        bench(&mut group, "no_recorder");
        metrics::with_local_recorder(&recorder, || bench(&mut group, "prometheus"));
    }
    // Each its own messageId, so each is claimed and completed in the store (full and evicting
    // after criterion's warm-up, as in `benches/layer.rs`).
    let mut bench = |group: &mut criterion::BenchmarkGroup<'_, _>, label: &str| {
        group.bench_function(format!("accepted_dedupe_in_memory/{label}"), |b| {
            b.iter_batched(
                || {
                    let (body, signature) = unique_event(tick());
                    request(&body, Some(&signature))
                },
                |req| run(deduplicating.clone().oneshot(req)),
                BatchSize::SmallInput,
            )
        });
    };
    bench(&mut group, "no_recorder");
    metrics::with_local_recorder(&recorder, || bench(&mut group, "prometheus"));
    group.finish();
    // The recorder did see the traffic.
    let text = handle.render();
    assert!(
        text.contains("metigan_webhook_requests_total{outcome=\"accepted\"}"),
        "{text}"
    );
}

/// Requests of one kind, built ahead (outside the timing).
type Make<'a> = &'a mut dyn FnMut() -> Request<Full<Bytes>>;

/// This thread's CPU time in nanoseconds: unlike the wall clock, it does not count the time
/// other processes of this shared machine hold the core.
fn thread_cpu_ns() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the clock id is a constant Linux knows.
    #[allow(unsafe_code)]
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    now.tv_sec as f64 * 1e9 + now.tv_nsec as f64
}

/// CPU nanoseconds per request of one block of `requests` through `svc`.
fn time_block<S, B>(svc: &S, requests: Vec<Request<Full<Bytes>>>) -> f64
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
{
    let n = requests.len() as f64;
    let started = thread_cpu_ns();
    for req in requests {
        let _ = black_box(run(svc.clone().oneshot(req)));
    }
    (thread_cpu_ns() - started) / n
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The same comparison as [`metrics_cost`], interleaved: `ROUNDS` rounds, each timing one block
/// of `BLOCK` requests with no recorder and one with the Prometheus recorder (in alternating
/// order), so that both sides of every pair see the same load. Prints the median per request of
/// each side, the median of the per-round differences and of the per-round ratios.
fn interleaved() {
    const ROUNDS: usize = 1001;
    const BLOCK: usize = 500;
    let svc = service(false);
    let deduplicating = service(true);
    let body = Bytes::from(event_body(1024));
    let good = HeaderValue::try_from(sign(SECRET, NOW, &body)).expect("header");
    let forged = HeaderValue::try_from(sign("whsec_not_the_secret", NOW, &body)).expect("header");
    let recorder = prometheus();
    let handle = recorder.handle();
    let mut n = 1u64 << 40;
    println!(
        "\ninterleaved: {ROUNDS} rounds of {BLOCK} requests per side, CPU ns per request (medians)"
    );
    println!(
        "{:<30} {:>12} {:>12} {:>10} {:>8}",
        "kind", "no_recorder", "prometheus", "diff", "ratio"
    );
    let kinds: [(&str, bool, Make<'_>); 4] = [
        ("accepted", false, &mut || request(&body, Some(&good))),
        ("rejected_signature_mismatch", false, &mut || {
            request(&body, Some(&forged))
        }),
        ("rejected_missing_signature", false, &mut || {
            request(&body, None)
        }),
        ("accepted_dedupe_in_memory", true, &mut || {
            n += 1;
            let (body, signature) = unique_event(n);
            request(&body, Some(&signature))
        }),
    ];
    for (name, dedupe, make) in kinds {
        let target = if dedupe { &deduplicating } else { &svc };
        let mut block = || (0..BLOCK).map(|_| make()).collect::<Vec<_>>();
        // Warm-up: fills the deduplication store past its 100,000 keys.
        for _ in 0..60 {
            time_block(target, block());
        }
        let (mut none, mut prom, mut diffs, mut ratios) = (vec![], vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            let (a, b) = (block(), block());
            let (without, with) = if round % 2 == 0 {
                let without = time_block(target, a);
                let with = metrics::with_local_recorder(&recorder, || time_block(target, b));
                (without, with)
            } else {
                let with = metrics::with_local_recorder(&recorder, || time_block(target, b));
                let without = time_block(target, a);
                (without, with)
            };
            handle.run_upkeep();
            none.push(without);
            prom.push(with);
            diffs.push(with - without);
            ratios.push(with / without);
        }
        println!(
            "{name:<30} {:>12.1} {:>12.1} {:>+10.1} {:>8.3}",
            median(&mut none),
            median(&mut prom),
            median(&mut diffs),
            median(&mut ratios)
        );
    }
}

criterion_group!(benches, metrics_cost);

fn main() {
    // `INTERLEAVED_ONLY=1 cargo bench --bench metrics` skips criterion's part.
    if std::env::var_os("INTERLEAVED_ONLY").is_none() {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    interleaved();
}
