//! A test kit for your own webhook handlers (feature `testing`): realistic sample events of
//! every type, signed `http::Request`s built in one call, and a fixed clock.
//!
//! Everything here signs with [`TEST_SECRET`] at [`FIXED_TIME`] unless told otherwise, and
//! [`layer`] builds a [`MetiganSignatureLayer`] with that secret and a clock stopped at that
//! time, so the same request verifies today and in ten years. No network is involved: send the
//! request straight into your service with `tower::ServiceExt::oneshot`.
//!
//! Enable it for your tests only:
//!
//! ```toml
//! [dev-dependencies]
//! metigan-webhook = { version = "0.1", features = ["testing"] }
//! ```
//!
//! # Unit-testing an axum handler behind the layer
//!
//! ```
//! use axum::{http::StatusCode, routing::post, Extension, Router};
//! use metigan_webhook::testing::{self, SampleEvent, SignedRequest};
//! use metigan_webhook::{EventType, MetiganSignatureLayer, VerifiedEvent};
//! use tower::ServiceExt; // for `oneshot`
//!
//! // Your application, taking the layer as a parameter (in `main`: built from the real secret).
//! fn app(layer: MetiganSignatureLayer) -> Router {
//!     // The method is dispatched before the layer: a GET answers 405, not 401.
//!     Router::new().route("/webhooks/metigan", post(handle).route_layer(layer))
//! }
//!
//! async fn handle(Extension(event): Extension<VerifiedEvent>) -> (StatusCode, String) {
//!     match event.event_type() {
//!         EventType::EmailBounced if event.is_hard_bounce() => {
//!             (StatusCode::OK, format!("invalid: {}", event.recipient().unwrap_or("?")))
//!         }
//!         other => (StatusCode::OK, format!("ignored {other}")),
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A signed sample of any event type, in one call.
//! let response = app(testing::layer())
//!     .oneshot(testing::signed_request(EventType::EmailBounced))
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
//! assert_eq!(body, "invalid: jane@example.com");
//!
//! // Adjust the sample's data, then sign it.
//! let soft = SampleEvent::new(EventType::EmailBounced).with_field("bounceType", "soft");
//! let response = app(testing::layer())
//!     .oneshot(SignedRequest::from_event(&soft).build())
//!     .await
//!     .unwrap();
//! let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
//! assert_eq!(body, "ignored email.bounced");
//!
//! // A forged request never reaches the handler.
//! let forged = SignedRequest::from_event(&soft).with_secret("not_the_secret").build();
//! let response = app(testing::layer()).oneshot(forged).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! # }
//! ```
//!
//! Every request built here is an ordinary `http::Request<Full<Bytes>>`, which axum's
//! `Router`, the layer and any hyper or tower service accept; use
//! [`SignedRequest::build_with`] for another body type (`axum::body::Body`, ...).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request};
use http_body_util::Full;
use serde_json::{json, Map, Value};

use crate::event::EventType;
use crate::layer::{
    MetiganSignatureBuilder, MetiganSignatureLayer, SIGNATURE_HEADER, TIMESTAMP_HEADER,
    WEBHOOK_ID_HEADER,
};
use crate::signature::sign;

/// The secret the test kit signs with, and that [`layer`] accepts.
pub const TEST_SECRET: &str = "whsec_metigan_webhook_test_secret";

/// The time (unix seconds) the test kit signs at, and where [`fixed_clock`] is stopped:
/// 2023-11-14T22:13:20Z.
pub const FIXED_TIME: u64 = 1_700_000_000;

/// The path requests are sent to by default (the one used in Metigan's guide and the
/// examples).
pub const DEFAULT_PATH: &str = "/webhooks/metigan";

/// The `messageId` of the samples unless changed with [`SampleEvent::message_id`]. Like real
/// deliveries, every event of one email shares it (the default deduplication key includes the
/// event type, so they do not collide).
pub const SAMPLE_MESSAGE_ID: &str = "msg_2f8c1e9a7b3d4e60";

/// A clock stopped at [`FIXED_TIME`], for [`MetiganSignatureBuilder::clock`].
///
/// ```
/// let layer = metigan_webhook::MetiganSignatureLayer::builder()
///     .secret(metigan_webhook::testing::TEST_SECRET)
///     .clock(metigan_webhook::testing::fixed_clock())
///     .build()
///     .unwrap();
/// # drop(layer);
/// ```
pub fn fixed_clock() -> impl Fn() -> u64 + Send + Sync + Clone + 'static {
    || FIXED_TIME
}

