//! The verified event: Metigan's JSON envelope, parsed lazily.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::HeaderValue;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::rejection::{Reason, Rejection};

macro_rules! event_types {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// The `event` field of a Metigan webhook.
        ///
        /// Every type seen in Metigan's docs and SDK has a variant; anything else is kept in
        /// [`EventType::Other`], so new event types still verify and reach the handler.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum EventType {
            $($(#[$doc])* $variant,)*
            /// An event type this version of the crate does not know.
            Other(String),
        }

        impl EventType {
            /// Every known event type (without `Other`).
            pub const KNOWN: &'static [EventType] = &[$(EventType::$variant,)*];

            /// The wire name, e.g. `"email.delivered"`.
            pub fn as_str(&self) -> &str {
                match self {
                    $(EventType::$variant => $name,)*
                    EventType::Other(other) => other,
                }
            }

            /// Maps a wire name to its variant.
            pub fn parse(name: &str) -> EventType {
                match name {
                    $($name => EventType::$variant,)*
                    other => EventType::Other(other.to_owned()),
                }
            }
        }
    };
}

event_types! {
    /// `email.sent`: accepted by Metigan for delivery.
    EmailSent => "email.sent",
    /// `email.delivered`: accepted by the recipient's server.
    EmailDelivered => "email.delivered",
    /// `email.opened`: the recipient opened the email.
    EmailOpened => "email.opened",
    /// `email.clicked`: the recipient clicked a tracked link.
    EmailClicked => "email.clicked",
    /// `email.bounced`: hard or soft bounce.
    EmailBounced => "email.bounced",
    /// `email.complained`: marked as spam.
    EmailComplained => "email.complained",
    /// `email.delivery_delayed`: temporarily deferred.
    EmailDeliveryDelayed => "email.delivery_delayed",
    /// `email.unsubscribed`: the recipient unsubscribed.
    EmailUnsubscribed => "email.unsubscribed",
    /// `email.failed`: could not be sent.
    EmailFailed => "email.failed",
    /// `contact.created`.
    ContactCreated => "contact.created",
    /// `contact.updated`.
    ContactUpdated => "contact.updated",
    /// `contact.deleted`.
    ContactDeleted => "contact.deleted",
    /// `audience.created`.
    AudienceCreated => "audience.created",
    /// `audience.updated`.
    AudienceUpdated => "audience.updated",
    /// `audience.deleted`.
    AudienceDeleted => "audience.deleted",
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for EventType {
    fn from(name: &str) -> Self {
        EventType::parse(name)
    }
}

impl std::str::FromStr for EventType {
    type Err = std::convert::Infallible;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(EventType::parse(name))
    }
}

/// What the envelope parse reads; everything else is skipped without building a DOM.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, rename = "messageId", borrow)]
    message_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    timestamp: Option<&'a RawValue>,
}

/// The envelope's `timestamp` from its raw text: a non-negative number (integer, or float
/// truncated) is kept, anything else (string, null, object, a number too large) is `None`.
/// Read as raw text, not through the parser's number type, because a valid JSON number such
/// as `955E1615` overflows it (found by fuzzing).
fn lenient_millis(raw: Option<&RawValue>) -> Option<u64> {
    let text = raw?.get();
    if let Ok(n) = text.parse::<u64>() {
        return Some(n);
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => Some(f as u64),
        _ => None,
    }
}

/// Text kept from the body: most often where it is (no copy), or decoded when it had escapes.
#[derive(Clone, Debug)]
enum Text {
    Span(Range<usize>),
    Owned(Box<str>),
}

impl Text {
    /// The text, reading a span from `body`.
    fn resolve<'a>(&'a self, body: &'a [u8]) -> Option<&'a str> {
        match self {
            // A span of a string the parser validated as UTF-8.
            Text::Span(range) => std::str::from_utf8(body.get(range.clone())?).ok(),
            Text::Owned(text) => Some(text),
        }
    }
}

