//! The envelope parser on arbitrary bytes, against a reference built on serde_json's raw
//! values: accepted exactly when the body is one JSON object (UTF-8) with a string `event` and
//! no repeated envelope field, and then every field agrees. (Raw values, not `Value`: a number
//! like `1e99999` is valid JSON that `Value` cannot hold; found by this target.)
#![no_main]

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use metigan_webhook::{Envelope, EventType, Reason};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON object read key by key, keeping every occurrence (serde_json's `Map` keeps the last).
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push((k, v));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(V)
    }
}

fn reference(body: &[u8]) -> Option<HashMap<String, Box<RawValue>>> {
    // Must be an object (the first significant byte is `{`), with each envelope field once.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let Entries(entries) = serde_json::from_slice(body).ok()?;
    let mut fields = HashMap::new();
    for (k, v) in entries {
        if ["event", "messageId", "data", "timestamp"].contains(&k.as_str()) {
            if fields.insert(k, v).is_some() {
                return None;
            }
        }
    }
    let event = fields.get("event")?;
    serde_json::from_str::<String>(event.get()).ok()?;
    Some(fields)
}

fn string(raw: &RawValue) -> Option<String> {
    serde_json::from_str(raw.get()).ok()
}

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let ours = Envelope::parse(body.clone());
    let expected = reference(data);
    match (ours, expected) {
        (Err(rejection), None) => assert_eq!(rejection.reason(), Reason::InvalidPayload),
        (Ok(envelope), Some(fields)) => {
            let event = string(&fields["event"]).unwrap();
            assert_eq!(envelope.event_type(), &EventType::parse(&event));
            assert_eq!(envelope.event_type().as_str(), event);
            match fields.get("data").map(|raw| raw.get()) {
                None | Some("null") => assert_eq!(envelope.data_json(), None),
                Some(raw) => assert_eq!(envelope.data_json(), Some(raw)),
            }
            match fields.get("messageId") {
                Some(raw) if string(raw).is_some() => {
                    assert_eq!(envelope.message_id(), string(raw).as_deref())
                }
                Some(raw) if raw.get().starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
                    assert_eq!(envelope.message_id(), Some(raw.get()))
                }
                _ => assert_eq!(envelope.message_id(), None),
            }
            match fields.get("timestamp").map(|raw| raw.get().parse::<u64>()) {
                Some(Ok(ms)) => assert_eq!(envelope.timestamp_ms(), Some(ms)),
                Some(Err(_)) => {}
                None => assert_eq!(envelope.timestamp_ms(), None),
            }
            assert_eq!(envelope.body(), &body);
        }
        (ours, expected) => panic!(
            "disagreement: ours {:?}, reference accepts: {}",
            ours.map(|e| e.event_type().clone()),
            expected.is_some()
        ),
    }
});