/// A clock your test can move: starts at a given time and changes only when told to.
///
/// Clones share the same time, so keep one in the test and give [`as_fn`](Self::as_fn) to the
/// layer.
///
/// ```
/// use std::time::Duration;
/// use metigan_webhook::testing::{ManualClock, FIXED_TIME};
///
/// let clock = ManualClock::new(FIXED_TIME);
/// let now = clock.as_fn();
/// clock.advance(Duration::from_secs(301));
/// assert_eq!(now(), FIXED_TIME + 301);
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

/// The former name of [`ManualClock`] (it never was fixed: the test moves it).
#[deprecated(since = "0.1.0", note = "renamed ManualClock")]
pub type FixedClock = ManualClock;

impl Default for ManualClock {
    /// A clock at [`FIXED_TIME`].
    fn default() -> Self {
        ManualClock::new(FIXED_TIME)
    }
}

impl ManualClock {
    /// A clock showing `unix_seconds`.
    pub fn new(unix_seconds: u64) -> Self {
        ManualClock {
            now: Arc::new(AtomicU64::new(unix_seconds)),
        }
    }

    /// The time shown (unix seconds).
    pub fn now(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    /// Sets the time shown.
    pub fn set(&self, unix_seconds: u64) {
        self.now.store(unix_seconds, Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_secs(), Ordering::SeqCst);
    }

    /// The clock as a function, for [`MetiganSignatureBuilder::clock`]; it follows later `set` and `advance`.
    pub fn as_fn(&self) -> impl Fn() -> u64 + Send + Sync + Clone + 'static {
        let now = self.now.clone();
        move || now.load(Ordering::SeqCst)
    }
}

/// A layer builder accepting [`TEST_SECRET`], with the clock stopped at [`FIXED_TIME`]: add
/// your own options (deduplication, body limit, ...) and `build()`.
pub fn layer_builder() -> MetiganSignatureBuilder {
    MetiganSignatureLayer::builder()
        .secret(TEST_SECRET)
        .clock(fixed_clock())
}

/// The layer of [`layer_builder`] with the defaults: accepts every request of this module.
pub fn layer() -> MetiganSignatureLayer {
    layer_builder()
        .build()
        .expect("the test secret is a valid secret")
}

/// A signed `POST /webhooks/metigan` carrying the sample event of `event` (signed with
/// [`TEST_SECRET`] at [`FIXED_TIME`]). Unknown types get a generic sample.
pub fn signed_request(event: impl Into<EventType>) -> Request<Full<Bytes>> {
    SignedRequest::from_event(&SampleEvent::new(event)).build()
}

/// A signed `POST /webhooks/metigan` carrying `body` exactly (signed with [`TEST_SECRET`] at
/// [`FIXED_TIME`]).
pub fn signed_request_for_body(body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    SignedRequest::new(body).build()
}

/// One sample event of every known type, in the order of [`EventType::KNOWN`].
pub fn samples() -> Vec<SampleEvent> {
    EventType::KNOWN
        .iter()
        .cloned()
        .map(SampleEvent::new)
        .collect()
}

/// A realistic Metigan event: the envelope (`event`, `messageId`, `data`, `timestamp` in
/// milliseconds) with plausible `data` for its type, which you can adjust before signing.
///
/// ```
/// use metigan_webhook::testing::SampleEvent;
/// use metigan_webhook::EventType;
///
/// let click = SampleEvent::new(EventType::EmailClicked)
///     .with_message_id("msg_42")
///     .with_field("metadata.url", "https://example.com/pricing");
/// let body = click.to_body();
/// assert!(body.starts_with(br#"{"event":"email.clicked","messageId":"msg_42","data":{"#));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SampleEvent {
    event: EventType,
    message_id: Option<String>,
    data: Value,
    timestamp_ms: Option<u64>,
}

