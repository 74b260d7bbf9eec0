//! `verify`: the layer's verdict on one request, and when it fails, the likely cause.
//!
//! The verdict is the crate's own ([`Verifier`], [`Envelope::parse`]); the diagnosis then tries
//! the usual mistakes (re-serialised body, secret with whitespace, milliseconds for seconds,
//! ...) to say which one it is. Nothing printed contains the secret; the computed signature is
//! printed only when asked (`--show-expected`).

use std::fmt::Write as _;

use bytes::Bytes;
use metigan_webhook::signature::{SignatureHeader, MAX_HEADER_LEN};
use metigan_webhook::{sign, Envelope, Reason, Verifier};

use crate::json::{self, Strings, Style};

/// What to check.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    /// The secrets as given (possibly with surrounding whitespace: that is diagnosed).
    pub(crate) secrets: Vec<String>,
    /// The `X-Webhook-Signature` value, `None` when absent.
    pub(crate) signature: Option<Vec<u8>>,
    /// The `X-Webhook-Timestamp` value.
    pub(crate) timestamp_header: Option<Vec<u8>>,
    /// The body exactly as received.
    pub(crate) body: Vec<u8>,
    /// The time to check the window against (unix seconds).
    pub(crate) now: u64,
    /// The window (seconds either way), `None` to skip the timestamp check.
    pub(crate) tolerance: Option<u64>,
    /// The body limit in bytes.
    pub(crate) body_limit: usize,
}

/// The outcome: the first line (`ok` or the reason code), then explanations.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// `None` for ok.
    pub(crate) rejected: Option<Reason>,
    /// `key: text` lines printed after the first one.
    pub(crate) lines: Vec<String>,
}

impl Report {
    /// The first line: `ok` or the reason code.
    pub(crate) fn verdict(&self) -> &'static str {
        self.rejected.map_or("ok", Reason::code)
    }
}

