//! The pure core: parsing `X-Webhook-Signature`, the timestamp window and the HMAC.
//!
//! Nothing here knows about HTTP or Tower, so it can be fuzzed, benchmarked and reused on its
//! own. The layer is a thin shell around [`Verifier::check_header`] and
//! [`Verifier::check_body`].
//!
//! # Example
//!
//! ```
//! use metigan_webhook::{sign, Verifier, Reason};
//!
//! let verifier = Verifier::new(["test_signature_key"]).unwrap();
//! let body = br#"{"event":"email.delivered","messageId":"m1","data":{}}"#;
//! let header = sign("test_signature_key", 1_700_000_000, body);
//!
//! let ok = verifier.verify(Some(header.as_bytes()), None, body, 1_700_000_010).unwrap();
//! assert_eq!(ok.timestamp(), 1_700_000_000);
//! assert_eq!(ok.secret_index(), 0);
//!
//! let err = verifier.verify(Some(header.as_bytes()), None, b"{}", 1_700_000_010).unwrap_err();
//! assert_eq!(err.reason(), Reason::SignatureMismatch);
//! ```

use crate::config_error::ConfigError;
use std::fmt;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::rejection::{Reason, Rejection};

type HmacSha256 = Hmac<Sha256>;

/// Longest signature header accepted, in bytes (4 KiB): a longer one is `malformed_signature`.
pub const MAX_HEADER_LEN: usize = 4096;
/// How many non-empty `v1` values are considered; later ones are ignored.
pub const MAX_SIGNATURES: usize = 16;
/// The default timestamp tolerance: five minutes either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Computes the `X-Webhook-Signature` header value Metigan would send for `body` signed with
/// `secret` at `timestamp` (unix seconds): `t=<timestamp>,v1=<hex HMAC-SHA256>`.
///
/// Use it to test your own handlers. The secret is used verbatim as UTF-8 bytes, exactly as
/// Metigan does (no base64 decoding, even for `whsec_` secrets).
///
/// ```
/// let header = metigan_webhook::sign("test_signature_key", 1705314600,
///     br#"{"event":"email.delivered","messageId":"msg_abc123xyz","data":{"recipient":"user@example.com"}}"#);
/// assert_eq!(header, "t=1705314600,v1=31ef03b8cb313a20ce3ccb8bc28811a7d0b85b576a26f6a573152fae6219f30e");
/// ```
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mac = mac_of(
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length"),
        timestamp,
        body,
    );
    let mut out = String::with_capacity(16 + 20 + 64);
    out.push_str("t=");
    out.push_str(itoa_u64(timestamp, &mut [0u8; 20]));
    out.push_str(",v1=");
    push_hex(&mut out, &mac);
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes the lowercase hex of `bytes` into `out`, which is twice as long.
pub(crate) fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
}

/// Appends the lowercase hex of `bytes` to `out`.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    out.extend(bytes.iter().flat_map(|byte| {
        [
            char::from(HEX[usize::from(byte >> 4)]),
            char::from(HEX[usize::from(byte & 0xf)]),
        ]
    }));
}

/// Writes `n` in decimal into `buf`, returning the digits (no allocation).
fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// HMAC-SHA256 over `t`, `.`, `body`, fed incrementally: no concatenated copy of the body.
fn mac_of(mut mac: HmacSha256, timestamp: u64, body: &[u8]) -> [u8; 32] {
    mac.update(itoa_u64(timestamp, &mut [0u8; 20]).as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// One configured secret with its HMAC key state prepared once.
#[derive(Clone)]
struct Key {
    mac: HmacSha256,
}

/// Verifies Metigan signatures: holds the secrets (with their HMAC key state prepared once) and
/// the timestamp tolerance.
///
/// Cheap to clone? No: wrap it in an `Arc` to share it (the layer does).
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<Key>,
    tolerance: Option<u64>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &format_args!("[{} redacted]", self.keys.len()))
            .field("tolerance_secs", &self.tolerance)
            .finish()
    }
}