impl SampleEvent {
    /// The sample of `event`, with [`SAMPLE_MESSAGE_ID`] and an envelope timestamp of
    /// [`FIXED_TIME`] in milliseconds.
    pub fn new(event: impl Into<EventType>) -> Self {
        let event = event.into();
        let data = sample_data(&event);
        SampleEvent {
            event,
            message_id: Some(SAMPLE_MESSAGE_ID.to_owned()),
            data,
            timestamp_ms: Some(FIXED_TIME * 1000),
        }
    }

    /// Sets `messageId`.
    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Removes `messageId` (such events are not deduplicated by the default key).
    pub fn without_message_id(mut self) -> Self {
        self.message_id = None;
        self
    }

    /// Sets the envelope's `timestamp`, in **milliseconds**.
    pub fn with_timestamp_ms(mut self, ms: u64) -> Self {
        self.timestamp_ms = Some(ms);
        self
    }

    /// Replaces `data` whole.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// Sets one field of `data`; `path` is dotted (`"metadata.url"`), missing objects are
    /// created. A `&str` becomes a JSON string; pass a [`Value`] for anything else.
    pub fn with_field(mut self, path: &str, value: impl Into<Value>) -> Self {
        set_path(&mut self.data, path, value.into());
        self
    }

    /// The event type.
    pub fn event_type(&self) -> &EventType {
        &self.event
    }

    /// The `messageId`, if any.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// The `data` object.
    pub fn data(&self) -> &Value {
        &self.data
    }

    /// The envelope as a JSON value.
    pub fn to_json(&self) -> Value {
        let mut envelope = Map::new();
        envelope.insert("event".into(), Value::from(self.event.as_str()));
        if let Some(id) = &self.message_id {
            envelope.insert("messageId".into(), Value::from(id.as_str()));
        }
        envelope.insert("data".into(), self.data.clone());
        if let Some(ms) = self.timestamp_ms {
            envelope.insert("timestamp".into(), Value::from(ms));
        }
        Value::Object(envelope)
    }

    /// The body Metigan would send: compact JSON, envelope fields in Metigan's order
    /// (`event`, `messageId`, `data`, `timestamp`).
    pub fn to_body(&self) -> Bytes {
        // Written by hand so the envelope keeps Metigan's field order whatever map type
        // serde_json was built with.
        let mut body = String::with_capacity(256);
        body.push_str("{\"event\":");
        body.push_str(&Value::from(self.event.as_str()).to_string());
        if let Some(id) = &self.message_id {
            body.push_str(",\"messageId\":");
            body.push_str(&Value::from(id.as_str()).to_string());
        }
        body.push_str(",\"data\":");
        body.push_str(&self.data.to_string());
        if let Some(ms) = self.timestamp_ms {
            body.push_str(",\"timestamp\":");
            body.push_str(&ms.to_string());
        }
        body.push('}');
        Bytes::from(body)
    }
}

fn set_path(target: &mut Value, path: &str, value: Value) {
    let mut current = target;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(map) = current else {
            unreachable!("made an object just above")
        };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        current = map.entry(part.to_owned()).or_insert(Value::Null);
    }
}

const RECIPIENT: &str = "jane@example.com";
const SUBJECT: &str = "Welcome to Acme, Jane!";
const USER_ID: &str = "usr_7d41c2";
const CONTACT_ID: &str = "ct_9b2e5f";
const AUDIENCE_ID: &str = "aud_3c8a11";
const USER_AGENT: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko)";

fn email(status: &str, metadata: Value) -> Value {
    json!({
        "recipient": RECIPIENT,
        "subject": SUBJECT,
        "status": status,
        "userId": USER_ID,
        "from": "Acme <hello@acme.example>",
        "metadata": metadata,
    })
}

