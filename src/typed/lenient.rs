//! Field deserializers that never fail: a value of another JSON type than the field's is `None`.
//!
//! They are used with `#[serde(default, deserialize_with = "...")]`, so a typed event is built
//! from any `data` object the layer verified.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::data::{BounceType, EmailMetadata};

/// A string, or `None` for any other value.
pub(super) fn string<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    de.deserialize_any(Lenient(Kind::String))
        .map(|value| match value {
            Scalar::String(text) => Some(text),
            _ => None,
        })
}

/// A non-negative integer, or `None` for any other value (a negative number, a fraction, a
/// string of digits).
pub(super) fn count<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    de.deserialize_any(Lenient(Kind::Count))
        .map(|value| match value {
            Scalar::Count(n) => Some(n),
            _ => None,
        })
}

/// A bounce type from a string (`None` for any other value).
pub(super) fn bounce_type<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<BounceType>, D::Error> {
    string(de).map(|text| text.map(BounceType::from))
}

/// `metadata`: an object read leniently, or `None` for any other value.
pub(super) fn metadata<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<EmailMetadata>, D::Error> {
    let value = Value::deserialize(de)?;
    Ok(match value {
        // The metadata's fields are lenient too, so an object always fits.
        Value::Object(_) => EmailMetadata::deserialize(value).ok(),
        _ => None,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    String,
    Count,
}

enum Scalar {
    String(String),
    Count(u64),
    Other,
}

/// Reads any value, keeping it only when it is of the wanted kind.
struct Lenient(Kind);

impl<'de> Visitor<'de> for Lenient {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Scalar, E> {
        Ok(match self.0 {
            Kind::String => Scalar::String(text.to_owned()),
            Kind::Count => Scalar::Other,
        })
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Scalar, E> {
        Ok(match self.0 {
            Kind::String => Scalar::String(text),
            Kind::Count => Scalar::Other,
        })
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
        Ok(match self.0 {
            Kind::Count => Scalar::Count(n),
            Kind::String => Scalar::Other,
        })
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Ok(Scalar::Other),
        }
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Scalar, D::Error> {
        de.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}