/// Runs the check. `Err` is a usage error (a secret that is empty once trimmed).
pub(crate) fn check(input: &Check) -> Result<Report, String> {
    let mut lines = Vec::new();
    let trimmed: Vec<&str> = input.secrets.iter().map(|s| s.trim()).collect();
    for (i, (raw, clean)) in input.secrets.iter().zip(&trimmed).enumerate() {
        if clean.is_empty() {
            return Err(format!("secret #{i} is empty"));
        }
        if raw.len() != clean.len() {
            lines.push(format!(
                "note: secret #{i} has surrounding whitespace ({}); it is also tried without it \
                 to tell whether that is the problem (this crate refuses such a secret at \
                 startup)",
                describe_whitespace(raw)
            ));
        }
    }
    let verifier = Verifier::new(&trimmed)
        .map_err(|e| e.to_string())?
        .danger_disable_timestamp_check();

    // 1. The header.
    let header = match SignatureHeader::parse(
        input.signature.as_deref(),
        input.timestamp_header.as_deref(),
    ) {
        Ok(header) => header,
        Err(rejection) => {
            let reason = rejection.reason();
            lines.push(format!("reason: {}", reason.description()));
            lines.push(format!("likely cause: {}", header_cause(input, reason)));
            return Ok(Report {
                rejected: Some(reason),
                lines,
            });
        }
    };
    let t = header.timestamp();
    let skew = i128::from(t) - i128::from(input.now);
    let skew_text = describe_skew(skew);

    // 2. The window.
    let mut rejected = None;
    if let Some(tolerance) = input.tolerance {
        if skew.unsigned_abs() > u128::from(tolerance) {
            rejected = Some(Reason::TimestampOutOfTolerance);
            lines.push(format!(
                "reason: {}",
                Reason::TimestampOutOfTolerance.description()
            ));
            lines.push(format!(
                "timestamp: t={t} is {skew_text} (now={}, window ±{tolerance} s): off by {} s \
                 beyond the window",
                input.now,
                skew.unsigned_abs() - u128::from(tolerance)
            ));
            lines.push(format!(
                "likely cause: {}",
                window_cause(t, input.now, skew, tolerance)
            ));
        }
    }

    // 3. The body limit.
    if rejected.is_none() && input.body.len() > input.body_limit {
        lines.push(format!("reason: {}", Reason::BodyTooLarge.description()));
        lines.push(format!(
            "likely cause: the body is {} bytes, over the {}-byte limit (raise it with \
             --body-limit here, `body_limit(..)` in the layer)",
            input.body.len(),
            input.body_limit
        ));
        return Ok(Report {
            rejected: Some(Reason::BodyTooLarge),
            lines,
        });
    }

    // 4. The signature (also after a window failure, to tell whether only the time is wrong).
    let signature = verifier.check_body(&header, &input.body);
    let whitespace_match = signature
        .as_ref()
        .ok()
        .filter(|v| input.secrets[v.secret_index()].len() != trimmed[v.secret_index()].len())
        .map(|v| v.secret_index());
    let mismatch_cause = match (&signature, whitespace_match) {
        (Ok(_), None) => None,
        (Ok(_), Some(i)) => Some(format!(
            "secret #{i} has surrounding whitespace ({}): with it removed the signature \
             matches. Metigan signs with the exact secret, so a receiver using the secret as \
             stored computes another signature; remove the whitespace where the secret is \
             kept (.env file, secret manager, a pasted newline)",
            describe_whitespace(&input.secrets[i])
        )),
        (Err(_), _) => Some(mismatch_cause(input, &trimmed, &header)),
    };
    if rejected.is_some() {
        match &mismatch_cause {
            None => lines.push(
                "note: the signature itself matches this body: only the time is refused".into(),
            ),
            Some(cause) => lines.push(format!(
                "note: the signature does not match either ({}): {cause}",
                Reason::SignatureMismatch.code()
            )),
        }
        return Ok(Report { rejected, lines });
    }
    if let Some(cause) = mismatch_cause {
        lines.push(format!(
            "reason: {}",
            Reason::SignatureMismatch.description()
        ));
        lines.push(format!("likely cause: {cause}"));
        return Ok(Report {
            rejected: Some(Reason::SignatureMismatch),
            lines,
        });
    }
    let matched = signature.map(|v| v.secret_index()).unwrap_or_default();

    // 5. The envelope.
    let envelope = match Envelope::parse(Bytes::copy_from_slice(&input.body)) {
        Ok(envelope) => envelope,
        Err(_) => {
            lines.push(format!("reason: {}", Reason::InvalidPayload.description()));
            lines.push(format!("likely cause: {}", payload_cause(&input.body)));
            return Ok(Report {
                rejected: Some(Reason::InvalidPayload),
                lines,
            });
        }
    };
    let mut ok_lines = vec![
        format!(
            "signed at: t={t}, {skew_text}{}",
            input
                .tolerance
                .map_or(" (window not checked)".to_owned(), |w| format!(
                    " (window ±{w} s)"
                ))
        ),
        format!("secret: #{matched} matched"),
        format!("event: {}", envelope.event_type()),
    ];
    if let Some(id) = envelope.message_id() {
        ok_lines.push(format!("messageId: {id}"));
    }
    ok_lines.append(&mut lines);
    Ok(Report {
        rejected: None,
        lines: ok_lines,
    })
}

/// `t=...,v1=...` for each secret (trimmed), over the exact body, at the header's `t` (or
/// `now` when the header has none): what `--show-expected` prints.
pub(crate) fn expected(input: &Check) -> Vec<String> {
    let t = SignatureHeader::parse(
        input.signature.as_deref(),
        input.timestamp_header.as_deref(),
    )
    .map_or(input.now, |h| h.timestamp());
    input
        .secrets
        .iter()
        .enumerate()
        .map(|(i, s)| format!("expected (secret #{i}): {}", sign(s.trim(), t, &input.body)))
        .collect()
}

