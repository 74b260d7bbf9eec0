//! What the examples print from an event, escaped so that it cannot forge a log line.

use std::fmt;

/// Text from an event, printed with its control characters escaped (`\n`, `\r`, `\t`,
/// `\u{1b}`, ...), as are backslashes and the Unicode line separators and direction
/// overrides, so that a value can neither end the line nor rewrite it on a terminal.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let mut chars = rest[at..].chars();
            let Some(c) = chars.next() else { break };
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}