/// Checks a secret: not empty, no leading or trailing whitespace (a pasted newline).
pub(crate) fn check_secret(index: usize, secret: &str) -> Result<(), ConfigError> {
    if secret.is_empty() {
        return Err(ConfigError::EmptySecret { index });
    }
    if secret.trim() != secret {
        return Err(ConfigError::SecretWhitespace { index });
    }
    Ok(())
}

impl Verifier {
    /// Creates a verifier accepting signatures made with any of `secrets` (several secrets allow
    /// key rotation), with the default tolerance of 300 s.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when no secret is given, or one is empty or has leading/trailing
    /// whitespace.
    pub fn new<I, S>(secrets: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut keys = Vec::new();
        for (index, secret) in secrets.into_iter().enumerate() {
            let secret = secret.as_ref();
            check_secret(index, secret)?;
            keys.push(Key {
                mac: HmacSha256::new_from_slice(secret.as_bytes())
                    .expect("HMAC accepts any key length"),
            });
        }
        if keys.is_empty() {
            return Err(ConfigError::NoSecret);
        }
        Ok(Verifier {
            keys,
            tolerance: Some(DEFAULT_TOLERANCE.as_secs()),
        })
    }

    /// Sets how far the signed timestamp may be from now, either way (inclusive).
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = Some(tolerance.as_secs());
        self
    }

    /// Accepts any signed timestamp. This removes replay protection: only for replaying
    /// captured requests in tests or tools.
    pub fn danger_disable_timestamp_check(mut self) -> Self {
        self.tolerance = None;
        self
    }

    /// The tolerance, or `None` when the timestamp check is disabled.
    pub fn tolerance(&self) -> Option<Duration> {
        self.tolerance.map(Duration::from_secs)
    }

    /// How many secrets are configured.
    pub fn secret_count(&self) -> usize {
        self.keys.len()
    }

    /// Runs every check of one request, in order: the header is parsed, the signed timestamp
    /// checked against the tolerance, then the HMAC of `t.body` compared in constant time with
    /// every `v1` value for every secret.
    ///
    /// `signature_header` is the raw `X-Webhook-Signature` value (`None` when absent),
    /// `timestamp_header` the raw `X-Webhook-Timestamp` value, `now` the current unix time in
    /// seconds. The envelope (JSON) check is not part of this: see
    /// [`Envelope::parse`](crate::Envelope::parse).
    ///
    /// # Errors
    ///
    /// The [`Rejection`] of the first failing check.
    pub fn verify(
        &self,
        signature_header: Option<&[u8]>,
        timestamp_header: Option<&[u8]>,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, Rejection> {
        let header = self.check_header(signature_header, timestamp_header, now)?;
        self.check_body(&header, body)
    }

    /// [`verify`](Self::verify) for a request's headers: reads `X-Webhook-Signature` and
    /// `X-Webhook-Timestamp` from `headers` (the first value of each), so the two header values
    /// cannot be passed in the wrong order. `now` is the current unix time in seconds.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use metigan_webhook::{sign, Verifier};
    ///
    /// let verifier = Verifier::new(["whsec_example"]).unwrap();
    /// let body = br#"{"event":"email.opened","messageId":"m-1","data":{}}"#;
    /// let mut headers = HeaderMap::new();
    /// let signature = sign("whsec_example", 1_700_000_000, body);
    /// headers.insert("x-webhook-signature", signature.parse().unwrap());
    /// let verified = verifier.verify_request(&headers, body, 1_700_000_010).unwrap();
    /// assert_eq!(verified.timestamp(), 1_700_000_000);
    /// ```
    ///
    /// # Errors
    ///
    /// The [`Rejection`] of the first failing check.
    pub fn verify_request(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, Rejection> {
        let value = |name: &str| headers.get(name).map(http::HeaderValue::as_bytes);
        let header = self.check_header_with(
            value(crate::layer::SIGNATURE_HEADER),
            || value(crate::layer::TIMESTAMP_HEADER),
            now,
        )?;
        self.check_body(&header, body)
    }

    /// The checks that need no body: parse the header, then the timestamp window.
    ///
    /// # Errors
    ///
    /// `missing_signature`, `malformed_signature` or `timestamp_out_of_tolerance`.
    pub fn check_header(
        &self,
        signature_header: Option<&[u8]>,
        timestamp_header: Option<&[u8]>,
        now: u64,
    ) -> Result<SignatureHeader, Rejection> {
        self.check_header_with(signature_header, || timestamp_header, now)
    }

    /// [`check_header`](Self::check_header), with the timestamp header looked up only when
    /// needed.
    pub(crate) fn check_header_with<'a>(
        &self,
        signature_header: Option<&[u8]>,
        timestamp_header: impl FnOnce() -> Option<&'a [u8]>,
        now: u64,
    ) -> Result<SignatureHeader, Rejection> {
        let header = SignatureHeader::parse_with(signature_header, timestamp_header)?;
        if let Some(tolerance) = self.tolerance {
            let t = header.timestamp;
            if t.abs_diff(now) > tolerance {
                let skew = if t >= now {
                    i64::try_from(t - now).unwrap_or(i64::MAX)
                } else {
                    i64::try_from(now - t).map_or(i64::MIN, |d| -d)
                };
                return Err(Rejection::stale(skew));
            }
        }
        Ok(header)
    }

    /// The HMAC check: compares, in constant time, the HMAC of `t.body` for every secret with
    /// every `v1` value of the header. All pairs are always compared, so the time taken does not
    /// depend on which one (if any) matches.
    ///
    /// # Errors
    ///
    /// `signature_mismatch` when no pair matches.
    pub fn check_body(&self, header: &SignatureHeader, body: &[u8]) -> Result<Verified, Rejection> {
        let mut matched = Choice::from(0);
        let mut index = 0u32;
        for (i, key) in self.keys.iter().enumerate() {
            let mac = mac_of(key.mac.clone(), header.timestamp, body);
            let mut this = Choice::from(0);
            for candidate in header.candidates() {
                this |= candidate.matches(&mac);
            }
            // Keep the first matching secret's index.
            let first = this & !matched;
            index.conditional_assign(&(i as u32), first);
            matched |= this;
        }
        if bool::from(matched) {
            Ok(Verified {
                timestamp: header.timestamp,
                secret_index: index as usize,
            })
        } else {
            Err(Rejection::new(Reason::SignatureMismatch))
        }
    }
}