/// Plausible `data` of each type, with the fields the crate's accessors read
/// (`recipient`, `subject`, `status`, `userId`, `bounceType`, `metadata.bounceReason`,
/// `metadata.url`, `email`).
fn sample_data(event: &EventType) -> Value {
    match event {
        EventType::EmailSent => email("sent", json!({ "campaign": "onboarding" })),
        EventType::EmailDelivered => email(
            "delivered",
            json!({ "smtpResponse": "250 2.0.0 OK 1700000000 q7si1234567qkb.12 - gsmtp" }),
        ),
        EventType::EmailOpened => email(
            "opened",
            json!({ "userAgent": USER_AGENT, "ipAddress": "203.0.113.24" }),
        ),
        EventType::EmailClicked => email(
            "clicked",
            json!({
                "url": "https://acme.example/getting-started?utm_source=email",
                "userAgent": USER_AGENT,
                "ipAddress": "203.0.113.24",
            }),
        ),
        EventType::EmailBounced => {
            let mut data = email(
                "bounced",
                json!({
                    "bounceReason": "550 5.1.1 The email account that you tried to reach does not exist",
                }),
            );
            set_path(&mut data, "bounceType", Value::from("hard"));
            data
        }
        EventType::EmailComplained => email(
            "complained",
            json!({ "feedbackType": "abuse", "feedbackProvider": "Yahoo" }),
        ),
        EventType::EmailDeliveryDelayed => email(
            "delayed",
            json!({ "reason": "451 4.7.1 Greylisted, please try again later", "attempt": 2 }),
        ),
        EventType::EmailUnsubscribed => {
            email("unsubscribed", json!({ "source": "list-unsubscribe" }))
        }
        EventType::EmailFailed => email(
            "failed",
            json!({ "error": "Sender domain is not verified" }),
        ),
        EventType::ContactCreated => json!({
            "contactId": CONTACT_ID,
            "email": RECIPIENT,
            "firstName": "Jane",
            "lastName": "Doe",
            "audienceId": AUDIENCE_ID,
            "status": "subscribed",
        }),
        EventType::ContactUpdated => json!({
            "contactId": CONTACT_ID,
            "email": RECIPIENT,
            "firstName": "Janet",
            "lastName": "Doe",
            "audienceId": AUDIENCE_ID,
            "status": "subscribed",
            "changes": ["firstName"],
        }),
        EventType::ContactDeleted => json!({
            "contactId": CONTACT_ID,
            "email": RECIPIENT,
            "audienceId": AUDIENCE_ID,
        }),
        EventType::AudienceCreated => json!({
            "audienceId": AUDIENCE_ID,
            "name": "Newsletter subscribers",
            "contactCount": 0,
        }),
        EventType::AudienceUpdated => json!({
            "audienceId": AUDIENCE_ID,
            "name": "Newsletter subscribers (EU)",
            "contactCount": 1280,
        }),
        EventType::AudienceDeleted => json!({
            "audienceId": AUDIENCE_ID,
            "name": "Newsletter subscribers (EU)",
        }),
        // An event type newer than this crate: a minimal email-like payload.
        _ => json!({ "recipient": RECIPIENT, "status": event.as_str() }),
    }
}

/// A signed webhook request being built: the body, the secret and the time to sign with, and
/// deliberate faults (wrong secret, stale time, tampered body) to test rejections.
///
/// ```
/// use metigan_webhook::testing::{SignedRequest, FIXED_TIME};
///
/// let request = SignedRequest::new(r#"{"event":"email.sent","data":{}}"#)
///     .with_timestamp(FIXED_TIME - 600) // ten minutes old: outside the default window
///     .with_webhook_id("wh_123")
///     .build();
/// assert!(request.headers()["x-webhook-signature"].to_str().unwrap().starts_with("t=1699999400,v1="));
/// assert_eq!(request.headers()["x-webhook-id"], "wh_123");
/// ```
#[derive(Clone)]
pub struct SignedRequest {
    body: Bytes,
    secret: String,
    timestamp: u64,
    uri: String,
    webhook_id: Option<String>,
    timestamp_header: bool,
    signature: Signature,
    tamper: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Clone)]
enum Signature {
    Computed,
    Raw(String),
    Absent,
}

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the secret nor the body is printed.
        f.debug_struct("SignedRequest")
            .field("uri", &self.uri)
            .field("timestamp", &self.timestamp)
            .field("body_len", &self.body.len())
            .field("webhook_id", &self.webhook_id)
            .field("tamper", &self.tamper)
            .finish_non_exhaustive()
    }
}

impl SignedRequest {
    /// A request carrying `body` exactly, signed with [`TEST_SECRET`] at [`FIXED_TIME`], sent
    /// to [`DEFAULT_PATH`].
    pub fn new(body: impl Into<Bytes>) -> Self {
        SignedRequest {
            body: body.into(),
            secret: TEST_SECRET.to_owned(),
            timestamp: FIXED_TIME,
            uri: DEFAULT_PATH.to_owned(),
            webhook_id: None,
            timestamp_header: true,
            signature: Signature::Computed,
            tamper: false,
            headers: Vec::new(),
        }
    }