/// Metigan's envelope: `{"event", "messageId", "data", "timestamp"}`, parsed from the raw body.
///
/// Only the envelope is parsed; `data` stays raw (a slice of the body, no copy) and is
/// deserialized on demand.
#[derive(Clone)]
pub struct Envelope {
    event: EventType,
    message_id: Option<Text>,
    timestamp_ms: Option<u64>,
    body: Bytes,
    data: Option<Range<usize>>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body is not printed: it may hold personal data and must stay out of logs.
        f.debug_struct("Envelope")
            .field("event", &self.event)
            .field("message_id", &self.message_id())
            .field("timestamp_ms", &self.timestamp_ms)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Where `text`, a slice of `body`, sits in it.
fn span_of(body: &[u8], text: &str) -> Option<Range<usize>> {
    let start = (text.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    (start + text.len() <= body.len()).then(|| start..start + text.len())
}

/// `messageId` as text: a string (where it is in the body unless it has escapes), or a
/// number's own text; `null`, objects, arrays and booleans are not ids.
fn lenient_id(body: &[u8], raw: Option<&RawValue>) -> Option<Text> {
    let raw = raw?;
    let text = raw.get();
    if text.starts_with('"') {
        return lenient_str(body, raw);
    }
    if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return span_of(body, text).map(Text::Span);
    }
    None
}

/// A JSON value as text when it is a string: where it is in the body unless it has escapes.
fn lenient_str(body: &[u8], raw: &RawValue) -> Option<Text> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        return serde_json::from_str::<String>(text)
            .ok()
            .map(|s| Text::Owned(s.into()));
    }
    span_of(body, inner).map(Text::Span)
}

/// The members of `data` (and of `data.metadata`) that the lenient accessors of
/// [`VerifiedEvent`] read, found in one pass over the raw text: no DOM is built, and a string
/// without escapes stays where it is in the body.
///
/// The same answers as looking the paths up in a `serde_json::Value` of `data`: a member
/// whose value is not a string gives `None`, a repeated member counts by its last occurrence,
/// and `data` or `metadata` that is not an object has no members. One difference: valid JSON
/// that `serde_json::Value` refuses elsewhere in `data` (nesting deeper than 128 levels, a
/// number beyond `f64`, a lone surrogate escape) leaves [`VerifiedEvent::data`] `Null`, while
/// the members read here are still found.
#[derive(Default)]
struct Fields {
    recipient: Option<Text>,
    email: Option<Text>,
    subject: Option<Text>,
    status: Option<Text>,
    bounce_type: Option<Text>,
    bounce_reason: Option<Text>,
    url: Option<Text>,
    user_id: Option<Text>,
    metadata: Option<Box<Fields>>,
}

impl Fields {
    /// Reads the fields of `data` (a slice of `body`).
    fn read(body: &[u8], data: &str) -> Fields {
        let mut de = serde_json::Deserializer::from_str(data);
        serde::de::DeserializeSeed::deserialize(
            FieldsSeed {
                body,
                nested: false,
            },
            &mut de,
        )
        .ok()
        .flatten()
        .map(|fields| *fields)
        .unwrap_or_default()
    }
}

