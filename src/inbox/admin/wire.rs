//! The JSON the admin API answers: events, counts and outcomes, with times in RFC 3339 and
//! bodies as text or base64.

use std::time::SystemTime;

use serde::Serialize;

use crate::inbox::store::{to_millis, Counts, Purged, StoredEvent};

/// [`Counts`], with their total.
#[derive(Serialize)]
pub(super) struct CountsJson {
    queued: u64,
    running: u64,
    retrying: u64,
    dead: u64,
    done: u64,
    total: u64,
}

impl From<Counts> for CountsJson {
    fn from(counts: Counts) -> Self {
        CountsJson {
            queued: counts.queued,
            running: counts.running,
            retrying: counts.retrying,
            dead: counts.dead,
            done: counts.done,
            total: counts.total(),
        }
    }
}

/// A [`StoredEvent`]; its body only when the event was read with it.
#[derive(Serialize)]
pub(super) struct EventJson<'a> {
    id: u64,
    state: &'static str,
    event_type: &'a str,
    message_id: Option<&'a str>,
    key: Option<&'a str>,
    webhook_id: Option<&'a str>,
    signed_at: u64,
    secret_index: usize,
    received_at: String,
    attempts: u32,
    replays: u32,
    last_error: Option<&'a str>,
    due_at: Option<String>,
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_bytes: Option<usize>,
}

impl<'a> From<&'a StoredEvent> for EventJson<'a> {
    fn from(event: &'a StoredEvent) -> Self {
        let (body, body_encoding) = match event.body.as_deref().map(std::str::from_utf8) {
            None => (None, None),
            Some(Ok(text)) => (Some(text.to_owned()), Some("utf-8")),
            Some(Err(_)) => (event.body.as_deref().map(base64), Some("base64")),
        };
        EventJson {
            id: event.id.get(),
            state: event.state.as_str(),
            event_type: &event.event_type,
            message_id: event.message_id.as_deref(),
            key: event.key.as_deref(),
            webhook_id: event.webhook_id.as_deref(),
            signed_at: event.signed_at,
            secret_index: event.secret_index,
            received_at: rfc3339(event.received_at),
            attempts: event.attempts,
            replays: event.replays,
            last_error: event.last_error.as_deref(),
            due_at: event.due_at.map(rfc3339),
            finished_at: event.finished_at.map(rfc3339),
            body,
            body_encoding,
            body_bytes: event.body.as_ref().map(|body| body.len()),
        }
    }
}

/// A page of events.
#[derive(Serialize)]
pub(super) struct PageJson<'a> {
    pub(super) events: Vec<EventJson<'a>>,
    /// The id after which the next page starts, as an opaque string.
    pub(super) next_cursor: Option<String>,
}

/// The answer to a replay of one event: the event as it is now (`None` if it vanished since).
#[derive(Serialize)]
pub(super) struct ReplayedOne<'a> {
    pub(super) replayed: u64,
    pub(super) event: Option<EventJson<'a>>,
}

/// The answer to a replay of every dead letter.
#[derive(Serialize)]
pub(super) struct ReplayedAll {
    pub(super) replayed: u64,
}

/// [`Purged`].
#[derive(Serialize)]
pub(super) struct PurgedJson {
    purged_events: u64,
    purged_keys: u64,
}

impl From<Purged> for PurgedJson {
    fn from(purged: Purged) -> Self {
        PurgedJson {
            purged_events: purged.events,
            purged_keys: purged.keys,
        }
    }
}

/// An error answer.
#[derive(Serialize)]
pub(super) struct ErrorJson<'a> {
    pub(super) error: &'a str,
}

/// `time` as RFC 3339 in UTC with milliseconds (`2023-11-14T22:13:20.000Z`); times before
/// 1970 are written as its start, as the store keeps them.
pub(super) fn rfc3339(time: SystemTime) -> String {
    let millis = to_millis(time);
    let secs = millis / 1000;
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        millis % 1000
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Counted from 0000-03-01, so that the leap day ends each 400-year era's years.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `bytes` in standard base64, padded.
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(millis: u64) -> String {
        rfc3339(UNIX_EPOCH + Duration::from_millis(millis))
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(at(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(at(253_402_300_799_000), "9999-12-31T23:59:59.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
        // The far future does not overflow.
        assert!(at(u64::MAX).ends_with('Z'));
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (input, expected) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            (b"\xff\xfe\x00", "//4A"),
        ] {
            assert_eq!(base64(input), expected);
        }
    }

    #[test]
    fn bodies_are_text_or_base64_and_only_when_read() {
        let mut event = StoredEvent::new(crate::inbox::EventId::new(3), "email.opened");
        let json = serde_json::to_value(EventJson::from(&event)).unwrap();
        assert_eq!(json["id"], 3);
        assert_eq!(json["state"], "queued");
        assert!(json.get("body").is_none());
        assert!(json["due_at"].is_null());

        event.body = Some(bytes::Bytes::from_static(b"{\"a\":\"\xc3\xa9\"}"));
        let json = serde_json::to_value(EventJson::from(&event)).unwrap();
        assert_eq!(json["body"], "{\"a\":\"é\"}");
        assert_eq!(json["body_encoding"], "utf-8");
        assert_eq!(json["body_bytes"], 10);

        event.body = Some(bytes::Bytes::from_static(b"\xff\xfe\x00"));
        let json = serde_json::to_value(EventJson::from(&event)).unwrap();
        assert_eq!(json["body"], "//4A");
        assert_eq!(json["body_encoding"], "base64");
    }
}
