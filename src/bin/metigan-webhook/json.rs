//! Re-formats JSON text while keeping its key order (no `Value` round trip, whose map type may
//! sort keys): to print events as they came, and to rebuild the usual re-serialisations of a
//! body when diagnosing a signature mismatch.

/// How strings are written back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Strings {
    /// Exactly as in the input (escapes kept).
    AsIs,
    /// Minimal escaping, as `JSON.stringify` and `serde_json` write them (`\u00e9` becomes `é`,
    /// `\/` becomes `/`).
    Normalized,
}

/// A layout to write JSON in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Style {
    /// `None`: one line; `Some(indent)`: one member per line, nested levels indented.
    pub(crate) indent: Option<&'static str>,
    /// Written after `:`.
    pub(crate) colon: &'static str,
    /// Written after `,` on one line.
    pub(crate) comma: &'static str,
    /// How strings are written.
    pub(crate) strings: Strings,
}

impl Style {
    /// `JSON.stringify(value)`.
    pub(crate) const COMPACT: Style = Style {
        indent: None,
        colon: ":",
        comma: ",",
        strings: Strings::Normalized,
    };
    /// `JSON.stringify(value, null, 2)` (and `serde_json::to_string_pretty`).
    pub(crate) const PRETTY: Style = Style {
        indent: Some("  "),
        colon: ": ",
        comma: ",",
        strings: Strings::Normalized,
    };
}

#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Open(u8),
    Close(u8),
    Colon,
    Comma,
    Str(&'a str),
    Scalar(&'a str),
}

/// Splits valid JSON text into tokens; `None` when it is not tokenizable (callers check
/// validity with serde_json first).
fn tokens(text: &str) -> Option<Vec<Token<'_>>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            c @ (b'{' | b'[') => {
                out.push(Token::Open(c));
                i += 1;
            }
            c @ (b'}' | b']') => {
                out.push(Token::Close(c));
                i += 1;
            }
            b':' => {
                out.push(Token::Colon);
                i += 1;
            }
            b',' => {
                out.push(Token::Comma);
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
                out.push(Token::Str(text.get(start..i)?));
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(
                        bytes[i],
                        b' ' | b'\t' | b'\n' | b'\r' | b',' | b':' | b'}' | b']' | b'{' | b'['
                    )
                {
                    i += 1;
                }
                out.push(Token::Scalar(&text[start..i]));
            }
        }
    }
    Some(out)
}

/// `text` (valid JSON) written in `style`, keys in their original order; `None` when `text` is
/// not valid JSON.
pub(crate) fn reformat(text: &str, style: Style) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let tokens = tokens(text)?;
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let mut depth = 0usize;
    let newline = |out: &mut String, depth: usize| {
        if let Some(indent) = style.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    };
    let mut iter = tokens.iter().peekable();
    while let Some(token) = iter.next() {
        match token {
            Token::Open(c) => {
                out.push(*c as char);
                // Empty containers stay `{}` / `[]`, as JSON.stringify writes them.
                if matches!(iter.peek(), Some(Token::Close(_))) {
                    continue;
                }
                depth += 1;
                newline(&mut out, depth);
            }
            Token::Close(c) => {
                if !out.ends_with(['{', '[']) {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(*c as char);
            }
            Token::Colon => out.push_str(style.colon),
            Token::Comma => {
                out.push(',');
                if style.indent.is_some() {
                    newline(&mut out, depth);
                } else {
                    out.push_str(&style.comma[1..]);
                }
            }
            Token::Str(raw) => match style.strings {
                Strings::AsIs => out.push_str(raw),
                Strings::Normalized => {
                    let value: String = serde_json::from_str(raw).ok()?;
                    out.push_str(&serde_json::to_string(&value).ok()?);
                }
            },
            Token::Scalar(raw) => out.push_str(raw),
        }
    }
    Some(out)
}

/// The body on one line, exactly as sent but for the whitespace between tokens.
pub(crate) fn one_line(text: &str) -> Option<String> {
    reformat(
        text,
        Style {
            strings: Strings::AsIs,
            ..Style::COMPACT
        },
    )
}

/// The body pretty-printed (two spaces), strings kept as sent.
pub(crate) fn pretty(text: &str) -> Option<String> {
    reformat(
        text,
        Style {
            strings: Strings::AsIs,
            ..Style::PRETTY
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str =
        r#"{"event":"email.opened","data":{"b":[1,2,{}],"a":"caf\u00e9 \/x","e":[]},"n":null}"#;

    #[test]
    fn compact_normalizes_strings_and_keeps_key_order() {
        assert_eq!(
            reformat(BODY, Style::COMPACT).unwrap(),
            r#"{"event":"email.opened","data":{"b":[1,2,{}],"a":"café /x","e":[]},"n":null}"#
        );
    }

    #[test]
    fn pretty_matches_json_stringify_with_two_spaces() {
        let expected = "{\n  \"event\": \"email.opened\",\n  \"data\": {\n    \"b\": [\n      1,\n      2,\n      {}\n    ],\n    \"a\": \"café /x\",\n    \"e\": []\n  },\n  \"n\": null\n}";
        assert_eq!(reformat(BODY, Style::PRETTY).unwrap(), expected);
        // And back.
        assert_eq!(
            one_line(expected).unwrap(),
            r#"{"event":"email.opened","data":{"b":[1,2,{}],"a":"café /x","e":[]},"n":null}"#
        );
    }

    #[test]
    fn pretty_equals_serde_json_for_sorted_input() {
        let value: serde_json::Value =
            serde_json::from_str(r#"{"a":[1,{"b":"x\n"}],"c":{},"d":[]}"#).unwrap();
        let text = value.to_string();
        assert_eq!(
            reformat(&text, Style::PRETTY).unwrap(),
            serde_json::to_string_pretty(&value).unwrap()
        );
    }

    #[test]
    fn invalid_json_is_none() {
        assert_eq!(reformat("{\"a\":", Style::COMPACT), None);
        assert_eq!(one_line("not json"), None);
        assert_eq!(pretty("[1, 2]").unwrap(), "[\n  1,\n  2\n]");
    }
}
