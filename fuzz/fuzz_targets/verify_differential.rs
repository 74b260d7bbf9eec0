//! The whole verifier on arbitrary headers, body, secrets, clock and tolerance, against a
//! straightforward reference implementation of DESIGN.md section 2 written here: the verdicts
//! (reason, signed timestamp, matching secret) must be equal.
//!
//! Input, one field per line: `now`, `tolerance`, the secrets separated by 0x1f, `H<signature
//! header>` (absent without the `H`), `T<timestamp header>` (absent without the `T`), then
//! the body (the rest, newlines included).
#![no_main]

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use metigan_webhook::Verifier;
use sha2::Sha256;

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Config,
    Ok { t: u64, secret: usize },
    Reject(&'static str),
}

fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn reference(
    secrets: &[&str],
    signature: Option<&[u8]>,
    timestamp: Option<&[u8]>,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Verdict {
    let bad_secret = |s: &&str| {
        s.is_empty()
            || s.chars().next().is_some_and(char::is_whitespace)
            || s.chars().last().is_some_and(char::is_whitespace)
    };
    if secrets.is_empty() || secrets.iter().any(bad_secret) {
        return Verdict::Config;
    }
    let Some(header) = signature.filter(|h| !h.is_empty()) else {
        return Verdict::Reject("missing_signature");
    };
    if header.len() > 4096 {
        return Verdict::Reject("malformed_signature");
    }
    let mut ts: Vec<&[u8]> = Vec::new();
    let mut v1: Vec<&[u8]> = Vec::new();
    for token in header.split(|c| *c == b',' || c.is_ascii_whitespace()) {
        let Some(eq) = token.iter().position(|c| *c == b'=') else {
            continue;
        };
        let (key, value) = (&token[..eq], &token[eq + 1..]);
        if key == b"t" {
            ts.push(value);
        } else if key == b"v1" && !value.is_empty() {
            v1.push(value);
        }
    }
    let t = match ts.as_slice() {
        [] => timestamp.and_then(digits),
        [one] => digits(one),
        _ => None,
    };
    let Some(t) = t else {
        return Verdict::Reject("malformed_signature");
    };
    if v1.is_empty() {
        return Verdict::Reject("missing_signature");
    }
    v1.truncate(16);
    if now.abs_diff(t) > tolerance {
        return Verdict::Reject("timestamp_out_of_tolerance");
    }
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    for (i, secret) in secrets.iter().enumerate() {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&message);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if v1.iter().any(|v| v.to_ascii_lowercase() == hex.as_bytes()) {
            return Verdict::Ok { t, secret: i };
        }
    }
    Verdict::Reject("signature_mismatch")
}

fn ours(
    secrets: &[&str],
    signature: Option<&[u8]>,
    timestamp: Option<&[u8]>,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Verdict {
    let Ok(verifier) = Verifier::new(secrets) else {
        return Verdict::Config;
    };
    let verifier = verifier.with_tolerance(Duration::from_secs(tolerance));
    match verifier.verify(signature, timestamp, body, now) {
        Ok(v) => Verdict::Ok {
            t: v.timestamp(),
            secret: v.secret_index(),
        },
        Err(rejection) => Verdict::Reject(rejection.reason().code()),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(6, |b| *b == b'\n');
    let mut next = || fields.next().unwrap_or_default();
    let now = digits(next()).unwrap_or(1_700_000_000);
    let tolerance = digits(next()).unwrap_or(300);
    let Ok(secrets) = std::str::from_utf8(next()) else {
        return;
    };
    let secrets: Vec<&str> = if secrets.is_empty() {
        Vec::new()
    } else {
        secrets.split('\u{1f}').take(4).collect()
    };
    let signature = next().strip_prefix(b"H");
    let timestamp = next().strip_prefix(b"T");
    let body = next();
    let expected = reference(&secrets, signature, timestamp, body, now, tolerance);
    let got = ours(&secrets, signature, timestamp, body, now, tolerance);
    assert_eq!(got, expected);
});