/// The outcome of a successful verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    timestamp: u64,
    secret_index: usize,
}

impl Verified {
    /// The signed timestamp `t` (unix seconds).
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// Index, in the configured order, of the secret whose signature matched.
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }
}

/// One `v1` value: decoded when it is 64 hex characters, otherwise kept but never matching.
#[derive(Clone, Copy)]
struct Candidate {
    mac: [u8; 32],
    valid: bool,
}

impl Candidate {
    const EMPTY: Candidate = Candidate {
        mac: [0; 32],
        valid: false,
    };

    fn decode(hex: &[u8]) -> Candidate {
        if hex.len() != 64 {
            return Candidate::EMPTY;
        }
        // Table lookups without a branch per digit; one check at the end (an invalid digit
        // has its high bit set).
        let mut mac = [0u8; 32];
        let mut invalid = 0u8;
        for (out, pair) in mac.iter_mut().zip(hex.chunks_exact(2)) {
            let (hi, lo) = (HEX_VALUES[pair[0] as usize], HEX_VALUES[pair[1] as usize]);
            invalid |= hi | lo;
            *out = (hi << 4) | (lo & 0x0f);
        }
        if invalid & 0x80 != 0 {
            return Candidate::EMPTY;
        }
        Candidate { mac, valid: true }
    }