    /// A request carrying the body of `event` ([`SampleEvent::to_body`]).
    pub fn from_event(event: &SampleEvent) -> Self {
        SignedRequest::new(event.to_body())
    }

    /// Signs with `secret` instead of [`TEST_SECRET`] (for a wrong-secret test, or your own).
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = secret.into();
        self
    }

    /// Signs at `unix_seconds` instead of [`FIXED_TIME`].
    pub fn with_timestamp(mut self, unix_seconds: u64) -> Self {
        self.timestamp = unix_seconds;
        self
    }

    /// Sends to `uri` (a path like `/hooks`, or an absolute URL) instead of [`DEFAULT_PATH`].
    pub fn with_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = uri.into();
        self
    }

    /// Adds an `X-Webhook-Id` header (none by default).
    pub fn with_webhook_id(mut self, id: impl Into<String>) -> Self {
        self.webhook_id = Some(id.into());
        self
    }

    /// Leaves out the `X-Webhook-Timestamp` header (Metigan sends it; the signature header's
    /// `t` is what counts).
    pub fn without_timestamp_header(mut self) -> Self {
        self.timestamp_header = false;
        self
    }

    /// Sends this exact `X-Webhook-Signature` value instead of the computed one (to test
    /// malformed headers).
    pub fn with_raw_signature(mut self, header: impl Into<String>) -> Self {
        self.signature = Signature::Raw(header.into());
        self
    }

    /// Sends no `X-Webhook-Signature` header at all.
    pub fn without_signature(mut self) -> Self {
        self.signature = Signature::Absent;
        self
    }

    /// Changes one character of the body *after* signing, as an attacker or a re-serialising
    /// proxy would: the request must be refused with `signature_mismatch`.
    pub fn tampered(mut self) -> Self {
        self.tamper = true;
        self
    }

    /// Adds any other header.
    ///
    /// # Panics
    ///
    /// When `name` or `value` is not a valid header name or value (a bug in the test).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::try_from(name).expect("a valid header name");
        let value = HeaderValue::try_from(value).expect("a valid header value");
        self.headers.push((name, value));
        self
    }

    /// The `X-Webhook-Signature` value that will be sent (`None` with
    /// [`without_signature`](Self::without_signature)).
    pub fn signature_header(&self) -> Option<String> {
        match &self.signature {
            Signature::Computed => Some(sign(&self.secret, self.timestamp, &self.body)),
            Signature::Raw(raw) => Some(raw.clone()),
            Signature::Absent => None,
        }
    }

    /// The body that will be sent (changed by [`tampered`](Self::tampered)).
    pub fn body(&self) -> Bytes {
        if self.tamper {
            tamper(&self.body)
        } else {
            self.body.clone()
        }
    }

    /// Builds the request with a [`Full`] body.
    ///
    /// # Panics
    ///
    /// When the URI, a raw signature or the webhook id is not valid in an HTTP request (a
    /// control character such as CR or LF, for example: a bug in the test). Use
    /// [`try_build`](Self::try_build) for values that come from outside the test.
    pub fn build(self) -> Request<Full<Bytes>> {
        self.build_with()
    }

    /// Builds the request with any body type made from [`Bytes`] (`axum::body::Body`,
    /// `Full<Bytes>`, ...).
    ///
    /// # Panics
    ///
    /// As [`build`](Self::build).
    pub fn build_with<B: From<Bytes>>(self) -> Request<B> {
        self.try_build_with()
            .expect("a valid request (URI and headers)")
    }

    /// Builds the request with a [`Full`] body, or says why it cannot be built: a URI, raw
    /// signature or webhook id that is not valid in an HTTP request.
    ///
    /// ```
    /// use metigan_webhook::testing::SignedRequest;
    ///
    /// assert!(SignedRequest::new("{}").with_webhook_id("wh_1").try_build().is_ok());
    /// assert!(SignedRequest::new("{}").with_webhook_id("wh\r\nx: y").try_build().is_err());
    /// ```
    pub fn try_build(self) -> Result<Request<Full<Bytes>>, http::Error> {
        self.try_build_with()
    }

    /// [`try_build`](Self::try_build) with any body type made from [`Bytes`].
    pub fn try_build_with<B: From<Bytes>>(self) -> Result<Request<B>, http::Error> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.uri.as_str())
            .header(CONTENT_TYPE, "application/json");
        if let Some(signature) = self.signature_header() {
            builder = builder.header(SIGNATURE_HEADER, signature);
        }
        if self.timestamp_header {
            builder = builder.header(TIMESTAMP_HEADER, self.timestamp);
        }
        if let Some(id) = &self.webhook_id {
            builder = builder.header(WEBHOOK_ID_HEADER, id.as_str());
        }
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        builder.body(B::from(self.body()))
    }
}

