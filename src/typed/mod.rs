//! Typed events: one variant per Metigan event type, each holding a lenient struct of `data`.
//!
//! [`VerifiedEvent::typed`] builds a [`TypedEvent`] from the envelope the layer already parsed
//! (the body is not parsed again; `data` is read once, as [`VerifiedEvent::data`] reads it).
//! With the `axum` feature a handler takes it as an argument.
//!
//! # Leniency
//!
//! The typed API never refuses an event the layer verified:
//! - every field is an `Option`; a field whose JSON value has another type (a number where a
//!   string is expected, an object where a count is) is `None`, and the raw value stays
//!   reachable through [`VerifiedEvent::data`];
//! - members the struct does not name are kept in its `extra` map;
//! - `data` that is absent or not an object gives a struct with every field `None`;
//! - a repeated member counts by its last occurrence, as the lenient accessors read it;
//! - `data` that `serde_json::Value` refuses (nesting deeper than 128 levels, a number beyond
//!   `f64`, a lone surrogate escape) still gives the members the lenient accessors read
//!   in the fields that name them (`recipient`, `subject`, `status`, `userId`, `url`,
//!   `bounceType`, `bounceReason`, `metadata.url`... of an email event; `email` and `status`
//!   of a contact event); every other field is `None` and `extra` is empty.
//!
//! So outside that last case the typed fields agree with the accessors of [`VerifiedEvent`]
//! ([`EmailData::recipient`] with [`VerifiedEvent::recipient`], [`EmailData::clicked_url`]
//! with [`VerifiedEvent::clicked_url`], and so on); a property test checks it. (The accessors
//! also fall back from `recipient` to `email`: an email event's `email` is in `extra`, a
//! contact event's `recipient` too.)
//!
//! # Example
//!
//! ```
//! use metigan_webhook::testing::SampleEvent;
//! use metigan_webhook::{BounceType, Envelope, EventType, TypedEvent, VerifiedEvent};
//!
//! let body = SampleEvent::new(EventType::EmailBounced).to_body();
//! let event = VerifiedEvent::new(Envelope::parse(body).unwrap(), 1_700_000_000, None, 0);
//! match event.typed() {
//!     TypedEvent::EmailBounced(bounce) => {
//!         assert_eq!(bounce.bounce_type(), Some(&BounceType::Hard));
//!         assert_eq!(bounce.recipient.as_deref(), Some("jane@example.com"));
//!         assert!(bounce.bounce_reason().unwrap().starts_with("550 5.1.1"));
//!     }
//!     other => panic!("not a bounce: {:?}", other.event_type()),
//! }
//! ```

mod data;
mod lenient;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::event::{EventType, Member, VerifiedEvent};

pub use data::{AudienceData, BounceType, ContactData, EmailData, EmailMetadata, UnknownEvent};

/// A verified event with its `data` typed by event type.
///
/// Obtained with [`VerifiedEvent::typed`] (or as an axum handler argument with the `axum`
/// feature). New variants may be added as Metigan documents new event types; until then they
/// arrive as [`TypedEvent::Unknown`] with their raw `data`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TypedEvent {
    /// `email.sent`.
    EmailSent(EmailData),
    /// `email.delivered`.
    EmailDelivered(EmailData),
    /// `email.opened`.
    EmailOpened(EmailData),
    /// `email.clicked`: the link is [`EmailData::clicked_url`].
    EmailClicked(EmailData),
    /// `email.bounced`: see [`EmailData::bounce_type`] and [`EmailData::bounce_reason`].
    EmailBounced(EmailData),
    /// `email.complained`.
    EmailComplained(EmailData),
    /// `email.delivery_delayed`.
    EmailDeliveryDelayed(EmailData),
    /// `email.unsubscribed`.
    EmailUnsubscribed(EmailData),
    /// `email.failed`.
    EmailFailed(EmailData),
    /// `contact.created`.
    ContactCreated(ContactData),
    /// `contact.updated`.
    ContactUpdated(ContactData),
    /// `contact.deleted`.
    ContactDeleted(ContactData),
    /// `audience.created`.
    AudienceCreated(AudienceData),
    /// `audience.updated`.
    AudienceUpdated(AudienceData),
    /// `audience.deleted`.
    AudienceDeleted(AudienceData),
    /// An event type this version of the crate does not know, with its raw `data`.
    Unknown(UnknownEvent),
}

impl TypedEvent {
    /// The event type.
    pub fn event_type(&self) -> EventType {
        match self {
            TypedEvent::EmailSent(_) => EventType::EmailSent,
            TypedEvent::EmailDelivered(_) => EventType::EmailDelivered,
            TypedEvent::EmailOpened(_) => EventType::EmailOpened,
            TypedEvent::EmailClicked(_) => EventType::EmailClicked,
            TypedEvent::EmailBounced(_) => EventType::EmailBounced,
            TypedEvent::EmailComplained(_) => EventType::EmailComplained,
            TypedEvent::EmailDeliveryDelayed(_) => EventType::EmailDeliveryDelayed,
            TypedEvent::EmailUnsubscribed(_) => EventType::EmailUnsubscribed,
            TypedEvent::EmailFailed(_) => EventType::EmailFailed,
            TypedEvent::ContactCreated(_) => EventType::ContactCreated,
            TypedEvent::ContactUpdated(_) => EventType::ContactUpdated,
            TypedEvent::ContactDeleted(_) => EventType::ContactDeleted,
            TypedEvent::AudienceCreated(_) => EventType::AudienceCreated,
            TypedEvent::AudienceUpdated(_) => EventType::AudienceUpdated,
            TypedEvent::AudienceDeleted(_) => EventType::AudienceDeleted,
            TypedEvent::Unknown(unknown) => EventType::Other(unknown.event.clone()),
        }
    }

