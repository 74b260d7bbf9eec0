//! Text from an event made safe to print: it can neither end a line early nor move the cursor,
//! recolour or reorder what a terminal shows.

use std::fmt;

/// Whether `c` must not reach a terminal as is: controls (C0, DEL, C1), the Unicode line and
/// paragraph separators, and the marks and overrides that reorder text.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A value printed on one line: unsafe characters as `\n`, `\r`, `\t` or `\u{..}`, and the
/// backslash doubled so that an escape in the value cannot pass for one of ours.
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(|c| c == '\\' || is_unsafe(c)) {
            f.write_str(&rest[..at])?;
            let mut chars = rest[at..].chars();
            match chars.next() {
                Some('\\') => f.write_str("\\\\")?,
                Some('\n') => f.write_str("\\n")?,
                Some('\r') => f.write_str("\\r")?,
                Some('\t') => f.write_str("\\t")?,
                Some(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                None => break,
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

/// `json` (JSON text without raw C0 controls, as serde_json and [`crate::json`] write it) with
/// the other unsafe characters written as JSON escapes (`\u202e`): the same JSON value, safe to
/// print. Each is in the Basic Multilingual Plane, so one `\uXXXX` writes it; outside strings
/// valid JSON has none. A C0 control (only in text that is not such JSON) is escaped too.
pub(crate) fn json_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The first `max` characters of `text`, with `...` when it was longer.
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_values_stay_on_one_line() {
        assert_eq!(
            Escaped("a\nb\r\tc\\n\u{1b}[31m\u{7f}\u{85}\u{202e}d\u{2028}é").to_string(),
            "a\\nb\\r\\tc\\\\n\\u{1b}[31m\\u{7f}\\u{85}\\u{202e}d\\u{2028}é"
        );
        assert_eq!(Escaped("plain text").to_string(), "plain text");
    }

    #[test]
    fn json_stays_the_same_value() {
        let text = "{\"k\":\"a\u{202e}b\u{85}\u{7f}\",\"é\":\"\\n\"}";
        let safe = json_safe(text);
        assert_eq!(safe, "{\"k\":\"a\\u202eb\\u0085\\u007f\",\"é\":\"\\n\"}");
        let before: serde_json::Value = serde_json::from_str(text).unwrap();
        let after: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(before, after);
        assert!(!safe.chars().any(is_unsafe));
    }

    #[test]
    fn cut_counts_characters() {
        assert_eq!(cut("ééé", 2), "éé...");
        assert_eq!(cut("ééé", 3), "ééé");
    }
}