fn describe_whitespace(secret: &str) -> String {
    let name = |c: char| match c {
        '\n' => "a newline",
        '\r' => "a carriage return",
        '\t' => "a tab",
        ' ' => "a space",
        _ => "whitespace",
    };
    let mut parts = Vec::new();
    if let Some(c) = secret.chars().next().filter(|c| c.is_whitespace()) {
        parts.push(format!("{} at the start", name(c)));
    }
    if let Some(c) = secret.chars().last().filter(|c| c.is_whitespace()) {
        parts.push(format!("{} at the end", name(c)));
    }
    parts.join(", ")
}

/// `"3605 s (1 h 0 min 5 s) in the past"`.
pub(crate) fn describe_skew(skew: i128) -> String {
    let abs = skew.unsigned_abs();
    if abs == 0 {
        return "exactly now".into();
    }
    let direction = if skew < 0 {
        "in the past"
    } else {
        "in the future"
    };
    let mut human = String::new();
    if abs >= 60 {
        let (d, h, m, s) = (abs / 86_400, abs % 86_400 / 3600, abs % 3600 / 60, abs % 60);
        human.push_str(" (");
        if d > 0 {
            let _ = write!(human, "{d} d ");
        }
        if d > 0 || h > 0 {
            let _ = write!(human, "{h} h ");
        }
        let _ = write!(human, "{m} min {s} s)");
    }
    format!("{abs} s{human} {direction}")
}

fn window_cause(t: u64, now: u64, skew: i128, tolerance: u64) -> String {
    if t >= 100_000_000_000 && (t / 1000).abs_diff(now) <= tolerance {
        return "t is in milliseconds: Metigan's t is in unix *seconds* (only the envelope's \
                `timestamp` field is in milliseconds); the sender signed with the wrong unit"
            .into();
    }
    if skew < 0 {
        "a replayed or old request, or a clock that is off. Checking a capture after the fact? \
         Give the time it was received with --now <unix seconds> (listen --save puts it in the \
         file name) or skip the window with --ignore-timestamp. Otherwise compare the clocks of \
         sender and receiver (NTP)"
            .into()
    } else {
        "the sender's clock is ahead of the receiver's (or the receiver's is behind): check NTP \
         on both machines"
            .into()
    }
}

/// The tokens of a signature header, for explanations only (the verdict is the crate's).
struct HeaderTokens<'a> {
    t: Vec<&'a [u8]>,
    v1: Vec<&'a [u8]>,
    other_keys: Vec<String>,
}

fn tokens(raw: &[u8]) -> HeaderTokens<'_> {
    let mut out = HeaderTokens {
        t: Vec::new(),
        v1: Vec::new(),
        other_keys: Vec::new(),
    };
    for token in raw
        .split(|&c| c == b',' || c.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
    {
        let Some(eq) = token.iter().position(|&c| c == b'=') else {
            continue;
        };
        let (key, value) = (&token[..eq], &token[eq + 1..]);
        match key {
            b"t" => out.t.push(value),
            b"v1" if !value.is_empty() => out.v1.push(value),
            b"v1" => {}
            other => out
                .other_keys
                .push(String::from_utf8_lossy(other).into_owned()),
        }
    }
    out
}

const FORMAT: &str = "Metigan's format is `t=<unix seconds>,v1=<64 hex chars>`";