/// The member names the accessors read; anything else is skipped.
enum Key {
    Recipient,
    Email,
    Subject,
    Status,
    BounceType,
    BounceReason,
    Url,
    UserId,
    Metadata,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Key, E> {
                Ok(match name {
                    "recipient" => Key::Recipient,
                    "email" => Key::Email,
                    "subject" => Key::Subject,
                    "status" => Key::Status,
                    "bounceType" => Key::BounceType,
                    "bounceReason" => Key::BounceReason,
                    "url" => Key::Url,
                    "userId" => Key::UserId,
                    "metadata" => Key::Metadata,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Reads one value as [`Fields`]: `Some` for an object, `None` for anything else.
struct FieldsSeed<'b> {
    body: &'b [u8],
    /// Inside `metadata`: a `metadata` member there is not read.
    nested: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = Option<Box<Fields>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldsSeed<'_> {
    type Value = Option<Box<Fields>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::Recipient => &mut fields.recipient,
                Key::Email => &mut fields.email,
                Key::Subject => &mut fields.subject,
                Key::Status => &mut fields.status,
                Key::BounceType => &mut fields.bounce_type,
                Key::BounceReason => &mut fields.bounce_reason,
                Key::Url => &mut fields.url,
                Key::UserId => &mut fields.user_id,
                Key::Metadata if !self.nested => {
                    let nested = FieldsSeed {
                        body: self.body,
                        nested: true,
                    };
                    fields.metadata = map.next_value_seed(nested)?;
                    continue;
                }
                Key::Metadata | Key::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
            };
            let raw: &'de RawValue = map.next_value()?;
            *slot = lenient_str(self.body, raw);
        }
        Ok(Some(Box::new(fields)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

impl Envelope {
    /// Parses the envelope of an (already verified) body.
    ///
    /// # Errors
    ///
    /// `invalid_payload` when the body is not one JSON object with a string `event`.
    pub fn parse(body: Bytes) -> Result<Envelope, Rejection> {
        // serde's derived structs also accept a JSON array (fields by position): the envelope
        // must be an object, so check the first significant byte.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Rejection::new(Reason::InvalidPayload));
        }
        // JSON is UTF-8 (RFC 8259). serde_json skips ignored fields without checking their
        // bytes, so validate the whole body once (fuzzing found a non-UTF-8 body accepted).
        let text =
            std::str::from_utf8(&body).map_err(|_| Rejection::new(Reason::InvalidPayload))?;
        let raw: RawEnvelope<'_> =
            serde_json::from_str(text).map_err(|_| Rejection::new(Reason::InvalidPayload))?;
        // The raw values borrow from `body`: record where, so they need no copy.
        let data = raw.data.and_then(|data| span_of(&body, data.get()));
        Ok(Envelope {
            event: EventType::parse(&raw.event),
            message_id: lenient_id(&body, raw.message_id),
            timestamp_ms: lenient_millis(raw.timestamp),
            data,
            body,
        })
    }

    /// The event type.
    pub fn event_type(&self) -> &EventType {
        &self.event
    }

    /// `messageId`, when present (numbers are kept as their text).
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_ref()?.resolve(&self.body)
    }

    /// The envelope's `timestamp`, in **milliseconds** since the epoch, when it is a number.
    pub fn timestamp_ms(&self) -> Option<u64> {
        self.timestamp_ms
    }

    /// The raw JSON text of `data` (`None` when absent).
    pub fn data_json(&self) -> Option<&str> {
        let range = self.data.clone()?;
        std::str::from_utf8(&self.body[range]).ok()
    }

    /// The raw bytes of `data`, sharing the body's buffer.
    pub fn data_bytes(&self) -> Option<Bytes> {
        self.data.clone().map(|range| self.body.slice(range))
    }

    /// Deserializes `data` into your own type.
    ///
    /// # Errors
    ///
    /// The `serde_json` error when `data` is absent or does not fit `T`.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data_json().unwrap_or("null"))
    }

    /// The whole body, exactly as received and signed.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// A verified Metigan event, put in the request's extensions by the layer.
///
/// Cheap to clone (one `Arc`). Take it in an axum handler with `Extension<VerifiedEvent>`, or
/// directly as an argument with the `axum` feature.
///
/// The typed accessors ([`recipient`](Self::recipient), [`bounce_type`](Self::bounce_type),
/// ...) are lenient: Metigan's sources differ, so each returns `None` rather than failing when
/// its field is absent or has another type. `data` stays reachable raw
/// ([`data_json`](Self::data_json)) or typed ([`data_as`](Self::data_as)).
#[derive(Clone)]
pub struct VerifiedEvent {
    inner: Arc<Inner>,
}

/// `X-Webhook-Id`: the header value itself (no copy), or a string given to
/// [`VerifiedEvent::new`].
enum WebhookId {
    Header(HeaderValue),
    Owned(String),
}

struct Inner {
    envelope: Envelope,
    signed_at: u64,
    webhook_id: Option<WebhookId>,
    secret_index: usize,
    data: OnceLock<Value>,
    fields: OnceLock<Fields>,
}

impl fmt::Debug for VerifiedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedEvent")
            .field("envelope", &self.inner.envelope)
            .field("signed_at", &self.inner.signed_at)
            .field("webhook_id", &self.webhook_id())
            .field("secret_index", &self.inner.secret_index)
            .finish()
    }
}

impl VerifiedEvent {
    /// Assembles a verified event. The layer does this; it is public for tests and for users
    /// who verify with [`Verifier`](crate::Verifier) directly.
    pub fn new(
        envelope: Envelope,
        signed_at: u64,
        webhook_id: Option<String>,
        secret_index: usize,
    ) -> Self {
        let webhook_id = webhook_id.map(WebhookId::Owned);
        Self::assemble(envelope, signed_at, webhook_id, secret_index)
    }

