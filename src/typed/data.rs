//! The lenient structs of `data`, one per family of event types.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::lenient;

/// `data.bounceType`: Metigan sends `"hard"` or `"soft"`; anything else is kept.
///
/// Read case-insensitively (`"Hard"` is [`BounceType::Hard`]), as
/// [`VerifiedEvent::is_hard_bounce`](crate::VerifiedEvent::is_hard_bounce) does.
///
/// ```
/// use metigan_webhook::BounceType;
///
/// assert_eq!(BounceType::from("HARD"), BounceType::Hard);
/// assert_eq!(BounceType::from("transient"), BounceType::Other("transient".into()));
/// assert_eq!(BounceType::Soft.as_str(), "soft");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BounceType {
    /// A permanent failure: the address does not exist. Stop sending to it.
    Hard,
    /// A temporary failure (mailbox full, server down).
    Soft,
    /// Another value, as sent.
    Other(String),
}

impl BounceType {
    /// `"hard"`, `"soft"`, or the other value as sent.
    pub fn as_str(&self) -> &str {
        match self {
            BounceType::Hard => "hard",
            BounceType::Soft => "soft",
            BounceType::Other(other) => other,
        }
    }
}

impl From<&str> for BounceType {
    fn from(text: &str) -> Self {
        if text.eq_ignore_ascii_case("hard") {
            BounceType::Hard
        } else if text.eq_ignore_ascii_case("soft") {
            BounceType::Soft
        } else {
            BounceType::Other(text.to_owned())
        }
    }
}

impl From<String> for BounceType {
    fn from(text: String) -> Self {
        match BounceType::from(text.as_str()) {
            BounceType::Other(_) => BounceType::Other(text),
            known => known,
        }
    }
}

impl fmt::Display for BounceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for BounceType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for BounceType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(BounceType::from)
    }
}

/// `data.metadata` of an email event: what the event type adds (the clicked link, the bounce
/// reason, the opener's user agent...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct EmailMetadata {
    /// `url`: the clicked link (`email.clicked`).
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    /// `bounceType`, where a source puts it here rather than in `data`.
    #[serde(
        default,
        deserialize_with = "lenient::bounce_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub bounce_type: Option<BounceType>,
    /// `bounceReason`: the receiving server's answer (`email.bounced`).
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub bounce_reason: Option<String>,
    /// `userId`, where a source puts it here rather than in `data`.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_id: Option<String>,
    /// `userAgent` of the reader (`email.opened`, `email.clicked`).
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_agent: Option<String>,
    /// `ipAddress` of the reader (`email.opened`, `email.clicked`).
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip_address: Option<String>,
    /// Every other member, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of an `email.*` event.
///
/// Every field is optional, since Metigan's sources differ: the methods read a field where
/// either source puts it, as the accessors of [`VerifiedEvent`](crate::VerifiedEvent) do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct EmailData {
    /// `recipient`: the address the email went to.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub recipient: Option<String>,
    /// `subject`.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub subject: Option<String>,
    /// `status` (`"delivered"`, `"bounced"`...).
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<String>,
    /// `userId`: your user, as given when sending.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_id: Option<String>,
    /// `from`: the sender.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<String>,
    /// `url`, where a source puts the clicked link here rather than in `metadata`.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    /// `bounceType` (`email.bounced`).
    #[serde(
        default,
        deserialize_with = "lenient::bounce_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub bounce_type: Option<BounceType>,
    /// `bounceReason`, where a source puts it here rather than in `metadata`.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub bounce_reason: Option<String>,
    /// `metadata`, when it is an object.
    #[serde(
        default,
        deserialize_with = "lenient::metadata",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata: Option<EmailMetadata>,
    /// Every other member, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EmailData {
    /// The clicked link: `metadata.url`, else `url`.
    pub fn clicked_url(&self) -> Option<&str> {
        self.meta(|m| m.url.as_deref()).or(self.url.as_deref())
    }

    /// `bounceType`, else `metadata.bounceType`.
    pub fn bounce_type(&self) -> Option<&BounceType> {
        self.bounce_type
            .as_ref()
            .or_else(|| self.metadata.as_ref()?.bounce_type.as_ref())
    }

    /// Whether the bounce is [`BounceType::Hard`]: stop sending to this address.
    pub fn is_hard_bounce(&self) -> bool {
        self.bounce_type() == Some(&BounceType::Hard)
    }

    /// `metadata.bounceReason`, else `bounceReason`.
    pub fn bounce_reason(&self) -> Option<&str> {
        self.meta(|m| m.bounce_reason.as_deref())
            .or(self.bounce_reason.as_deref())
    }

    /// `userId`, else `metadata.userId`.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id
            .as_deref()
            .or_else(|| self.meta(|m| m.user_id.as_deref()))
    }

    fn meta<'a>(
        &'a self,
        pick: impl FnOnce(&'a EmailMetadata) -> Option<&'a str>,
    ) -> Option<&'a str> {
        self.metadata.as_ref().and_then(pick)
    }
}

/// `data` of a `contact.*` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ContactData {
    /// `contactId`.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub contact_id: Option<String>,
    /// `email`: the contact's address.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub email: Option<String>,
    /// `firstName`.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub first_name: Option<String>,
    /// `lastName`.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_name: Option<String>,
    /// `audienceId`: the audience the contact belongs to.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub audience_id: Option<String>,
    /// `status` (`"subscribed"`, `"unsubscribed"`...).
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<String>,
    /// Every other member (`changes` of `contact.updated`...), as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of an `audience.*` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AudienceData {
    /// `audienceId`.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub audience_id: Option<String>,
    /// `name`.
    #[serde(
        default,
        deserialize_with = "lenient::string",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    /// `contactCount`, when it is a non-negative integer.
    #[serde(
        default,
        deserialize_with = "lenient::count",
        skip_serializing_if = "Option::is_none"
    )]
    pub contact_count: Option<u64>,
    /// Every other member, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An event type this version of the crate does not know: its name and its raw `data`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UnknownEvent {
    /// The `event` field, as sent.
    pub event: String,
    /// `data`, exactly as sent (`None` when absent).
    pub data: Option<Box<RawValue>>,
}

impl UnknownEvent {
    /// `data` as raw JSON text.
    pub fn data_json(&self) -> Option<&str> {
        self.data.as_deref().map(RawValue::get)
    }
}

impl PartialEq for UnknownEvent {
    fn eq(&self, other: &Self) -> bool {
        self.event == other.event && self.data_json() == other.data_json()
    }
}