fn header_cause(input: &Check, reason: Reason) -> String {
    let Some(raw) = input.signature.as_deref() else {
        return "there is no X-Webhook-Signature header: not a Metigan delivery, a proxy that \
                dropped or renamed the header, or the wrong header name in your code"
            .into();
    };
    if raw.is_empty() {
        return "the X-Webhook-Signature header is empty".into();
    }
    if raw.len() > MAX_HEADER_LEN {
        return format!(
            "the X-Webhook-Signature header is {} bytes, over the {MAX_HEADER_LEN}-byte limit",
            raw.len()
        );
    }
    let tokens = tokens(raw);
    if reason == Reason::MalformedSignature {
        if tokens.t.len() > 1 {
            return format!(
                "the header has {} `t=` values; exactly one is allowed",
                tokens.t.len()
            );
        }
        if let Some(t) = tokens.t.first() {
            let text = String::from_utf8_lossy(t);
            if all_digits(t) {
                return format!(
                    "`t=` is {text:?}: decimal digits, but too large to fit in an unsigned \
                     64-bit integer (at most {}); {FORMAT}",
                    u64::MAX
                );
            }
            let hint = if text.contains('.') {
                " (fractional seconds?)"
            } else if text.contains('-') && text.contains('T') {
                " (a date, not unix seconds)"
            } else if text.starts_with(['-', '+']) {
                " (a sign is not allowed)"
            } else if text.is_empty() {
                " (empty)"
            } else {
                ""
            };
            return format!(
                "`t=` is {text:?}, not plain decimal digits of unix seconds{hint}; {FORMAT}"
            );
        }
        return match input.timestamp_header.as_deref() {
            None => format!(
                "the header has no `t=` and there is no X-Webhook-Timestamp header; {FORMAT}"
            ),
            Some(ts) if all_digits(ts) => format!(
                "the header has no `t=`, and X-Webhook-Timestamp ({:?}) is decimal digits but \
                 too large to fit in an unsigned 64-bit integer (at most {})",
                String::from_utf8_lossy(ts),
                u64::MAX
            ),
            Some(ts) => format!(
                "the header has no `t=`, and X-Webhook-Timestamp ({:?}) is not plain decimal \
                 digits of unix seconds",
                String::from_utf8_lossy(ts)
            ),
        };
    }
    let found = if tokens.other_keys.is_empty() {
        String::new()
    } else {
        format!(" (other keys found: {})", tokens.other_keys.join(", "))
    };
    format!("the header has no non-empty `v1=` value{found}; {FORMAT}")
}

/// Only ASCII digits, at least one: a number, though perhaps one too large for `u64`.
fn all_digits(value: &[u8]) -> bool {
    !value.is_empty() && value.iter().all(u8::is_ascii_digit)
}

/// Hex of the HMAC of `t.body` with `secret`.
fn mac_hex(secret: &str, t: u64, body: &[u8]) -> String {
    let header = sign(secret, t, body);
    header
        .split_once(",v1=")
        .map(|(_, hex)| hex.to_owned())
        .unwrap_or_default()
}

struct Variant<T> {
    value: T,
    /// `None`: as given; `Some(cause)`: how this variant differs.
    cause: Option<String>,
}

fn secret_variants(secret: &str, raw: &str) -> Vec<Variant<String>> {
    let mut out = vec![Variant {
        value: secret.to_owned(),
        cause: None,
    }];
    if raw != secret {
        out.push(Variant {
            value: raw.to_owned(),
            cause: Some(format!(
                "the request was signed with the secret *including* its surrounding whitespace \
                 ({}): the sender's copy of the secret has it; Metigan signs with the exact \
                 secret",
                describe_whitespace(raw)
            )),
        });
    }
    for (suffix, name) in [
        ("\n", "a trailing newline"),
        ("\r\n", "a trailing CRLF"),
        (" ", "a trailing space"),
    ] {
        out.push(Variant {
            value: format!("{secret}{suffix}"),
            cause: Some(format!(
                "the request was signed with the secret plus {name}: the sender's copy of the \
                 secret has a pasted newline or space; remove it there"
            )),
        });
    }
    if let Some(stripped) = secret.strip_prefix("whsec_") {
        if !stripped.is_empty() {
            out.push(Variant {
                value: stripped.to_owned(),
                cause: Some(
                    "the request was signed with the secret without its `whsec_` prefix: \
                     Metigan signs with the whole string, prefix included"
                        .into(),
                ),
            });
        }
    } else {
        out.push(Variant {
            value: format!("whsec_{secret}"),
            cause: Some(
                "the request was signed with `whsec_` + this secret: the secret you have lost \
                 its `whsec_` prefix; use the whole string"
                    .into(),
            ),
        });
    }
    out
}

