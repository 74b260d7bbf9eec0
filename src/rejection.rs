//! Why a webhook request was refused, and how that is answered.

use std::fmt;

use http::StatusCode;

/// The reason a webhook request was rejected.
///
/// Each reason has a stable snake_case [`code`](Reason::code), an HTTP status and a gRPC status
/// (see the table in the crate docs). The codes are the ones of the conformance vectors, so
/// they can be matched by scripts and dashboards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// No signature header, an empty one, or one without any non-empty `v1` value.
    MissingSignature,
    /// The signature header cannot be parsed: no usable timestamp, a bad or repeated `t`, or a
    /// header longer than 4 KiB.
    MalformedSignature,
    /// The signed timestamp is further from now than the configured tolerance.
    TimestampOutOfTolerance,
    /// The body is larger than the configured limit (declared or streamed).
    BodyTooLarge,
    /// Reading the body failed (client reset, bad chunk encoding, ...).
    BodyReadError,
    /// No `v1` value matches the HMAC of the body for any configured secret.
    SignatureMismatch,
    /// The body is authentic but is not a JSON object with a string `event`.
    InvalidPayload,
    /// Reading this body would pass the layer's bound on bytes buffered at once across all
    /// requests ([`max_buffered_bytes`](crate::MetiganSignatureBuilder::max_buffered_bytes)):
    /// answered `503 Service Unavailable` with `Retry-After`, before more is read. Metigan
    /// retries it, so nothing is lost.
    Overloaded,
}