    /// The `data` of an `email.*` event.
    pub fn email(&self) -> Option<&EmailData> {
        match self {
            TypedEvent::EmailSent(data)
            | TypedEvent::EmailDelivered(data)
            | TypedEvent::EmailOpened(data)
            | TypedEvent::EmailClicked(data)
            | TypedEvent::EmailBounced(data)
            | TypedEvent::EmailComplained(data)
            | TypedEvent::EmailDeliveryDelayed(data)
            | TypedEvent::EmailUnsubscribed(data)
            | TypedEvent::EmailFailed(data) => Some(data),
            _ => None,
        }
    }

    /// The `data` of a `contact.*` event.
    pub fn contact(&self) -> Option<&ContactData> {
        match self {
            TypedEvent::ContactCreated(data)
            | TypedEvent::ContactUpdated(data)
            | TypedEvent::ContactDeleted(data) => Some(data),
            _ => None,
        }
    }

    /// The `data` of an `audience.*` event.
    pub fn audience(&self) -> Option<&AudienceData> {
        match self {
            TypedEvent::AudienceCreated(data)
            | TypedEvent::AudienceUpdated(data)
            | TypedEvent::AudienceDeleted(data) => Some(data),
            _ => None,
        }
    }
}

impl From<&VerifiedEvent> for TypedEvent {
    fn from(event: &VerifiedEvent) -> Self {
        event.typed()
    }
}

impl VerifiedEvent {
    /// This event with its `data` typed by event type. Never fails: see
    /// [the leniency rules](crate::typed#leniency).
    ///
    /// The envelope is not parsed again; `data` is read into a `serde_json::Value` once (cached,
    /// shared with [`data`](Self::data)) and the struct is built from it.
    pub fn typed(&self) -> TypedEvent {
        let email = || read(self, EmailData::from_members);
        let contact = || read(self, ContactData::from_members);
        let audience = || read(self, |_| AudienceData::default());
        match self.event_type() {
            EventType::EmailSent => TypedEvent::EmailSent(email()),
            EventType::EmailDelivered => TypedEvent::EmailDelivered(email()),
            EventType::EmailOpened => TypedEvent::EmailOpened(email()),
            EventType::EmailClicked => TypedEvent::EmailClicked(email()),
            EventType::EmailBounced => TypedEvent::EmailBounced(email()),
            EventType::EmailComplained => TypedEvent::EmailComplained(email()),
            EventType::EmailDeliveryDelayed => TypedEvent::EmailDeliveryDelayed(email()),
            EventType::EmailUnsubscribed => TypedEvent::EmailUnsubscribed(email()),
            EventType::EmailFailed => TypedEvent::EmailFailed(email()),
            EventType::ContactCreated => TypedEvent::ContactCreated(contact()),
            EventType::ContactUpdated => TypedEvent::ContactUpdated(contact()),
            EventType::ContactDeleted => TypedEvent::ContactDeleted(contact()),
            EventType::AudienceCreated => TypedEvent::AudienceCreated(audience()),
            EventType::AudienceUpdated => TypedEvent::AudienceUpdated(audience()),
            EventType::AudienceDeleted => TypedEvent::AudienceDeleted(audience()),
            EventType::Other(name) => TypedEvent::Unknown(UnknownEvent {
                event: name.clone(),
                data: self
                    .data_json()
                    .and_then(|text| RawValue::from_string(text.to_owned()).ok()),
            }),
        }
    }
}

/// `data` as `T`: from the parsed object, or from the members the accessors read when `data`
/// is not an object (`Value` refused it, or it is another JSON value).
fn read<'a, T: Deserialize<'a>>(
    event: &'a VerifiedEvent,
    from_members: impl FnOnce(&'a VerifiedEvent) -> T,
) -> T {
    match event.data() {
        // The fields are lenient and `extra` takes any member, so an object always fits.
        data @ Value::Object(_) => T::deserialize(data).unwrap_or_else(|_| from_members(event)),
        _ => from_members(event),
    }
}

fn owned(text: Option<&str>) -> Option<String> {
    text.map(str::to_owned)
}

impl EmailData {
    fn from_members(event: &VerifiedEvent) -> EmailData {
        let top = |member| owned(event.member(member, false));
        let meta = |member| owned(event.member(member, true));
        let metadata = EmailMetadata {
            url: meta(Member::Url),
            bounce_type: meta(Member::BounceType).map(BounceType::from),
            bounce_reason: meta(Member::BounceReason),
            user_id: meta(Member::UserId),
            ..EmailMetadata::default()
        };
        EmailData {
            recipient: top(Member::Recipient),
            subject: top(Member::Subject),
            status: top(Member::Status),
            user_id: top(Member::UserId),
            url: top(Member::Url),
            bounce_type: top(Member::BounceType).map(BounceType::from),
            bounce_reason: top(Member::BounceReason),
            metadata: (metadata != EmailMetadata::default()).then_some(metadata),
            ..EmailData::default()
        }
    }
}

impl ContactData {
    fn from_members(event: &VerifiedEvent) -> ContactData {
        ContactData {
            email: owned(event.member(Member::Email, false)),
            status: owned(event.member(Member::Status, false)),
            ..ContactData::default()
        }
    }
}