fn timestamp_variants(t: u64, timestamp_header: Option<&[u8]>) -> Vec<Variant<u64>> {
    let mut out = vec![Variant {
        value: t,
        cause: None,
    }];
    if let Some(other) = timestamp_header
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&v| v != t)
    {
        out.push(Variant {
            value: other,
            cause: Some(format!(
                "the request was signed with X-Webhook-Timestamp's value ({other}), not the \
                 header's t={t}: the two must be the same"
            )),
        });
    }
    if let Some(ms) = t.checked_mul(1000) {
        out.push(Variant {
            value: ms,
            cause: Some(
                "the request was signed with the timestamp in milliseconds while `t` is in \
                 seconds: Metigan signs `<t in seconds>.<body>`"
                    .into(),
            ),
        });
    }
    if t >= 100_000_000_000 {
        out.push(Variant {
            value: t / 1000,
            cause: Some(
                "the request was signed with the timestamp in seconds while `t` is in \
                 milliseconds"
                    .into(),
            ),
        });
    }
    out
}

const REBUILT: &str = "the body is valid JSON but not byte-identical to what was signed: the \
    signature matches the same JSON";
const REPARSED: &str = "so the body was parsed and re-serialised before it was checked or \
    captured (a JSON body parser such as express.json(), JSON.stringify, a logging or proxy \
    tool). Verify the raw bytes exactly as received (express.raw(), axum's `Bytes`, this \
    crate's layer)";

fn body_variants(body: &[u8]) -> Vec<Variant<Vec<u8>>> {
    let mut out = vec![Variant {
        value: body.to_vec(),
        cause: None,
    }];
    let mut push = |value: Vec<u8>, cause: String| {
        if value != body && !out.iter().any(|v| v.value == value) {
            out.push(Variant {
                value,
                cause: Some(cause),
            });
        }
    };
    // Byte-level changes first: when one explains the mismatch, it is the precise answer.
    if let Some(stripped) = body.strip_suffix(b"\n") {
        let stripped = stripped.strip_suffix(b"\r").unwrap_or(stripped);
        push(
            stripped.to_vec(),
            "the signed body has no final newline: one was added to this copy (an editor, \
             `echo`, a logger); compare the raw bytes"
                .into(),
        );
    } else {
        push(
            [body, b"\n"].concat(),
            "the signed body ends with a newline that this copy lacks: it was trimmed \
             somewhere; compare the raw bytes"
                .into(),
        );
    }
    if body.windows(2).any(|w| w == b"\r\n") {
        let lf: Vec<u8> = String::from_utf8_lossy(body).replace("\r\n", "\n").into();
        push(
            lf,
            "line endings were converted (the signed body has LF, this copy CRLF)".into(),
        );
    } else if body.contains(&b'\n') {
        let crlf: Vec<u8> = String::from_utf8_lossy(body).replace('\n', "\r\n").into();
        push(
            crlf,
            "line endings were converted (the signed body has CRLF, this copy LF)".into(),
        );
    }
    if let Some(stripped) = body.strip_prefix("\u{feff}".as_bytes()) {
        push(
            stripped.to_vec(),
            "a byte-order mark (BOM) was added in front of this copy of the body".into(),
        );
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let styles: [(Style, &str); 6] = [
            (
                Style::COMPACT,
                "written compactly (as `JSON.stringify(JSON.parse(body))` writes it)",
            ),
            (
                Style {
                    strings: Strings::AsIs,
                    ..Style::COMPACT
                },
                "with the whitespace between its tokens removed",
            ),
            (Style::PRETTY, "pretty-printed with a 2-space indent"),
            (
                Style {
                    indent: Some("    "),
                    ..Style::PRETTY
                },
                "pretty-printed with a 4-space indent",
            ),
            (
                Style {
                    indent: Some("\t"),
                    ..Style::PRETTY
                },
                "pretty-printed with tabs",
            ),
            (
                Style {
                    indent: None,
                    colon: ": ",
                    comma: ", ",
                    strings: Strings::Normalized,
                },
                "written with a space after `:` and `,` (Python's json.dumps)",
            ),
        ];
        for (style, label) in styles {
            if let Some(rebuilt) = json::reformat(text, style) {
                push(
                    rebuilt.clone().into_bytes(),
                    format!("{REBUILT} {label}, {REPARSED}"),
                );
                push(
                    format!("{rebuilt}\n").into_bytes(),
                    format!("{REBUILT} {label} with a final newline, {REPARSED}"),
                );
            }
        }
    }
    out
}

