//! The admin API's path and query parameters, parsed strictly: an unknown or repeated
//! parameter is an error, so that a typo (`?sate=dead`) never widens what a request reads or
//! removes.

use std::time::Duration;

use crate::inbox::store::{EventId, ListQuery, State, MAX_LIST_LIMIT};

/// At most this many characters of a bad value are repeated in an error.
const SHOWN: usize = 40;

/// The `name=value` pairs of a query string, decoded, each name at most once and among
/// `allowed`.
struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Self, String> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for pair in query.unwrap_or_default().split('&') {
            if pair.is_empty() {
                continue;
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (name, value) = (decode(name)?, decode(value)?);
            if !allowed.contains(&name.as_str()) {
                let expected = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Err(format!(
                    "unknown parameter {}: expected {expected}",
                    shown(&name)
                ));
            }
            if pairs.iter().any(|(seen, _)| *seen == name) {
                return Err(format!("parameter {name} given twice"));
            }
            pairs.push((name, value));
        }
        Ok(Params { pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(seen, _)| seen == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A query component with its `%XX` escapes and `+` (a space, in forms) decoded.
fn decode(component: &str) -> Result<String, String> {
    if !component.contains(['%', '+']) {
        return Ok(component.to_owned());
    }
    let mut bytes = Vec::with_capacity(component.len());
    let mut rest = component.as_bytes();
    while let [first, tail @ ..] = rest {
        match first {
            b'%' => {
                let bad = || format!("{}: a bad %-escape", shown(component));
                let (hex, after) = tail.split_at_checked(2).ok_or_else(bad)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(bad());
                }
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                rest = after;
            }
            b'+' => {
                bytes.push(b' ');
                rest = tail;
            }
            &other => {
                bytes.push(other);
                rest = tail;
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 once decoded", shown(component)))
}

/// The listing asked for by `?state=..&limit=..&cursor=..` (each optional).
pub(super) fn list_query(query: Option<&str>) -> Result<ListQuery, String> {
    let params = Params::parse(query, &["state", "limit", "cursor"])?;
    let mut list = ListQuery::new();
    if let Some(state) = params.get("state") {
        list = list.state(State::parse(state).ok_or_else(|| {
            format!(
                "state: {} is not one of queued, running, retrying, dead, done",
                shown(state)
            )
        })?);
    }
    if let Some(limit) = params.get("limit") {
        match limit.parse::<usize>() {
            Ok(limit @ 1..=MAX_LIST_LIMIT) => list = list.limit(limit),
            _ => {
                return Err(format!(
                    "limit: {} is not a number from 1 to {MAX_LIST_LIMIT}",
                    shown(limit)
                ))
            }
        }
    }
    if let Some(cursor) = params.get("cursor") {
        let cursor = cursor.parse::<EventId>().map_err(|_| {
            format!(
                "cursor: {} is not a cursor (the next_cursor of a page)",
                shown(cursor)
            )
        })?;
        list = list.after(cursor);
    }
    Ok(list)
}

/// Whether `?body=true` asks for the body (the only parameter of one event's page).
pub(super) fn with_body(query: Option<&str>) -> Result<bool, String> {
    let params = Params::parse(query, &["body"])?;
    match params.get("body") {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(format!("body: {} is not true or false", shown(other))),
    }
}

/// The retention of `?older_than_secs=N` (required: no default that removes everything).
pub(super) fn older_than(query: Option<&str>) -> Result<Duration, String> {
    let params = Params::parse(query, &["older_than_secs"])?;
    let value = params.get("older_than_secs").ok_or(
        "older_than_secs is required: done events finished more than that many seconds ago \
         are removed",
    )?;
    value.parse::<u64>().map(Duration::from_secs).map_err(|_| {
        format!(
            "older_than_secs: {} is not a number of seconds",
            shown(value)
        )
    })
}

/// Checks that a request takes no query parameters.
pub(super) fn none(query: Option<&str>) -> Result<(), String> {
    Params::parse(query, &[]).map(drop)
}

/// The event id of a path.
pub(super) fn event_id(text: &str) -> Result<EventId, String> {
    text.parse()
        .map_err(|_| format!("{} is not an event id", shown(text)))
}

/// `value` quoted, cut to [`SHOWN`] characters.
fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{:?}...", &value[..end]),
        None => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings() {
        let list = list_query(None).unwrap();
        assert_eq!(list, ListQuery::new());
        let list = list_query(Some("state=dead&limit=7&cursor=12&")).unwrap();
        assert_eq!(
            list,
            ListQuery::new()
                .state(State::Dead)
                .limit(7)
                .after(EventId::new(12))
        );
        assert_eq!(
            list_query(Some("limit=1000")).unwrap().limit,
            MAX_LIST_LIMIT
        );
        for (bad, expected) in [
            (
                "sate=dead",
                "unknown parameter \"sate\": expected state, limit, cursor",
            ),
            ("state=dead&state=done", "parameter state given twice"),
            ("state=Dead", "state: \"Dead\" is not one of"),
            ("limit=0", "limit: \"0\" is not a number from 1 to 1000"),
            ("limit=1001", "is not a number from 1 to 1000"),
            ("limit=-1", "is not a number"),
            ("cursor=x", "cursor: \"x\" is not a cursor"),
            ("body=true", "unknown parameter \"body\""),
        ] {
            let error = list_query(Some(bad)).unwrap_err();
            assert!(
                error.starts_with(expected) || error.contains(expected),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn components_are_decoded() {
        assert_eq!(
            list_query(Some("st%61te=de%61d&limit=%37")).unwrap(),
            ListQuery::new().state(State::Dead).limit(7)
        );
        let error = list_query(Some("cursor=x%26state%3Ddone")).unwrap_err();
        assert!(error.starts_with("cursor: \"x&state=done\""), "{error}");
        assert_eq!(decode("a+b%20c%C3%A9").unwrap(), "a b cé");
        for bad in ["%", "%4", "%zz", "%+1", "%C3"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_only_when_asked() {
        assert!(!with_body(None).unwrap());
        assert!(!with_body(Some("body=false")).unwrap());
        assert!(with_body(Some("body=true")).unwrap());
        assert!(with_body(Some("body=1")).unwrap());
        assert!(with_body(Some("body")).is_err());
        assert!(with_body(Some("body=yes")).is_err());
        assert!(with_body(Some("state=dead")).is_err());
    }

    #[test]
    fn purge_needs_its_retention() {
        assert_eq!(
            older_than(Some("older_than_secs=60")).unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            older_than(Some("older_than_secs=18446744073709551615")).unwrap(),
            Duration::from_secs(u64::MAX)
        );
        assert!(older_than(None).unwrap_err().contains("required"));
        assert!(older_than(Some("older_than_secs=1d")).is_err());
        assert!(older_than(Some("older_than=1")).is_err());
        assert!(none(Some("")).is_ok());
        assert!(none(Some("all=1")).unwrap_err().contains("expected none"));
    }

    #[test]
    fn ids_and_long_values() {
        assert_eq!(event_id("42").unwrap(), EventId::new(42));
        assert!(event_id("-1").is_err());
        assert!(event_id("4x").is_err());
        let long = "é".repeat(100);
        let error = event_id(&long).unwrap_err();
        assert!(error.len() < 120, "{error}");
        assert!(error.ends_with("\"... is not an event id"), "{error}");
    }
}
