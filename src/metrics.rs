//! Numbers an operator can alert on, recorded through the
//! [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! The crate records; the application installs the exporter it wants (Prometheus, StatsD,
//! OpenTelemetry...) with the `metrics` ecosystem's crates. Without an installed recorder every
//! recording is the facade's no-op. Names start with `metigan_webhook_`; labels take a few
//! fixed values, never a `messageId`, a key or an address.
//!
//! | name | kind | labels | what it tells |
//! |---|---|---|---|
//! | `metigan_webhook_requests_total` | counter | `outcome` | every request the layer answered or passed on: `accepted` (verified, handed to your service), a rejection's reason code (`signature_mismatch`, `missing_signature`, `malformed_signature`, `timestamp_out_of_tolerance`, `body_too_large`, `body_read_error`, `invalid_payload`, `overloaded`), `duplicate` (already processed, answered 200), `in_flight` (409), `store_unavailable` (503) |
//! | `metigan_webhook_verification_duration_seconds` | histogram | | time to check the body's HMAC and parse the envelope, for every request whose body was read |
//! | `metigan_webhook_signature_skew_seconds` | histogram | | the receiver's clock minus the signed timestamp `t`, for verified requests only (an attacker's `t` never reaches it); positive when `t` is in the past |
//! | `metigan_webhook_dedupe_store_errors_total` | counter | `operation`: `claim`, `complete`, `release` | deduplication store errors the layer saw |
//! | `metigan_webhook_inbox_events` | gauge | `state`: `queued`, `running`, `retrying`, `dead`, `done` | the inbox's depth per state |
//! | `metigan_webhook_inbox_oldest_queued_age_seconds` | gauge | | how long ago the oldest queued event was received (0 when none is queued) |
//! | `metigan_webhook_inbox_handler_outcomes_total` | counter | `outcome`: `succeeded`, `retried`, `dead_lettered`, `released` | how the worker's handler runs ended (`released`: stopped at a shutdown deadline and given back) |
//! | `metigan_webhook_inbox_replays_total` | counter | | dead letters queued again ([`Inbox::replay`](crate::inbox::Inbox::replay), [`Inbox::replay_dead`](crate::inbox::Inbox::replay_dead), the admin API) |
//!
//! What to alert on: a rise of `requests_total{outcome="signature_mismatch"}` after a deploy
//! is a rotated or mistyped secret; `signature_skew_seconds` drifting towards the tolerance
//! (300 s by default), then `timestamp_out_of_tolerance`, is a drifting clock; a growing
//! `inbox_events{state="dead"}` or `inbox_oldest_queued_age_seconds` is a broken handler.
//!
//! The inbox gauges are refreshed by the worker: when it starts, then every 5 s
//! ([`WorkerBuilder::metrics_interval`](crate::inbox::WorkerBuilder::metrics_interval)),
//! with one count and one listing of the store.
//!
//! # Example
//!
//! With `metrics-exporter-prometheus`, serving `/metrics` on its own port:
//!
//! ```no_run
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//! use metigan_webhook::metrics::{
//!     SKEW_BUCKETS, SIGNATURE_SKEW_SECONDS, VERIFICATION_BUCKETS, VERIFICATION_DURATION_SECONDS,
//! };
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! PrometheusBuilder::new()
//!     .with_http_listener(([127, 0, 0, 1], 9100))
//!     .set_buckets_for_metric(Matcher::Full(VERIFICATION_DURATION_SECONDS.into()), VERIFICATION_BUCKETS)?
//!     .set_buckets_for_metric(Matcher::Full(SIGNATURE_SKEW_SECONDS.into()), SKEW_BUCKETS)?
//!     .install()?;
//! metigan_webhook::metrics::describe();
//! # Ok(()) }
//! ```

/// Counter: requests by `outcome`.
pub const REQUESTS_TOTAL: &str = "metigan_webhook_requests_total";
/// Histogram: seconds to check the HMAC of a body and parse its envelope.
pub const VERIFICATION_DURATION_SECONDS: &str = "metigan_webhook_verification_duration_seconds";
/// Histogram: the receiver's clock minus the signed timestamp of verified requests, in seconds.
pub const SIGNATURE_SKEW_SECONDS: &str = "metigan_webhook_signature_skew_seconds";
/// Counter: deduplication store errors by `operation`.
pub const DEDUPE_STORE_ERRORS_TOTAL: &str = "metigan_webhook_dedupe_store_errors_total";
/// Gauge: inbox events by `state`.
pub const INBOX_EVENTS: &str = "metigan_webhook_inbox_events";
/// Gauge: age of the oldest queued inbox event, in seconds.
pub const INBOX_OLDEST_QUEUED_AGE_SECONDS: &str = "metigan_webhook_inbox_oldest_queued_age_seconds";
/// Counter: the inbox worker's handler runs by `outcome`.
pub const INBOX_HANDLER_OUTCOMES_TOTAL: &str = "metigan_webhook_inbox_handler_outcomes_total";
/// Counter: dead letters replayed.
pub const INBOX_REPLAYS_TOTAL: &str = "metigan_webhook_inbox_replays_total";

/// Bucket bounds for [`VERIFICATION_DURATION_SECONDS`]: 1 us to 10 ms (a 1 KiB event takes
/// about 2 us; a 1 MiB one about 1 ms).
pub const VERIFICATION_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2,
];

/// Bucket bounds for [`SIGNATURE_SKEW_SECONDS`]: -300 s to 300 s, the default tolerance,
/// finer near 0 (deliveries arrive within a second or two of signing).
pub const SKEW_BUCKETS: &[f64] = &[
    -300.0, -60.0, -10.0, -2.0, -1.0, 0.0, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Registers the units and help texts of every metric above with the installed recorder
/// (the `# HELP` lines of Prometheus). Optional; call it after installing the recorder.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        REQUESTS_TOTAL,
        "Metigan webhook requests by outcome: accepted, a rejection reason, duplicate, in_flight, store_unavailable"
    );
    describe_histogram!(
        VERIFICATION_DURATION_SECONDS,
        Unit::Seconds,
        "Time to check a Metigan webhook body's HMAC and parse its envelope"
    );
    describe_histogram!(
        SIGNATURE_SKEW_SECONDS,
        Unit::Seconds,
        "This clock minus the signed timestamp of verified Metigan webhooks"
    );
    describe_counter!(
        DEDUPE_STORE_ERRORS_TOTAL,
        "Deduplication store errors by operation"
    );
    describe_gauge!(INBOX_EVENTS, "Inbox events by state");
    describe_gauge!(
        INBOX_OLDEST_QUEUED_AGE_SECONDS,
        Unit::Seconds,
        "Age of the oldest queued inbox event"
    );
    describe_counter!(
        INBOX_HANDLER_OUTCOMES_TOTAL,
        "Inbox handler runs by outcome"
    );
    describe_counter!(INBOX_REPLAYS_TOTAL, "Inbox dead letters replayed");
}