fn mismatch_cause(input: &Check, trimmed: &[&str], header: &SignatureHeader) -> String {
    let raw = input.signature.as_deref().unwrap_or_default();
    let tokens = tokens(raw);
    let v1: Vec<String> = tokens
        .v1
        .iter()
        .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
        .collect();
    let bad_format: Vec<String> = v1
        .iter()
        .enumerate()
        .filter(|(_, v)| v.len() != 64 || !v.bytes().all(|c| c.is_ascii_hexdigit()))
        .map(|(i, v)| {
            if v.len() == 64 {
                format!("v1 value #{i} is not hexadecimal")
            } else {
                format!("v1 value #{i} is {} characters long, not 64", v.len())
            }
        })
        .collect();
    if !bad_format.is_empty() && bad_format.len() == v1.len() {
        return format!(
            "{}: the signature was truncated or is not hex (base64?); {FORMAT}",
            bad_format.join("; ")
        );
    }

    // Every combination of the usual mistakes; the one with the fewest changes wins.
    let t = header.timestamp();
    let times = timestamp_variants(t, input.timestamp_header.as_deref());
    let bodies = body_variants(&input.body);
    let mut best: Option<(usize, Vec<&str>)> = None;
    let secret_lists: Vec<Vec<Variant<String>>> = trimmed
        .iter()
        .zip(&input.secrets)
        .map(|(clean, raw)| secret_variants(clean, raw))
        .collect();
    for secrets in &secret_lists {
        for secret in secrets {
            for time in &times {
                for body in &bodies {
                    let causes: Vec<&str> = [&secret.cause, &time.cause, &body.cause]
                        .into_iter()
                        .filter_map(|c| c.as_deref())
                        .collect();
                    if causes.is_empty() || best.as_ref().is_some_and(|(n, _)| *n <= causes.len()) {
                        continue;
                    }
                    let mac = mac_hex(&secret.value, time.value, &body.value);
                    if v1.contains(&mac) {
                        best = Some((causes.len(), causes));
                    }
                }
            }
        }
    }
    if let Some((_, causes)) = best {
        return causes.join("; and ");
    }

    let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&input.body).is_ok();
    let mut cause = String::from(
        "the wrong secret (each Metigan webhook has its own: one from another environment or \
         webhook, or an old one after a rotation?)",
    );
    if is_json {
        cause.push_str(
            ", or a body changed before it was captured beyond a plain re-serialisation (keys \
             reordered, values re-encoded). Neither this body nor its usual re-serialisations \
             (compact, pretty-printed, other spacing, with or without a final newline) match \
             with the given secret(s), nor the usual secret mistakes (whitespace, `whsec_` \
             prefix)",
        );
        let pretty = input.body.windows(2).any(|w| w == b"\n " || w == b"\n\t");
        if pretty {
            cause.push_str(
                ". Note: this body is pretty-printed while Metigan sends compact JSON: it was \
                 probably re-serialised (with keys reordered?)",
            );
        }
    } else {
        cause.push_str(
            ", or a body that is not what was sent (it is not even valid JSON: truncated, \
             re-encoded, or another file?)",
        );
    }
    if !bad_format.is_empty() {
        cause.push_str(&format!(". Also: {}", bad_format.join("; ")));
    }
    cause
}

