//! Inputs the fuzz targets found (fuzz/README.md), kept as regression tests.

use bytes::Bytes;
use metigan_webhook::{Envelope, Reason};

/// `envelope` target: a body whose ignored field holds bytes that are not UTF-8 was accepted
/// (serde_json skips ignored strings without checking them). JSON is UTF-8: 400.
#[test]
fn non_utf8_bytes_in_an_ignored_field_are_invalid_payload() {
    let mut body =
        br#"{"event":"ema0,2il.msg_abc123xyz","a":{"recipient":"user@example.c"#.to_vec();
    body.extend_from_slice(&[0xc7; 40]);
    body.extend_from_slice(br#"om"}}"#);
    let err = Envelope::parse(Bytes::from(body)).unwrap_err();
    assert_eq!(err.reason(), Reason::InvalidPayload);
}

/// `envelope` target (a finding about its reference, not the crate): a number too large for
/// an `f64` is still valid JSON; `data` keeps it raw.
#[test]
fn huge_numbers_in_data_are_kept_raw() {
    let body = br#"{"event":"emcil.dined","data":22222222222e2220222222 }"#;
    let envelope = Envelope::parse(Bytes::from_static(body)).unwrap();
    assert_eq!(envelope.event_type().as_str(), "emcil.dined");
    assert_eq!(envelope.data_json(), Some("22222222222e2220222222"));
}

/// `envelope` target: a timestamp like `955E1615` is a valid JSON number that overflows the
/// parser's number type; it must not make the envelope invalid.
#[test]
fn huge_timestamps_are_not_a_reason_to_reject() {
    let body = br#"{"event":"","timestamp":955E1615}"#;
    let envelope = Envelope::parse(Bytes::from_static(body)).unwrap();
    assert_eq!(envelope.timestamp_ms(), None);
}