    fn matches(&self, mac: &[u8; 32]) -> Choice {
        // Fold the differences into one word without any data-dependent branch, then one
        // constant-time comparison (`subtle` puts an optimisation barrier on each comparison:
        // one instead of 32 is what keeps this cheap).
        let mut diff = 0u64;
        for (ours, theirs) in self.mac.chunks_exact(8).zip(mac.chunks_exact(8)) {
            diff |= word(ours) ^ word(theirs);
        }
        diff.ct_eq(&0) & Choice::from(u8::from(self.valid))
    }
}

/// Eight bytes as a word (`bytes` always has eight: it comes from `chunks_exact(8)`).
fn word(bytes: &[u8]) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    u64::from_ne_bytes(out)
}

/// The value of each byte as a hex digit (either case), or `0xFF` when it is not one.
const HEX_VALUES: [u8; 256] = {
    let mut table = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Token separators of the signature header: commas and ASCII whitespace.
const SEPARATORS: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        table[i] = c == b',' || c.is_ascii_whitespace();
        i += 1;
    }
    table
};

/// A parsed signature header: the timestamp to check and up to [`MAX_SIGNATURES`] `v1` values.
///
/// A header with one `v1` value (what Metigan sends) is parsed without allocating; the second
/// to the sixteenth values, if any, go to a small vector. Keeping the common case small (not a
/// fixed array of sixteen) also keeps the layer's future small: it carries this header.
#[derive(Clone)]
pub struct SignatureHeader {
    timestamp: u64,
    first: Candidate,
    more: Vec<Candidate>,
    len: usize,
}

impl fmt::Debug for SignatureHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signatures themselves are not printed: they are the sender's proof.
        f.debug_struct("SignatureHeader")
            .field("timestamp", &self.timestamp)
            .field("v1_values", &self.len)
            .finish()
    }
}

