//! The envelope parser on arbitrary bytes, against a reference built on `serde_json::Value`:
//! accepted exactly when the body is one JSON object with a string `event` (and no repeated
//! envelope field), and then every field agrees.
#![no_main]

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use metigan_webhook::{Envelope, EventType, Reason};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// A JSON object read key by key, keeping every occurrence (serde_json's `Map` keeps the last).
struct Entries(Vec<(String, Value)>);

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
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    entries.push((k, v));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(V)
    }
}

fn reference(body: &[u8]) -> Option<HashMap<String, Value>> {
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
    match fields.get("event") {
        Some(Value::String(_)) => Some(fields),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let ours = Envelope::parse(body.clone());
    let expected = reference(data);
    match (ours, expected) {
        (Err(rejection), None) => assert_eq!(rejection.reason(), Reason::InvalidPayload),
        (Ok(envelope), Some(fields)) => {
            let event = fields["event"].as_str().unwrap();
            assert_eq!(envelope.event_type(), &EventType::parse(event));
            assert_eq!(envelope.event_type().as_str(), event);
            match fields.get("data") {
                None | Some(Value::Null) => assert_eq!(envelope.data_json(), None),
                Some(data) => {
                    let raw = envelope.data_json().expect("data kept raw");
                    let reparsed: Value = serde_json::from_str(raw).unwrap();
                    assert_eq!(&reparsed, data);
                }
            }
            match fields.get("messageId") {
                Some(Value::String(id)) => assert_eq!(envelope.message_id(), Some(id.as_str())),
                Some(Value::Number(_)) => assert!(envelope.message_id().is_some()),
                _ => assert_eq!(envelope.message_id(), None),
            }
            if let Some(Value::Number(n)) = fields.get("timestamp") {
                if let Some(ms) = n.as_u64() {
                    assert_eq!(envelope.timestamp_ms(), Some(ms));
                }
            } else {
                assert_eq!(envelope.timestamp_ms(), None);
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