impl Reason {
    /// Every reason, in the order the checks run.
    pub const ALL: &'static [Reason] = &[
        Reason::MissingSignature,
        Reason::MalformedSignature,
        Reason::TimestampOutOfTolerance,
        Reason::BodyTooLarge,
        Reason::BodyReadError,
        Reason::SignatureMismatch,
        Reason::InvalidPayload,
        Reason::Overloaded,
    ];

    /// The stable reason code, e.g. `"signature_mismatch"`.
    pub const fn code(self) -> &'static str {
        self.texts().0
    }

    /// A one-line human explanation, safe to show to the sender: it never contains the secret,
    /// the expected signature or the body.
    pub const fn description(self) -> &'static str {
        self.texts().1
    }

    /// The body of an HTTP rejection: `"<code>: <description>\n"`, built at compile time so the
    /// rejection path allocates nothing.
    pub(crate) const fn http_body(self) -> &'static str {
        self.texts().2
    }

    const fn texts(self) -> (&'static str, &'static str, &'static str) {
        macro_rules! texts {
            ($code:literal, $description:literal) => {
                (
                    $code,
                    $description,
                    concat!($code, ": ", $description, "\n"),
                )
            };
        }
        match self {
            Reason::MissingSignature => {
                texts!(
                    "missing_signature",
                    "the request has no X-Webhook-Signature v1 value"
                )
            }
            Reason::MalformedSignature => texts!(
                "malformed_signature",
                "the signature header has no valid timestamp or cannot be parsed"
            ),
            Reason::TimestampOutOfTolerance => texts!(
                "timestamp_out_of_tolerance",
                "the signed timestamp is outside the accepted window (replayed, or clock skew)"
            ),
            Reason::BodyTooLarge => {
                texts!(
                    "body_too_large",
                    "the body is larger than the configured limit"
                )
            }
            Reason::BodyReadError => {
                texts!("body_read_error", "the request body could not be read")
            }
            Reason::SignatureMismatch => texts!(
                "signature_mismatch",
                "the signature does not match the body for any configured secret"
            ),
            Reason::InvalidPayload => texts!(
                "invalid_payload",
                "the body is not a JSON object with a string \"event\""
            ),
            Reason::Overloaded => texts!(
                "overloaded",
                "too many request bodies are being read at once; retry later"
            ),
        }
    }

    /// Parses a reason code back into a [`Reason`].
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.code() == code)
    }

    /// The HTTP status answered for this reason: 401, 413, 400, or 503 for
    /// [`Reason::Overloaded`] (with `Retry-After`).
    pub const fn status(self) -> StatusCode {
        match self {
            Reason::MissingSignature
            | Reason::MalformedSignature
            | Reason::TimestampOutOfTolerance
            | Reason::SignatureMismatch => StatusCode::UNAUTHORIZED,
            Reason::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::BodyReadError | Reason::InvalidPayload => StatusCode::BAD_REQUEST,
            Reason::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status code answered to gRPC requests: 16 (`UNAUTHENTICATED`),
    /// 8 (`RESOURCE_EXHAUSTED`), 3 (`INVALID_ARGUMENT`) or 14 (`UNAVAILABLE`).
    pub const fn grpc_status(self) -> u8 {
        match self.status() {
            StatusCode::UNAUTHORIZED => 16,
            StatusCode::PAYLOAD_TOO_LARGE => 8,
            StatusCode::SERVICE_UNAVAILABLE => 14,
            _ => 3,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A rejected webhook request.
///
/// Returned by [`Verifier::verify`](crate::Verifier::verify) and placed in the extensions of
/// every response the layer answers itself, so an outer layer can reshape the answer:
///
/// ```
/// # use metigan_webhook::{Rejection, Reason};
/// # let response = http::Response::new(());
/// if let Some(rejection) = response.extensions().get::<Rejection>() {
///     assert!(rejection.reason() != Reason::InvalidPayload);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    reason: Reason,
    skew: Option<i64>,
}

impl Rejection {
    /// A rejection for `reason`.
    pub const fn new(reason: Reason) -> Self {
        Rejection { reason, skew: None }
    }

    pub(crate) const fn stale(skew: i64) -> Self {
        Rejection {
            reason: Reason::TimestampOutOfTolerance,
            skew: Some(skew),
        }
    }

    /// Why the request was rejected.
    pub const fn reason(&self) -> Reason {
        self.reason
    }

    /// For [`Reason::TimestampOutOfTolerance`]: the signed timestamp minus now, in seconds
    /// (negative: the signature is that old; positive: it is from the future).
    pub const fn skew_seconds(&self) -> Option<i64> {
        self.skew
    }

    /// The answer the layer gives for this rejection: its status, `text/plain` body
    /// (`<reason code>: <description>`), `Retry-After` for [`Reason::Overloaded`], and the
    /// rejection itself in the extensions. For an application that reshapes answers (a JSON
    /// error format, say) and falls back to the layer's own for the rest.
    ///
    /// ```
    /// use metigan_webhook::{Reason, Rejection, ResponseBody};
    ///
    /// let response = Rejection::new(Reason::SignatureMismatch).into_response::<()>();
    /// assert_eq!(response.status(), 401);
    /// assert!(response.extensions().get::<Rejection>().is_some());
    /// # let _: http::Response<ResponseBody<()>> = response;
    /// ```
    pub fn into_response<B>(self) -> http::Response<crate::ResponseBody<B>> {
        crate::response::rejection_response(self, false)
    }

    /// The answer the layer gives for this rejection to a gRPC request: HTTP 200 with its
    /// `grpc-status` and `grpc-message` (the reason code), and the rejection in the extensions.
    pub fn into_grpc_response<B>(self) -> http::Response<crate::ResponseBody<B>> {
        crate::response::rejection_response(self, true)
    }
}

impl From<Reason> for Rejection {
    fn from(reason: Reason) -> Self {
        Rejection::new(reason)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.reason.description())?;
        if let Some(skew) = self.skew {
            write!(f, " (signed {skew:+} s from now)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_bodies_start_with_the_code() {
        for &reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
            let body = reason.http_body();
            assert!(body.starts_with(reason.code()), "{body}");
            assert!(body.contains(reason.description()), "{body}");
            assert!(body.ends_with('\n'));
        }
        assert_eq!(Reason::from_code("nope"), None);
    }

    #[test]
    fn statuses_follow_the_design_table() {
        use Reason::*;
        for (reason, http, grpc) in [
            (MissingSignature, 401, 16),
            (MalformedSignature, 401, 16),
            (TimestampOutOfTolerance, 401, 16),
            (SignatureMismatch, 401, 16),
            (BodyTooLarge, 413, 8),
            (BodyReadError, 400, 3),
            (InvalidPayload, 400, 3),
            (Overloaded, 503, 14),
        ] {
            assert_eq!(reason.status().as_u16(), http, "{reason}");
            assert_eq!(reason.grpc_status(), grpc, "{reason}");
        }
    }

    #[test]
    fn display_includes_skew() {
        assert_eq!(
            Rejection::stale(-301).to_string(),
            "timestamp_out_of_tolerance: the signed timestamp is outside the accepted window \
             (replayed, or clock skew) (signed -301 s from now)"
        );
    }
}
