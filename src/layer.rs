//! [`MetiganSignatureLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderName;
use tower_layer::Layer;
use zeroize::Zeroizing;

use crate::buffer::Budget;
use crate::config_error::ConfigError;
use crate::idempotency::Dedupe;
use crate::log::RejectionLog;
use crate::service::MetiganSignature;
use crate::signature::Verifier;

/// The default body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The default bound on body bytes buffered at once across all requests of one layer: 64 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 * 1024 * 1024;

/// The longest timestamp tolerance the builder accepts: one day.
pub const MAX_TOLERANCE: Duration = Duration::from_secs(24 * 60 * 60);

/// The `Retry-After` of a `503` answered because the buffer bound is reached, in seconds.
pub(crate) const OVERLOADED_RETRY_AFTER: u64 = 5;

/// The default signature header.
pub const SIGNATURE_HEADER: &str = "x-webhook-signature";
/// The timestamp header, used when the signature header has no `t`.
pub const TIMESTAMP_HEADER: &str = "x-webhook-timestamp";
/// The webhook id header, exposed on the event.
pub const WEBHOOK_ID_HEADER: &str = "x-webhook-id";

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Everything a service needs, shared by all clones behind one `Arc`.
pub(crate) struct Config {
    pub(crate) verifier: Verifier,
    pub(crate) body_limit: usize,
    pub(crate) signature_header: HeaderName,
    pub(crate) timestamp_header: HeaderName,
    pub(crate) webhook_id_header: HeaderName,
    pub(crate) clock: Option<Clock>,
    pub(crate) dedupe: Option<Dedupe>,
    /// Shared by every service this layer makes: the bound on bytes buffered at once.
    pub(crate) budget: Arc<Budget>,
    pub(crate) rejection_log: RejectionLog,
}

impl Config {
    pub(crate) fn now(&self) -> u64 {
        match &self.clock {
            Some(clock) => clock(),
            None => system_clock(),
        }
    }
}

/// Tower layer that verifies Metigan webhooks; see the [crate docs](crate) for the whole story.
///
/// Build it with [`MetiganSignatureLayer::new`] (one secret, defaults) or
/// [`MetiganSignatureLayer::builder`]. Cloning is cheap (the configuration is behind an `Arc`).
///
/// With the `actix` feature it is also actix-web middleware (`wrap` a route with it; see the
/// crate's `actix` module): one configuration for both.
#[derive(Clone)]
pub struct MetiganSignatureLayer {
    config: Arc<Config>,
}

impl fmt::Debug for MetiganSignatureLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetiganSignatureLayer")
            .field("verifier", &self.config.verifier)
            .field("body_limit", &self.config.body_limit)
            .field("budget", &self.config.budget)
            .field("signature_header", &self.config.signature_header)
            .field("dedupe", &self.config.dedupe)
            .finish_non_exhaustive()
    }
}

impl MetiganSignatureLayer {
    /// A layer verifying with one secret and the defaults: 300 s tolerance, 1 MiB body limit,
    /// `X-Webhook-Signature`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the secret is empty or has surrounding whitespace.
    ///
    /// # Example
    ///
    /// ```
    /// use metigan_webhook::MetiganSignatureLayer;
    ///
    /// let layer = MetiganSignatureLayer::new("whsec_example").unwrap();
    /// assert!(MetiganSignatureLayer::new("whsec_example\n").is_err());
    /// # drop(layer);
    /// ```
    pub fn new(secret: impl AsRef<str>) -> Result<Self, ConfigError> {
        Self::builder().secret(secret).build()
    }

    /// A builder for every option.
    pub fn builder() -> MetiganSignatureBuilder {
        MetiganSignatureBuilder::default()
    }

    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }
}

impl<S> Layer<S> for MetiganSignatureLayer {
    type Service = MetiganSignature<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetiganSignature::from_config(inner, self.config.clone())
    }
}