/// Flips the case of the last ASCII letter of `body` (or appends a space when it has none):
/// one changed byte, so the HMAC no longer matches.
pub(crate) fn tamper(body: &[u8]) -> Bytes {
    let mut bytes = body.to_vec();
    match bytes.iter().rposition(u8::is_ascii_alphabetic) {
        Some(i) => bytes[i] ^= 0x20,
        None => bytes.push(b' '),
    }
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Envelope, Verifier};

    #[test]
    fn every_known_type_has_a_sample_that_verifies_and_parses() {
        let verifier = Verifier::new([TEST_SECRET]).unwrap();
        let all = samples();
        assert_eq!(all.len(), EventType::KNOWN.len());
        for sample in all {
            let request = SignedRequest::from_event(&sample);
            let header = request.signature_header().unwrap();
            let body = request.body();
            verifier
                .verify(Some(header.as_bytes()), None, &body, FIXED_TIME)
                .unwrap();
            let envelope = Envelope::parse(body).unwrap();
            assert_eq!(envelope.event_type(), sample.event_type());
            assert_eq!(envelope.message_id(), Some(SAMPLE_MESSAGE_ID));
            assert_eq!(envelope.timestamp_ms(), Some(FIXED_TIME * 1000));
            assert!(envelope.data_json().unwrap().starts_with('{'));
        }
    }

    #[test]
    fn tampered_requests_do_not_verify() {
        let verifier = Verifier::new([TEST_SECRET]).unwrap();
        let request = SignedRequest::from_event(&SampleEvent::new("email.opened")).tampered();
        let header = request.signature_header().unwrap();
        let body = request.body();
        assert_ne!(body, SampleEvent::new("email.opened").to_body());
        assert_eq!(
            verifier
                .verify(Some(header.as_bytes()), None, &body, FIXED_TIME)
                .unwrap_err()
                .reason(),
            crate::Reason::SignatureMismatch
        );
        assert_eq!(&tamper(b"{}")[..], b"{} ");
    }

    #[test]
    fn with_sets_nested_fields_and_debug_hides_the_secret() {
        let sample = SampleEvent::new(EventType::Other("x.y".into()))
            .with_field("metadata.url", "https://e.example")
            .with_field("count", 3);
        assert_eq!(sample.data()["metadata"]["url"], "https://e.example");
        assert_eq!(sample.data()["count"], 3);
        let request = SignedRequest::from_event(&sample).with_secret("hidden-value");
        assert!(!format!("{request:?}").contains("hidden-value"));
    }

    #[test]
    fn invalid_values_are_errors_with_try_build() {
        for request in [
            SignedRequest::new("{}").with_webhook_id("id\r"),
            SignedRequest::new("{}").with_raw_signature("t=1\n"),
            SignedRequest::new("{}").with_uri("/a b"),
        ] {
            assert!(request.clone().try_build().is_err(), "{request:?}");
            assert!(request.try_build_with::<Full<Bytes>>().is_err());
        }
        let request = SignedRequest::new("{}")
            .with_webhook_id("wh_1")
            .try_build()
            .unwrap();
        assert_eq!(request.headers()[WEBHOOK_ID_HEADER], "wh_1");
    }

    #[test]
    fn fixed_clock_moves_only_when_told() {
        let clock = ManualClock::default();
        let f = clock.as_fn();
        assert_eq!(f(), FIXED_TIME);
        clock.set(5);
        assert_eq!(f(), 5);
        assert_eq!(fixed_clock()(), FIXED_TIME);
    }
}