fn payload_cause(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Err(e) => format!("the body is not valid JSON ({e})"),
        Ok(serde_json::Value::Object(map)) => match map.get("event") {
            None => "the JSON object has no `event` field".into(),
            Some(other) => format!(
                "`event` is {}, not a string",
                match other {
                    serde_json::Value::Null => "null",
                    serde_json::Value::Bool(_) => "a boolean",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Array(_) => "an array",
                    _ => "an object",
                }
            ),
        },
        Ok(serde_json::Value::Array(_)) => "the body is a JSON array, not an object".into(),
        Ok(_) => "the body is a JSON scalar, not an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_diagnose_test";
    const NOW: u64 = 1_700_000_000;
    const BODY: &str = r#"{"event":"email.delivered","messageId":"m1","data":{"recipient":"a@b.c","note":"caf\u00e9"},"timestamp":1700000000000}"#;

    fn input(header: Option<String>, body: &str) -> Check {
        Check {
            secrets: vec![SECRET.into()],
            signature: header.map(String::into_bytes),
            timestamp_header: None,
            body: body.as_bytes().to_vec(),
            now: NOW,
            tolerance: Some(300),
            body_limit: 1024 * 1024,
        }
    }

    fn run(c: &Check) -> Report {
        let report = check(c).unwrap();
        // Never the secret.
        for line in &report.lines {
            assert!(!line.contains("diagnose_test"), "{line}");
        }
        report
    }

    fn cause(report: &Report) -> String {
        report.lines.join("\n")
    }

    #[test]
    fn ok() {
        let r = run(&input(Some(sign(SECRET, NOW - 12, BODY.as_bytes())), BODY));
        assert_eq!(r.verdict(), "ok");
        assert!(cause(&r).contains("12 s in the past"), "{}", cause(&r));
        assert!(cause(&r).contains("messageId: m1"));
    }

    #[test]
    fn re_serialised_bodies_are_recognised() {
        let header = sign(SECRET, NOW, BODY.as_bytes());
        // Escapes kept: a re-serialiser that rewrites `\u00e9` as `é` cannot be undone.
        let pretty = json::pretty(BODY).unwrap();
        let r = run(&input(Some(header.clone()), &pretty));
        assert_eq!(r.verdict(), "signature_mismatch");
        assert!(cause(&r).contains("not byte-identical"), "{}", cause(&r));
        assert!(cause(&r).contains("whitespace between its tokens removed"));

        let with_newline = format!("{BODY}\n");
        let r = run(&input(Some(header), &with_newline));
        assert!(cause(&r).contains("final newline"), "{}", cause(&r));
    }

    #[test]
    fn whitespace_secrets_are_recognised_both_ways() {
        // Our copy has the newline.
        let mut check = input(Some(sign(SECRET, NOW, BODY.as_bytes())), BODY);
        check.secrets = vec![format!("{SECRET}\n")];
        let r = run(&check);
        assert_eq!(r.verdict(), "signature_mismatch");
        assert!(
            cause(&r).contains("surrounding whitespace"),
            "{}",
            cause(&r)
        );
        assert!(cause(&r).contains("a newline at the end"), "{}", cause(&r));

        // The sender's copy has it.
        let check = input(
            Some(sign(&format!("{SECRET}\n"), NOW, BODY.as_bytes())),
            BODY,
        );
        let r = run(&check);
        assert!(
            cause(&r).contains("plus a trailing newline"),
            "{}",
            cause(&r)
        );
    }

    #[test]
    fn stale_and_future_say_by_how_much() {
        let r = run(&input(
            Some(sign(SECRET, NOW - 3605, BODY.as_bytes())),
            BODY,
        ));
        assert_eq!(r.verdict(), "timestamp_out_of_tolerance");
        let text = cause(&r);
        assert!(
            text.contains("3605 s (1 h 0 min 5 s) in the past"),
            "{text}"
        );
        assert!(text.contains("off by 3305 s"), "{text}");
        assert!(text.contains("only the time is refused"), "{text}");

        let r = run(&input(Some(sign(SECRET, NOW + 900, b"x")), BODY));
        let text = cause(&r);
        assert!(text.contains("900 s (15 min 0 s) in the future"), "{text}");
        assert!(text.contains("does not match either"), "{text}");

        let r = run(&input(
            Some(sign(SECRET, NOW * 1000, BODY.as_bytes())),
            BODY,
        ));
        assert!(cause(&r).contains("milliseconds"), "{}", cause(&r));
    }

    #[test]
    fn header_problems() {
        let r = run(&input(None, BODY));
        assert_eq!(r.verdict(), "missing_signature");
        let r = run(&input(Some("t=1700000000,v0=abc".into()), BODY));
        assert_eq!(r.verdict(), "missing_signature");
        assert!(cause(&r).contains("other keys found: v0"), "{}", cause(&r));
        let r = run(&input(Some("t=1700000000.5,v1=abc".into()), BODY));
        assert_eq!(r.verdict(), "malformed_signature");
        assert!(cause(&r).contains("fractional"), "{}", cause(&r));
        let r = run(&input(Some("v1=abc".into()), BODY));
        assert!(
            cause(&r).contains("no X-Webhook-Timestamp"),
            "{}",
            cause(&r)
        );
        // All digits, one past u64::MAX and far past it: too large, not "not digits".
        for t in ["18446744073709551616", "99999999999999999999"] {
            let r = run(&input(Some(format!("t={t},v1=abc")), BODY));
            assert_eq!(r.verdict(), "malformed_signature");
            let text = cause(&r);
            assert!(
                text.contains("too large to fit in an unsigned 64-bit integer"),
                "{text}"
            );
            assert!(!text.contains("not plain decimal digits"), "{text}");
            let mut check = input(Some("v1=abc".into()), BODY);
            check.timestamp_header = Some(t.as_bytes().to_vec());
            let r = run(&check);
            assert_eq!(r.verdict(), "malformed_signature");
            assert!(
                cause(&r).contains("too large to fit in an unsigned 64-bit integer"),
                "{}",
                cause(&r)
            );
        }
        let r = run(&input(Some("t=12a,v1=abc".into()), BODY));
        assert!(
            cause(&r).contains("not plain decimal digits"),
            "{}",
            cause(&r)
        );
        let r = run(&input(Some(format!("t={NOW},v1=abcd")), BODY));
        assert_eq!(r.verdict(), "signature_mismatch");
        assert!(cause(&r).contains("4 characters long"), "{}", cause(&r));
    }

    #[test]
    fn wrong_secret_and_payload() {
        let r = run(&input(
            Some(sign("whsec_other", NOW, BODY.as_bytes())),
            BODY,
        ));
        assert_eq!(r.verdict(), "signature_mismatch");
        assert!(cause(&r).contains("the wrong secret"), "{}", cause(&r));

        let body = r#"{"type":"email.sent"}"#;
        let r = run(&input(Some(sign(SECRET, NOW, body.as_bytes())), body));
        assert_eq!(r.verdict(), "invalid_payload");
        assert!(cause(&r).contains("no `event` field"), "{}", cause(&r));
    }

    #[test]
    fn expected_is_only_computed_on_request() {
        let check = input(Some(sign(SECRET, NOW, BODY.as_bytes())), BODY);
        let lines = expected(&check);
        assert_eq!(
            lines,
            vec![format!(
                "expected (secret #0): {}",
                sign(SECRET, NOW, BODY.as_bytes())
            )]
        );
        assert_eq!(describe_skew(0), "exactly now");
        assert_eq!(
            describe_skew(90_061),
            "90061 s (1 d 1 h 1 min 1 s) in the future"
        );
    }
}