    /// As the layer assembles it: the `X-Webhook-Id` header kept as the request carried it
    /// (sharing its buffer), when it is visible ASCII (`HeaderValue::to_str`).
    pub(crate) fn from_request(
        envelope: Envelope,
        signed_at: u64,
        webhook_id: Option<&HeaderValue>,
        secret_index: usize,
    ) -> Self {
        let webhook_id = webhook_id
            .filter(|value| value.to_str().is_ok())
            .map(|value| WebhookId::Header(value.clone()));
        Self::assemble(envelope, signed_at, webhook_id, secret_index)
    }

    fn assemble(
        envelope: Envelope,
        signed_at: u64,
        webhook_id: Option<WebhookId>,
        secret_index: usize,
    ) -> Self {
        VerifiedEvent {
            inner: Arc::new(Inner {
                envelope,
                signed_at,
                webhook_id,
                secret_index,
                data: OnceLock::new(),
                fields: OnceLock::new(),
            }),
        }
    }

    /// The parsed envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.inner.envelope
    }

    /// The event type.
    pub fn event_type(&self) -> &EventType {
        self.inner.envelope.event_type()
    }

    /// `messageId`, when present. Several events of one email share it.
    pub fn message_id(&self) -> Option<&str> {
        self.inner.envelope.message_id()
    }

    /// The envelope's `timestamp` in milliseconds, when present.
    pub fn timestamp_ms(&self) -> Option<u64> {
        self.inner.envelope.timestamp_ms()
    }

    /// The signed timestamp `t` of the signature header, in seconds.
    pub fn signed_at(&self) -> u64 {
        self.inner.signed_at
    }

    /// The `X-Webhook-Id` header, when present (Metigan documents it both as the webhook's id
    /// and as a delivery id: informative only).
    pub fn webhook_id(&self) -> Option<&str> {
        match self.inner.webhook_id.as_ref()? {
            // Checked when the event was made.
            WebhookId::Header(value) => value.to_str().ok(),
            WebhookId::Owned(id) => Some(id),
        }
    }

    /// Index of the configured secret that matched (0 = the first one).
    pub fn secret_index(&self) -> usize {
        self.inner.secret_index
    }

    /// The raw body as received, without copy.
    pub fn body(&self) -> &Bytes {
        self.inner.envelope.body()
    }

    /// The raw JSON of `data`.
    pub fn data_json(&self) -> Option<&str> {
        self.inner.envelope.data_json()
    }

    /// Deserializes `data` into your own type.
    ///
    /// # Errors
    ///
    /// The `serde_json` error when `data` does not fit `T`.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.inner.envelope.data_as()
    }

    /// `data` as a JSON value, parsed on first use and cached (`Null` when absent).
    pub fn data(&self) -> &Value {
        self.inner.data.get_or_init(|| {
            self.data_json()
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or(Value::Null)
        })
    }

    /// The members the accessors read, found on first use (one pass over `data`, no DOM).
    fn fields(&self) -> &Fields {
        self.inner.fields.get_or_init(|| {
            let envelope = &self.inner.envelope;
            envelope
                .data_json()
                .map_or_else(Fields::default, |data| Fields::read(envelope.body(), data))
        })
    }

    /// The first of `picks` that is a string.
    fn first_str(&self, picks: &[fn(&Fields) -> Option<&Text>]) -> Option<&str> {
        let fields = self.fields();
        let body = self.body();
        picks
            .iter()
            .find_map(|pick| pick(fields).and_then(|text| text.resolve(body)))
    }

    /// `data.recipient` (or `data.email`, as contact events carry it).
    pub fn recipient(&self) -> Option<&str> {
        self.first_str(&[|f| f.recipient.as_ref(), |f| f.email.as_ref()])
    }

    /// `data.subject`.
    pub fn subject(&self) -> Option<&str> {
        self.first_str(&[|f| f.subject.as_ref()])
    }

    /// `data.status`.
    pub fn status(&self) -> Option<&str> {
        self.first_str(&[|f| f.status.as_ref()])
    }

    /// `data.bounceType` (or `data.metadata.bounceType`): `"hard"` or `"soft"` in practice.
    pub fn bounce_type(&self) -> Option<&str> {
        self.first_str(&[
            |f| f.bounce_type.as_ref(),
            |f| meta(f)?.bounce_type.as_ref(),
        ])
    }

    /// Whether `bounce_type` is `hard` (case-insensitive).
    pub fn is_hard_bounce(&self) -> bool {
        self.bounce_type()
            .is_some_and(|kind| kind.eq_ignore_ascii_case("hard"))
    }

    /// `data.metadata.bounceReason` (or `data.bounceReason`).
    pub fn bounce_reason(&self) -> Option<&str> {
        self.first_str(&[
            |f| meta(f)?.bounce_reason.as_ref(),
            |f| f.bounce_reason.as_ref(),
        ])
    }

    /// The clicked link: `data.metadata.url` (or `data.url`).
    pub fn clicked_url(&self) -> Option<&str> {
        self.first_str(&[|f| meta(f)?.url.as_ref(), |f| f.url.as_ref()])
    }

    /// `data.userId` (or `data.metadata.userId`).
    pub fn user_id(&self) -> Option<&str> {
        self.first_str(&[|f| f.user_id.as_ref(), |f| meta(f)?.user_id.as_ref()])
    }
}