/// Builds a [`MetiganSignatureLayer`]; errors are reported once, by [`MetiganSignatureBuilder::build`].
///
/// ```
/// use std::time::Duration;
/// use metigan_webhook::MetiganSignatureLayer;
///
/// let layer = MetiganSignatureLayer::builder()
///     .secret("whsec_new")          // the current secret
///     .secret("whsec_old")          // still accepted during rotation
///     .tolerance(Duration::from_secs(120))
///     .body_limit(256 * 1024)
///     .build()
///     .unwrap();
/// # drop(layer);
/// ```
#[derive(Default)]
#[must_use]
pub struct MetiganSignatureBuilder {
    /// Zeroized when the builder is dropped; the layer keeps only the prepared HMAC key states
    /// (zeroized on drop too, by `sha2`'s `zeroize` feature).
    secrets: Vec<Zeroizing<String>>,
    error: Option<ConfigError>,
    tolerance: Option<Duration>,
    disable_timestamp_check: bool,
    body_limit: Option<usize>,
    max_buffered_bytes: Option<usize>,
    signature_header: Option<HeaderName>,
    clock: Option<Clock>,
    dedupe: Option<Dedupe>,
}

impl fmt::Debug for MetiganSignatureBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetiganSignatureBuilder")
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("tolerance", &self.tolerance)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

impl MetiganSignatureBuilder {
    /// Adds a secret. Call it several times to accept several (key rotation): a signature made
    /// with any of them is accepted, and [`VerifiedEvent::secret_index`](crate::VerifiedEvent::secret_index)
    /// tells which one matched.
    ///
    /// The secret is used verbatim, exactly as Metigan shows it (including any `whsec_` prefix).
    /// Secrets are checked by [`build`](Self::build).
    pub fn secret(mut self, secret: impl AsRef<str>) -> Self {
        self.secrets
            .push(Zeroizing::new(secret.as_ref().to_owned()));
        self
    }

    /// Adds several secrets at once.
    pub fn secrets<I, S>(self, secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        secrets
            .into_iter()
            .fold(self, MetiganSignatureBuilder::secret)
    }

