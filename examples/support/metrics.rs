//! `METRICS_ADDR`: the receiver's metrics (`metigan_webhook::metrics`) in Prometheus text
//! format at `GET /metrics` on their own port, through `metrics-exporter-prometheus`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use metigan_webhook::metrics::{
    SIGNATURE_SKEW_SECONDS, SKEW_BUCKETS, VERIFICATION_BUCKETS, VERIFICATION_DURATION_SECONDS,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// How often the recorder drains its histograms' pending samples.
const UPKEEP: Duration = Duration::from_secs(5);

/// With `METRICS_ADDR` set: installs the Prometheus recorder and binds its port; the router to
/// serve there. The error is the exit code and the line to print: 2 for a bad value, 1 for a
/// port that cannot be bound.
pub async fn from_env() -> Result<Option<(TcpListener, Router)>, (u8, String)> {
    let Some(addr) = std::env::var("METRICS_ADDR").ok().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let addr: SocketAddr = addr.parse().map_err(|_| {
        let message = format!(
            "METRICS_ADDR must be an address and port, such as 127.0.0.1:9100, got {addr:?}"
        );
        (2, message)
    })?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| (1, format!("METRICS_ADDR: cannot listen on {addr}: {e}")))?;
    let handle = install().map_err(|e| (1, format!("METRICS_ADDR: {e}")))?;
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let text = handle.render();
            async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    text,
                )
            }
        }),
    );
    Ok(Some((listener, router)))
}

/// The recorder, with buckets for the two histograms, as the global one.
fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(VERIFICATION_DURATION_SECONDS.to_owned()),
            VERIFICATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(SIGNATURE_SKEW_SECONDS.to_owned()),
            SKEW_BUCKETS,
        )?
        .install_recorder()?;
    metigan_webhook::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