/// A member of `data` (or of `data.metadata`) that the lenient accessors read.
#[derive(Clone, Copy)]
pub(crate) enum Member {
    Recipient,
    Email,
    Subject,
    Status,
    BounceType,
    BounceReason,
    Url,
    UserId,
}

impl VerifiedEvent {
    /// One member as the accessors read it, without their fallbacks: a string or `None`
    /// (the typed events use it when `data` is JSON that `serde_json::Value` refuses).
    pub(crate) fn member(&self, member: Member, in_metadata: bool) -> Option<&str> {
        let fields = self.fields();
        let fields = if in_metadata { meta(fields)? } else { fields };
        let text = match member {
            Member::Recipient => &fields.recipient,
            Member::Email => &fields.email,
            Member::Subject => &fields.subject,
            Member::Status => &fields.status,
            Member::BounceType => &fields.bounce_type,
            Member::BounceReason => &fields.bounce_reason,
            Member::Url => &fields.url,
            Member::UserId => &fields.user_id,
        };
        text.as_ref()?.resolve(self.body())
    }
}

/// `data.metadata`'s members, when it is an object.
fn meta(fields: &Fields) -> Option<&Fields> {
    fields.metadata.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Envelope, Reason> {
        Envelope::parse(Bytes::copy_from_slice(body.as_bytes())).map_err(|r| r.reason())
    }

    #[test]
    fn every_known_type_round_trips() {
        for kind in EventType::KNOWN {
            assert_eq!(&EventType::parse(kind.as_str()), kind);
        }
        assert_eq!(EventType::KNOWN.len(), 15);
        assert_eq!(
            EventType::parse("email.teleported"),
            EventType::Other("email.teleported".into())
        );
    }

    #[test]
    fn envelope_keeps_data_raw_and_shares_the_body() {
        let body = r#"{"event":"email.clicked","messageId":"m-1","data":{"recipient":"a@b.c","metadata":{"url":"https://x"}},"timestamp":1700000000123}"#;
        let env = parse(body).unwrap();
        assert_eq!(env.event_type(), &EventType::EmailClicked);
        assert_eq!(env.message_id(), Some("m-1"));
        assert_eq!(env.timestamp_ms(), Some(1_700_000_000_123));
        assert_eq!(
            env.data_json(),
            Some(r#"{"recipient":"a@b.c","metadata":{"url":"https://x"}}"#)
        );
        let data = env.data_bytes().unwrap();
        let offset = data.as_ptr() as usize - env.body().as_ptr() as usize;
        assert!(
            offset > 0 && offset < body.len(),
            "data is a slice of the body"
        );
        let event = VerifiedEvent::new(env, 1, Some("wh".into()), 0);
        assert_eq!(event.recipient(), Some("a@b.c"));
        assert_eq!(event.clicked_url(), Some("https://x"));
        assert_eq!(event.subject(), None);
        assert_eq!(event.webhook_id(), Some("wh"));
    }

    #[test]
    fn accessors_still_read_data_that_a_value_refuses() {
        for body in [
            r#"{"event":"x","data":{"subject":"s","x":1e400}}"#,
            r#"{"event":"x","data":{"subject":"s","x":"\ud800"}}"#,
        ] {
            let event = VerifiedEvent::new(parse(body).unwrap(), 1, None, 0);
            assert_eq!(event.subject(), Some("s"), "{body}");
            assert_eq!(event.data(), &Value::Null, "{body}");
        }
    }

    #[test]
    fn escaped_event_names_are_decoded() {
        let env = parse(r#"{"event":"email\u002eopened"}"#).unwrap();
        assert_eq!(env.event_type(), &EventType::EmailOpened);
        assert_eq!(env.message_id(), None);
        assert_eq!(env.data_json(), None);
    }

    #[test]
    fn invalid_envelopes() {
        for body in [
            "",
            "not json",
            "[1,2]",
            r#"["email.sent"]"#,
            r#"["email.sent","m",{"a":1},5]"#,
            "{}",
            r#"{"event":1}"#,
            r#"{"event":null}"#,
            r#"{"event":"a"} trailing"#,
            r#"{"event":"a","data":{"x":}}"#,
            r#"{"event":"a","event":"b"}"#,
            "{\"event\":\"a\",\"x\":\"\u{0}\"}",
        ] {
            assert_eq!(parse(body).unwrap_err(), Reason::InvalidPayload, "{body}");
        }
        // Invalid UTF-8 in a field the envelope does not read (found by fuzzing).
        for body in [
            &b"{\"event\":\"a\",\"x\":\"\xc7\xc7\"}"[..],
            &b"{\"event\":\"a\",\"data\":{\"k\":\"\xff\"}}"[..],
        ] {
            let result = Envelope::parse(Bytes::copy_from_slice(body));
            assert_eq!(result.unwrap_err().reason(), Reason::InvalidPayload);
        }
    }

    #[test]
    fn lenient_timestamps_and_ids() {
        for (timestamp, expected) in [
            ("1700000000123", Some(1_700_000_000_123)),
            ("0", Some(0)),
            ("1.5", Some(1)),
            ("-1", None),
            ("-0.5", None),
            ("1e30", None),
            ("955E1615", None),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            (r#""1700000000123""#, None),
            ("true", None),
            ("null", None),
            (r#"{"ms":1,"nested":[1,{"a":2}]}"#, None),
            ("[1,2,[3]]", None),
        ] {
            let body = format!(r#"{{"event":"x","timestamp":{timestamp},"messageId":"m"}}"#);
            let env = parse(&body).unwrap_or_else(|e| panic!("{body}: {e:?}"));
            assert_eq!(env.timestamp_ms(), expected, "{timestamp}");
            assert_eq!(env.message_id(), Some("m"), "fields after it are read");
        }
        // A plain id is a slice of the body; one with escapes is decoded.
        let env = parse(r#"{"event":"x","messageId":"plain"}"#).unwrap();
        let id = env.message_id().unwrap();
        let offset = id.as_ptr() as usize - env.body().as_ptr() as usize;
        assert_eq!(&env.body()[offset..offset + 5], b"plain", "no copy");
        let env = parse(r#"{"event":"x","messageId":"msg_\u0041\"q\""}"#).unwrap();
        assert_eq!(env.message_id(), Some("msg_A\"q\""));
        let env = parse(r#"{"event":"x","messageId":-12.5e3}"#).unwrap();
        assert_eq!(env.message_id(), Some("-12.5e3"));
        for id in ["true", "{}", "[\"a\"]"] {
            let env = parse(&format!(r#"{{"event":"x","messageId":{id}}}"#)).unwrap();
            assert_eq!(env.message_id(), None, "{id}");
        }
        let env = parse(r#"{"event":"x","messageId":"m-1","timestamp":{"bad":}}"#);
        assert_eq!(env.unwrap_err(), Reason::InvalidPayload);
    }

    #[test]
    fn lenient_fields() {
        let env = parse(r#"{"event":"x","messageId":42,"timestamp":"soon","data":null}"#).unwrap();
        assert_eq!(env.message_id(), Some("42"));
        assert_eq!(env.timestamp_ms(), None);
        let env = parse(r#"{"event":"x","messageId":null,"timestamp":1.7e12}"#).unwrap();
        assert_eq!(env.message_id(), None);
        assert_eq!(env.timestamp_ms(), Some(1_700_000_000_000));
        let ev = VerifiedEvent::new(
            parse(r#"{"event":"email.bounced","data":{"recipient":7,"bounceType":"Hard","metadata":{"bounceReason":"mailbox full"}}}"#).unwrap(),
            1,
            None,
            0,
        );
        assert_eq!(ev.recipient(), None);
        assert!(ev.is_hard_bounce());
        assert_eq!(ev.bounce_reason(), Some("mailbox full"));
        #[derive(Deserialize)]
        struct Bounce {
            #[serde(rename = "bounceType")]
            bounce_type: String,
        }
        assert_eq!(ev.data_as::<Bounce>().unwrap().bounce_type, "Hard");
    }
}