fn parse_digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &c in value {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

impl SignatureHeader {
    /// Parses a signature header (and, when it has no `t`, the timestamp header): tokens
    /// separated by commas and/or ASCII whitespace, `key=value` split at the first `=`, tokens
    /// without `=` and unknown keys ignored.
    ///
    /// # Errors
    ///
    /// - `missing_signature`: no header, an empty one, or no non-empty `v1` value;
    /// - `malformed_signature`: header over 4 KiB, a `t` that is not plain digits fitting in
    ///   `u64`, two `t`, or no `t` and no usable timestamp header. The timestamp is settled
    ///   first, so a header lacking both is malformed, not missing.
    pub fn parse(
        signature_header: Option<&[u8]>,
        timestamp_header: Option<&[u8]>,
    ) -> Result<SignatureHeader, Rejection> {
        Self::parse_with(signature_header, || timestamp_header)
    }

    /// [`parse`](Self::parse), with the timestamp header looked up only when the signature
    /// header has no `t` (the layer then skips a header map lookup per request).
    pub(crate) fn parse_with<'a>(
        signature_header: Option<&[u8]>,
        timestamp_header: impl FnOnce() -> Option<&'a [u8]>,
    ) -> Result<SignatureHeader, Rejection> {
        let raw = match signature_header {
            None => return Err(Reason::MissingSignature.into()),
            Some([]) => return Err(Reason::MissingSignature.into()),
            Some(raw) if raw.len() > MAX_HEADER_LEN => {
                return Err(Reason::MalformedSignature.into())
            }
            Some(raw) => raw,
        };

        let mut timestamp: Option<u64> = None;
        let mut first = Candidate::EMPTY;
        let mut more = Vec::new();
        let mut len = 0usize;
        let mut push = |candidate: Candidate| {
            // Values past the 16th are ignored.
            if len == 0 {
                first = candidate;
            } else if len < MAX_SIGNATURES {
                more.push(candidate);
            } else {
                return;
            }
            len += 1;
        };
        let is_separator = |c: u8| SEPARATORS[c as usize];
        let mut i = 0;
        while i < raw.len() {
            if is_separator(raw[i]) {
                i += 1;
                continue;
            }
            // A token: its key runs to the first `=`; a token without `=` is ignored.
            let start = i;
            while i < raw.len() && raw[i] != b'=' && !is_separator(raw[i]) {
                i += 1;
            }
            if raw.get(i) != Some(&b'=') {
                continue;
            }
            let key = &raw[start..i];
            i += 1;
            // The usual `v1`: 64 hex digits then a separator or the end. Decoding checks every
            // digit, so no separator hides inside and the token is exactly these 64 bytes.
            if key == b"v1"
                && raw.len() - i >= 64
                && raw.get(i + 64).is_none_or(|&c| is_separator(c))
            {
                let candidate = Candidate::decode(&raw[i..i + 64]);
                if candidate.valid {
                    push(candidate);
                    i += 64;
                    continue;
                }
            }
            let value_start = i;
            while i < raw.len() && !is_separator(raw[i]) {
                i += 1;
            }
            let value = &raw[value_start..i];
            match key {
                b"t" => {
                    if timestamp.is_some() {
                        return Err(Reason::MalformedSignature.into());
                    }
                    timestamp = Some(
                        parse_digits(value).ok_or(Rejection::new(Reason::MalformedSignature))?,
                    );
                }
                // Empty values are skipped.
                b"v1" if !value.is_empty() => push(Candidate::decode(value)),
                _ => {}
            }
        }

        let timestamp = match timestamp {
            Some(t) => t,
            None => timestamp_header()
                .and_then(parse_digits)
                .ok_or(Rejection::new(Reason::MalformedSignature))?,
        };
        if len == 0 {
            return Err(Reason::MissingSignature.into());
        }
        Ok(SignatureHeader {
            timestamp,
            first,
            more,
            len,
        })
    }

    /// The timestamp that was signed (unix seconds): `t`, or the timestamp header when the
    /// signature header has none.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// How many `v1` values will be compared (at most [`MAX_SIGNATURES`]).
    pub fn signature_count(&self) -> usize {
        self.len
    }

    fn candidates(&self) -> impl Iterator<Item = &Candidate> {
        std::iter::once(&self.first)
            .take(self.len.min(1))
            .chain(&self.more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_key_states_are_zeroized_on_drop() {
        // The HMAC key state is two SHA-256 cores; with `sha2`'s `zeroize` feature they wipe
        // their state in `Drop`. This stops compiling if that feature is ever lost.
        fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroize_on_drop::<<Sha256 as hmac::EagerHash>::Core>();
        zeroize_on_drop::<zeroize::Zeroizing<String>>();
    }

    #[test]
    fn itoa_matches_std() {
        for n in [0u64, 1, 9, 10, 1_700_000_000, u64::MAX] {
            assert_eq!(itoa_u64(n, &mut [0; 20]), n.to_string());
        }
    }

    #[test]
    fn sign_then_verify() {
        let v = Verifier::new(["s3cret"]).unwrap();
        let h = sign("s3cret", 42, b"body");
        assert_eq!(
            v.verify(Some(h.as_bytes()), None, b"body", 42)
                .unwrap()
                .timestamp(),
            42
        );
        assert_eq!(
            v.verify(Some(h.as_bytes()), None, b"bodY", 42)
                .unwrap_err()
                .reason(),
            Reason::SignatureMismatch
        );
    }

    #[test]
    fn secrets_are_checked_at_construction() {
        assert_eq!(
            Verifier::new(Vec::<String>::new()).unwrap_err(),
            ConfigError::NoSecret
        );
        assert_eq!(
            Verifier::new([""]).unwrap_err(),
            ConfigError::EmptySecret { index: 0 }
        );
        assert_eq!(
            Verifier::new(["ok", "pasted\n"]).unwrap_err(),
            ConfigError::SecretWhitespace { index: 1 }
        );
        let msg = Verifier::new([" whsec_abc"]).unwrap_err().to_string();
        assert!(!msg.contains("whsec_abc"), "{msg}");
    }

    #[test]
    fn debug_never_prints_secrets() {
        let v = Verifier::new(["very-secret-value"]).unwrap();
        let dbg = format!("{v:?}");
        assert!(!dbg.contains("very-secret-value"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn second_secret_index_is_reported() {
        let v = Verifier::new(["old", "new"]).unwrap();
        let h = sign("new", 7, b"x");
        assert_eq!(
            v.verify(Some(h.as_bytes()), None, b"x", 7)
                .unwrap()
                .secret_index(),
            1
        );
        let h = sign("old", 7, b"x");
        assert_eq!(
            v.verify(Some(h.as_bytes()), None, b"x", 7)
                .unwrap()
                .secret_index(),
            0
        );
    }

    #[test]
    fn only_sixteen_values_are_considered() {
        let good = sign("k", 5, b"b");
        let good_v1 = good.split_once(",v1=").unwrap().1;
        let bogus = format!(",v1={}", "0".repeat(64)).repeat(MAX_SIGNATURES);
        let header = format!("t=5{bogus},v1={good_v1}");
        let v = Verifier::new(["k"]).unwrap();
        assert_eq!(
            v.verify(Some(header.as_bytes()), None, b"b", 5)
                .unwrap_err()
                .reason(),
            Reason::SignatureMismatch
        );
        let header = format!("t=5{},v1={good_v1}", &bogus[..bogus.len() / 2]);
        assert!(v.verify(Some(header.as_bytes()), None, b"b", 5).is_ok());
    }

    #[test]
    fn a_separator_inside_sixty_four_bytes_still_splits_tokens() {
        let good = sign("k", 5, b"b");
        let good_v1 = good.split_once(",v1=").unwrap().1;
        // The 64 bytes after the first `v1=` end right before a comma, but hold one themselves:
        // they are two short values, not one.
        let header = format!(
            "t=5,v1={},v1={},v1={good_v1}",
            "0".repeat(20),
            "0".repeat(40)
        );
        let parsed = SignatureHeader::parse(Some(header.as_bytes()), None).unwrap();
        assert_eq!(parsed.signature_count(), 3);
        let v = Verifier::new(["k"]).unwrap();
        assert!(v.verify(Some(header.as_bytes()), None, b"b", 5).is_ok());
        // 64 hex digits followed by more: one 65-digit value, which never matches.
        let header = format!("t=5 v1={good_v1}0");
        let err = v
            .verify(Some(header.as_bytes()), None, b"b", 5)
            .unwrap_err();
        assert_eq!(err.reason(), Reason::SignatureMismatch);
        // Upper case, surrounded by whitespace, still decodes.
        let header = format!("\tt=5 \r\n v1={} ", good_v1.to_uppercase());
        assert!(v.verify(Some(header.as_bytes()), None, b"b", 5).is_ok());
    }

    #[test]
    fn skew_is_signed() {
        let v = Verifier::new(["k"]).unwrap();
        let h = sign("k", 1000, b"b");
        let err = v.check_header(Some(h.as_bytes()), None, 2000).unwrap_err();
        assert_eq!(err.skew_seconds(), Some(-1000));
        let err = v.check_header(Some(h.as_bytes()), None, 10).unwrap_err();
        assert_eq!(err.skew_seconds(), Some(990));
        let v = v.danger_disable_timestamp_check();
        assert!(v.check_header(Some(h.as_bytes()), None, 10).is_ok());
    }

    #[test]
    fn non_utf8_bytes_are_handled() {
        let v = Verifier::new(["k"]).unwrap();
        let err = v.verify(Some(b"t=1\xff,v1=00"), None, b"", 1).unwrap_err();
        assert_eq!(err.reason(), Reason::MalformedSignature);
        let err = v
            .verify(Some(b"t=1,v1=\xff\xfe"), None, b"", 1)
            .unwrap_err();
        assert_eq!(err.reason(), Reason::SignatureMismatch);
    }
}
