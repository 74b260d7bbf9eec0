//! Typed events: every event type maps to its variant, the typed fields agree with the lenient
//! accessors over generated events (property test), and the axum extractor behind the layer.

mod common;

use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use metigan_webhook::testing::{samples, SampleEvent};
use metigan_webhook::{
    BounceType, Envelope, EventType, MetiganSignatureLayer, TypedEvent, VerifiedEvent,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use common::{post as http_post, post_signed, serve_axum};

fn verified(body: impl Into<Bytes>) -> VerifiedEvent {
    let envelope = Envelope::parse(body.into()).expect("a valid envelope");
    VerifiedEvent::new(envelope, 1_700_000_000, None, 0)
}

#[test]
fn every_sample_maps_to_its_variant() {
    for sample in samples() {
        let event = verified(sample.to_body());
        let typed = event.typed();
        assert_eq!(&typed.event_type(), sample.event_type());
        let family = sample.event_type().as_str().split('.').next().unwrap();
        match family {
            "email" => {
                let data = typed.email().expect("email data");
                assert_eq!(data.recipient.as_deref(), Some("jane@example.com"));
                assert_eq!(data.from.as_deref(), Some("Acme <hello@acme.example>"));
            }
            "contact" => {
                let data = typed.contact().expect("contact data");
                assert_eq!(data.contact_id.as_deref(), Some("ct_9b2e5f"));
                assert_eq!(data.email.as_deref(), Some("jane@example.com"));
            }
            "audience" => {
                let data = typed.audience().expect("audience data");
                assert_eq!(data.audience_id.as_deref(), Some("aud_3c8a11"));
            }
            other => panic!("unexpected family {other}"),
        }
    }
    let click = verified(SampleEvent::new(EventType::EmailClicked).to_body()).typed();
    let TypedEvent::EmailClicked(click) = click else {
        panic!("{click:?}")
    };
    assert_eq!(
        click.clicked_url(),
        Some("https://acme.example/getting-started?utm_source=email")
    );
    let meta = click.metadata.as_ref().unwrap();
    assert_eq!(meta.ip_address.as_deref(), Some("203.0.113.24"));
    let updated = verified(SampleEvent::new(EventType::ContactUpdated).to_body()).typed();
    assert_eq!(
        updated.contact().unwrap().extra["changes"],
        json!(["firstName"])
    );
    let audience = verified(SampleEvent::new(EventType::AudienceUpdated).to_body()).typed();
    assert_eq!(audience.audience().unwrap().contact_count, Some(1280));
}

#[test]
fn bounce_types() {
    for (sent, expected) in [
        (json!("hard"), Some(BounceType::Hard)),
        (json!("Hard"), Some(BounceType::Hard)),
        (json!("SOFT"), Some(BounceType::Soft)),
        (
            json!("transient"),
            Some(BounceType::Other("transient".into())),
        ),
        (json!(5), None),
        (json!(null), None),
    ] {
        let body = SampleEvent::new(EventType::EmailBounced)
            .with_field("bounceType", sent.clone())
            .to_body();
        let TypedEvent::EmailBounced(bounce) = verified(body).typed() else {
            panic!("not a bounce")
        };
        assert_eq!(bounce.bounce_type(), expected.as_ref(), "{sent}");
        assert_eq!(bounce.is_hard_bounce(), expected == Some(BounceType::Hard));
    }
    // Only in the metadata, as some sources send it.
    let body = r#"{"event":"email.bounced","data":{"metadata":{"bounceType":"soft","bounceReason":"mailbox full"}}}"#;
    let TypedEvent::EmailBounced(bounce) = verified(body).typed() else {
        panic!("not a bounce")
    };
    assert_eq!(bounce.bounce_type(), Some(&BounceType::Soft));
    assert_eq!(bounce.bounce_reason(), Some("mailbox full"));
}

#[test]
fn unknown_types_carry_their_raw_data() {
    let body = r#"{"event":"email.teleported","data":{"planet": "Mars" ,"n":1e3}}"#;
    let TypedEvent::Unknown(unknown) = verified(body).typed() else {
        panic!("not unknown")
    };
    assert_eq!(unknown.event, "email.teleported");
    assert_eq!(unknown.data_json(), Some(r#"{"planet": "Mars" ,"n":1e3}"#));
    let TypedEvent::Unknown(bare) = verified(r#"{"event":"x"}"#).typed() else {
        panic!("not unknown")
    };
    assert_eq!(bare.data_json(), None);
}

#[test]
fn odd_data_never_fails() {
    for data in ["null", "\"text\"", "[1,2]", "7", "{}"] {
        let body = format!(r#"{{"event":"email.sent","data":{data}}}"#);
        let typed = verified(body).typed();
        assert_eq!(typed.email(), Some(&Default::default()), "{data}");
    }
    let typed = verified(r#"{"event":"contact.created"}"#).typed();
    assert_eq!(typed.contact(), Some(&Default::default()));
}

#[test]
fn data_a_value_refuses_still_gives_the_accessors_fields() {
    // A number beyond f64 and a lone surrogate: `serde_json::Value` refuses both.
    for odd in ["1e400", r#""\ud800""#] {
        let body = format!(
            r#"{{"event":"email.clicked","data":{{"recipient":"a@b.c","subject":"s","x":{odd},"metadata":{{"url":"https://u"}}}}}}"#
        );
        let event = verified(body);
        assert_eq!(event.data(), &Value::Null);
        let typed = event.typed();
        let data = typed.email().unwrap();
        assert_eq!(data.recipient.as_deref(), Some("a@b.c"), "{odd}");
        assert_eq!(data.subject.as_deref(), Some("s"));
        assert_eq!(data.clicked_url(), Some("https://u"));
        assert!(data.extra.is_empty());
    }
}

#[test]
fn serializes_back_to_metigan_names() {
    let typed = verified(SampleEvent::new(EventType::EmailBounced).to_body()).typed();
    let value = serde_json::to_value(typed.email().unwrap()).unwrap();
    assert_eq!(value["bounceType"], "hard");
    assert_eq!(value["userId"], "usr_7d41c2");
    assert!(value["metadata"]["bounceReason"].is_string());
}

// --- The property test -------------------------------------------------------------------

/// The members a generated `data` may have: every one some struct or accessor reads, and one
/// that none does.
const KEYS: &[&str] = &[
    "recipient",
    "email",
    "subject",
    "status",
    "userId",
    "from",
    "url",
    "bounceType",
    "bounceReason",
    "contactId",
    "firstName",
    "lastName",
    "audienceId",
    "name",
    "contactCount",
    "metadata",
    "custom",
];

const META_KEYS: &[&str] = &[
    "url",
    "bounceType",
    "bounceReason",
    "userId",
    "userAgent",
    "ipAddress",
    "recipient",
    "custom",
];

/// A JSON value's text: strings (with escapes and non-ASCII), numbers of every kind, and the
/// other JSON types.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9 @./é\"\\\\]{0,10}".prop_map(|s| Value::from(s).to_string()),
        2 => prop::sample::select(vec!["hard", "Soft", "HARD", "other"])
            .prop_map(|s| Value::from(s).to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => Just("1.5".to_owned()),
        1 => Just("true".to_owned()),
        1 => Just("null".to_owned()),
        1 => Just(r#"["a",{"b":1}]"#.to_owned()),
        1 => Just(r#"{"k":"v"}"#.to_owned()),
    ]
}

/// An object's text from `(key, value)` pairs, keys possibly repeated.
fn object(pairs: Vec<(&str, String)>) -> String {
    let members: Vec<String> = pairs
        .into_iter()
        .map(|(key, value)| format!("{}:{value}", Value::from(key)))
        .collect();
    format!("{{{}}}", members.join(","))
}

fn metadata() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(META_KEYS), scalar()), 0..6).prop_map(object)
}

/// `data`: mostly an object (members possibly repeated, `metadata` an object or not),
/// sometimes another JSON value.
fn data() -> impl Strategy<Value = String> {
    let member = (prop::sample::select(KEYS), scalar(), metadata()).prop_map(|(key, v, m)| {
        if key == "metadata" && !v.starts_with('n') && !v.starts_with('t') {
            (key, m)
        } else {
            (key, v)
        }
    });
    // Half the objects end with a `metadata` object, so members of both levels meet often.
    let members = (
        prop::collection::vec(member, 0..8),
        prop::option::of(metadata()),
    );
    prop_oneof![
        9 => members.prop_map(|(mut pairs, meta)| {
            pairs.extend(meta.map(|meta| ("metadata", meta)));
            object(pairs)
        }),
        1 => scalar(),
    ]
}

fn event_name() -> impl Strategy<Value = String> {
    let mut names: Vec<String> = EventType::KNOWN
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    names.push("email.teleported".to_owned());
    prop::sample::select(names)
}

/// `map[key]` when it is a string.
fn str_of<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// `map.metadata[key]` when both are there and the value is a string.
fn meta_str_of<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get("metadata")?.as_object()?.get(key)?.as_str()
}

/// Every member of `data` the struct does not name is in `extra`, with its value.
fn assert_extra(
    data: &Map<String, Value>,
    named: &[&str],
    extra: &Map<String, Value>,
) -> Result<(), TestCaseError> {
    let expected: Map<String, Value> = data
        .iter()
        .filter(|(key, _)| !named.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    prop_assert_eq!(extra, &expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn typed_fields_agree_with_the_lenient_accessors(name in event_name(), data in data()) {
        let body = format!(r#"{{"event":{},"messageId":"m","data":{data}}}"#, Value::from(name.as_str()));
        let event = verified(body);
        let typed = event.typed();
        prop_assert_eq!(&typed.event_type(), event.event_type());
        let empty = Map::new();
        let object = event.data().as_object().unwrap_or(&empty);
        if let Some(d) = typed.email() {
            prop_assert_eq!(d.recipient.as_deref().or(str_of(&d.extra, "email")), event.recipient());
            prop_assert_eq!(d.subject.as_deref(), event.subject());
            prop_assert_eq!(d.status.as_deref(), event.status());
            prop_assert_eq!(d.user_id(), event.user_id());
            prop_assert_eq!(d.clicked_url(), event.clicked_url());
            prop_assert_eq!(d.bounce_reason(), event.bounce_reason());
            prop_assert_eq!(d.bounce_type().cloned(), event.bounce_type().map(BounceType::from));
            prop_assert_eq!(d.is_hard_bounce(), event.is_hard_bounce());
            prop_assert_eq!(d.from.as_deref(), str_of(object, "from"));
            prop_assert_eq!(
                d.metadata.as_ref().and_then(|m| m.user_agent.as_deref()),
                meta_str_of(object, "userAgent")
            );
            prop_assert_eq!(d.metadata.is_some(), object.get("metadata").is_some_and(Value::is_object));
            if let (Some(meta), Some(Value::Object(raw))) = (&d.metadata, object.get("metadata")) {
                let named = ["url", "bounceType", "bounceReason", "userId", "userAgent", "ipAddress"];
                assert_extra(raw, &named, &meta.extra)?;
            }
            let named = [
                "recipient", "subject", "status", "userId", "from", "url", "bounceType",
                "bounceReason", "metadata",
            ];
            assert_extra(object, &named, &d.extra)?;
        } else if let Some(d) = typed.contact() {
            prop_assert_eq!(str_of(&d.extra, "recipient").or(d.email.as_deref()), event.recipient());
            prop_assert_eq!(d.status.as_deref(), event.status());
            prop_assert_eq!(str_of(&d.extra, "subject"), event.subject());
            prop_assert_eq!(d.contact_id.as_deref(), str_of(object, "contactId"));
            prop_assert_eq!(d.first_name.as_deref(), str_of(object, "firstName"));
            prop_assert_eq!(d.last_name.as_deref(), str_of(object, "lastName"));
            prop_assert_eq!(d.audience_id.as_deref(), str_of(object, "audienceId"));
            let named = ["contactId", "email", "firstName", "lastName", "audienceId", "status"];
            assert_extra(object, &named, &d.extra)?;
        } else if let Some(d) = typed.audience() {
            prop_assert_eq!(str_of(&d.extra, "recipient").or(str_of(&d.extra, "email")), event.recipient());
            prop_assert_eq!(str_of(&d.extra, "status"), event.status());
            prop_assert_eq!(
                str_of(&d.extra, "userId").or(meta_str_of(&d.extra, "userId")),
                event.user_id()
            );
            prop_assert_eq!(d.audience_id.as_deref(), str_of(object, "audienceId"));
            prop_assert_eq!(d.name.as_deref(), str_of(object, "name"));
            prop_assert_eq!(d.contact_count, object.get("contactCount").and_then(Value::as_u64));
            assert_extra(object, &["audienceId", "name", "contactCount"], &d.extra)?;
        } else if let TypedEvent::Unknown(unknown) = &typed {
            prop_assert_eq!(unknown.data_json(), event.data_json());
        } else {
            prop_assert!(false, "no family for {:?}", typed.event_type());
        }
    }
}

// --- axum ----------------------------------------------------------------------------------

const SECRET: &str = "whsec_typed_test";

async fn handler(event: TypedEvent) -> String {
    match event {
        TypedEvent::EmailBounced(bounce) => format!(
            "bounce|{}|{}",
            bounce.bounce_type().map_or("-", BounceType::as_str),
            bounce.recipient.as_deref().unwrap_or("-")
        ),
        TypedEvent::Unknown(unknown) => format!("unknown|{}", unknown.event),
        other => format!("other|{}", other.event_type()),
    }
}

#[tokio::test]
async fn axum_extractor_behind_the_layer() {
    let layer = MetiganSignatureLayer::new(SECRET).unwrap();
    let app = Router::new()
        .route("/hook", post(handler).route_layer(layer))
        .route("/bare", post(handler));
    let addr = serve_axum(app).await;
    let bounce = SampleEvent::new(EventType::EmailBounced).to_body();
    let bounce = std::str::from_utf8(&bounce).unwrap();
    let answer = post_signed(addr, "/hook", SECRET, bounce).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), "bounce|hard|jane@example.com");
    let answer = post_signed(addr, "/hook", SECRET, r#"{"event":"email.teleported"}"#).await;
    assert_eq!(answer.text(), "unknown|email.teleported");
    let answer = post_signed(addr, "/hook", SECRET, r#"{"event":"email.sent","data":7}"#).await;
    assert_eq!(answer.text(), "other|email.sent");
    // Forged: the layer answers, the handler never runs.
    let forged = post_signed(addr, "/hook", "whsec_attacker", bounce).await;
    assert_eq!(forged.status, 401);
    // Without the layer the extractor refuses with 500 (a server bug, not the sender's).
    let bare = http_post(addr, "/bare", &[], bounce.to_owned()).await;
    assert_eq!(bare.status, 500);
}