    /// How far the signed timestamp may be from now, either way, inclusive (default 300 s, at
    /// most [`MAX_TOLERANCE`], one day: [`build`](Self::build) refuses more).
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = Some(tolerance);
        self
    }

    /// Accepts signatures of any age. This removes replay protection: only for replaying
    /// captured requests in tests or tools.
    pub fn danger_disable_timestamp_check(mut self) -> Self {
        self.disable_timestamp_check = true;
        self
    }

    /// The largest body accepted, in bytes (default 1 MiB). Larger bodies get 413, declared
    /// ones before a byte is read.
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = Some(limit);
        self
    }

    /// The most body bytes buffered at once across every request of this layer (default
    /// [`DEFAULT_MAX_BUFFERED_BYTES`], 64 MiB).
    ///
    /// Anyone can send a well-formed signature header with a fresh timestamp, and the body of
    /// such a request must be read before its signature can be refused. This bound caps what
    /// all those bodies may hold together, whatever their number: a request whose declared
    /// length, or whose streamed body, would pass it is answered `503 Service Unavailable`
    /// with `Retry-After` ([`Reason::Overloaded`](crate::Reason::Overloaded)) before more is
    /// read. Metigan retries a 503, so a genuine delivery caught in a flood is delivered later.
    /// A declared length is reserved whole when the request arrives; once a body is verified
    /// (or refused) its bytes no longer count.
    ///
    /// ```
    /// use metigan_webhook::MetiganSignatureLayer;
    ///
    /// let layer = MetiganSignatureLayer::builder()
    ///     .secret("whsec_example")
    ///     .max_buffered_bytes(16 * 1024 * 1024)
    ///     .build()
    ///     .unwrap();
    /// # drop(layer);
    /// ```
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = Some(bytes);
        self
    }

    /// Reads the signature from another header than `X-Webhook-Signature`.
    ///
    /// ```
    /// use http::HeaderName;
    /// use metigan_webhook::MetiganSignatureLayer;
    ///
    /// let layer = MetiganSignatureLayer::builder()
    ///     .secret("whsec_example")
    ///     .signature_header(HeaderName::from_static("x-metigan-signature"))
    ///     .build()
    ///     .unwrap();
    /// # drop(layer);
    /// ```
    pub fn signature_header(mut self, name: HeaderName) -> Self {
        self.signature_header = Some(name);
        self
    }

    /// Replaces the clock (unix seconds), for tests that replay captured requests.
    pub fn clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Deduplicates retried deliveries of verified events (see [`idempotency`](crate::idempotency)):
    /// `Dedupe::in_memory()` for one instance, `Dedupe::new(RedisStore::..)` for several.
    ///
    /// ```
    /// use metigan_webhook::{idempotency::Dedupe, MetiganSignatureLayer};
    ///
    /// let layer = MetiganSignatureLayer::builder()
    ///     .secret("whsec_example")
    ///     .deduplicate(Dedupe::in_memory())
    ///     .build()
    ///     .unwrap();
    /// # drop(layer);
    /// ```
    pub fn deduplicate(mut self, dedupe: Dedupe) -> Self {
        self.dedupe = Some(dedupe);
        self
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`]: no secret, an empty one, one with leading/trailing
    /// whitespace, or a tolerance over [`MAX_TOLERANCE`].
    pub fn build(self) -> Result<MetiganSignatureLayer, ConfigError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let mut verifier = Verifier::new(self.secrets.iter().map(|s| s.as_str()))?;
        if let Some(tolerance) = self.tolerance {
            if tolerance > MAX_TOLERANCE {
                return Err(ConfigError::ToleranceTooLarge {
                    secs: tolerance.as_secs(),
                });
            }
            verifier = verifier.with_tolerance(tolerance);
        }
        if self.disable_timestamp_check {
            verifier = verifier.danger_disable_timestamp_check();
        }
        Ok(MetiganSignatureLayer {
            config: Arc::new(Config {
                verifier,
                body_limit: self.body_limit.unwrap_or(DEFAULT_BODY_LIMIT),
                signature_header: self
                    .signature_header
                    .unwrap_or(HeaderName::from_static(SIGNATURE_HEADER)),
                timestamp_header: HeaderName::from_static(TIMESTAMP_HEADER),
                webhook_id_header: HeaderName::from_static(WEBHOOK_ID_HEADER),
                clock: self.clock,
                dedupe: self.dedupe,
                budget: Arc::new(Budget::new(
                    self.max_buffered_bytes
                        .unwrap_or(DEFAULT_MAX_BUFFERED_BYTES),
                )),
                rejection_log: RejectionLog::default(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_reports_the_first_error_without_the_secret() {
        let err = MetiganSignatureLayer::builder()
            .secret("good")
            .secret("bad\n")
            .build()
            .unwrap_err();
        assert_eq!(err, ConfigError::SecretWhitespace { index: 1 });
        assert!(!err.to_string().contains("bad"));
        assert_eq!(
            MetiganSignatureLayer::builder().build().unwrap_err(),
            ConfigError::NoSecret
        );
    }

    #[test]
    fn a_tolerance_over_a_day_is_refused_and_a_day_is_accepted() {
        let build = |tolerance| {
            MetiganSignatureLayer::builder()
                .secret("x")
                .tolerance(tolerance)
                .build()
        };
        assert!(build(MAX_TOLERANCE).is_ok());
        let err = build(MAX_TOLERANCE + Duration::from_secs(1)).unwrap_err();
        assert_eq!(err, ConfigError::ToleranceTooLarge { secs: 86_401 });
        assert!(err.to_string().contains("danger_disable_timestamp_check"));
        assert_eq!(
            build(Duration::MAX).unwrap_err(),
            ConfigError::ToleranceTooLarge { secs: u64::MAX }
        );
        // Turning the check off stays possible, but only by its own name.
        assert!(MetiganSignatureLayer::builder()
            .secret("x")
            .danger_disable_timestamp_check()
            .build()
            .is_ok());
    }

    #[test]
    fn debug_is_redacted() {
        let layer = MetiganSignatureLayer::builder()
            .secret("hunter2-secret")
            .build()
            .unwrap();
        let dbg = format!("{layer:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        let b = MetiganSignatureLayer::builder().secret("hunter2-secret");
        assert!(!format!("{b:?}").contains("hunter2"));
    }
}
