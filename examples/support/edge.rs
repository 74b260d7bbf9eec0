//! The edge settings the examples read from the environment, with their defaults (the table is
//! in `examples/receiver.rs` and the README). Seconds may be fractional (`0.5`); an empty value
//! is the default; anything else that is not a positive number is an error naming the variable.
//! `var`, `seconds` and `count` read the receiver's other variables the same way.

use std::time::Duration;

use metigan_webhook::server::Server;
use metigan_webhook::{DEFAULT_BODY_LIMIT, DEFAULT_MAX_BUFFERED_BYTES};

/// `HEADER_READ_TIMEOUT_SECS` (10), `BODY_READ_TIMEOUT_SECS` (10), `REQUEST_TIMEOUT_SECS` (25),
/// `MAX_CONNECTIONS` (1024) and `SHUTDOWN_TIMEOUT_SECS` (10).
pub fn server() -> Result<Server, String> {
    Ok(Server::new()
        .header_read_timeout(seconds("HEADER_READ_TIMEOUT_SECS", 10)?)
        .body_read_timeout(seconds("BODY_READ_TIMEOUT_SECS", 10)?)
        .request_timeout(seconds("REQUEST_TIMEOUT_SECS", 25)?)
        .max_connections(count("MAX_CONNECTIONS", 1024, 1)?)
        .shutdown_timeout(shutdown_timeout()?))
}

/// `SHUTDOWN_TIMEOUT_SECS` (10): after SIGTERM / Ctrl-C, the time the requests in flight (and
/// the receiver's inbox worker) have to finish.
pub fn shutdown_timeout() -> Result<Duration, String> {
    seconds("SHUTDOWN_TIMEOUT_SECS", 10)
}

/// `MAX_BUFFERED_BYTES` (64 MiB), for the layer's `max_buffered_bytes`: at least the 1 MiB
/// body limit, or the largest genuine deliveries would be refused forever.
pub fn max_buffered_bytes() -> Result<usize, String> {
    count(
        "MAX_BUFFERED_BYTES",
        DEFAULT_MAX_BUFFERED_BYTES,
        DEFAULT_BODY_LIMIT,
    )
}

/// A variable that is set to something.
pub fn var(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    }
}

/// A duration in seconds, more than zero.
pub fn seconds(name: &str, default: u64) -> Result<Duration, String> {
    let Some(value) = var(name)? else {
        return Ok(Duration::from_secs(default));
    };
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|secs| *secs > 0.0)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| {
            format!(
                "{name} must be a positive number of seconds (such as 10 or 0.5), got {value:?}"
            )
        })
}

/// A whole number, at least `min`.
pub fn count(name: &str, default: usize, min: usize) -> Result<usize, String> {
    let Some(value) = var(name)? else {
        return Ok(default);
    };
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= min)
        .ok_or_else(|| format!("{name} must be a whole number of at least {min}, got {value:?}"))
}
