//! [`ConfigError`]: why a layer or verifier cannot be built.

use std::fmt;

/// A construction error: the configuration cannot work. The message says which secret and why,
/// never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No secret was configured.
    NoSecret,
    /// The secret at this index (0-based, in the order given) is empty.
    EmptySecret {
        /// Position of the secret in the configured list.
        index: usize,
    },
    /// The secret at this index starts or ends with whitespace, typically a pasted newline.
    SecretWhitespace {
        /// Position of the secret in the configured list.
        index: usize,
    },
    /// The timestamp tolerance is longer than [`MAX_TOLERANCE`](crate::MAX_TOLERANCE) (one
    /// day): that is no replay protection. Use `danger_disable_timestamp_check` to turn the
    /// check off on purpose.
    ToleranceTooLarge {
        /// The tolerance asked for, in seconds.
        secs: u64,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoSecret => f.write_str("no webhook secret configured"),
            ConfigError::EmptySecret { index } => {
                write!(f, "webhook secret #{index} is empty")
            }
            ConfigError::SecretWhitespace { index } => write!(
                f,
                "webhook secret #{index} starts or ends with whitespace (a pasted newline?); \
                 Metigan signs with the exact secret, so trim it"
            ),
            ConfigError::ToleranceTooLarge { secs } => write!(
                f,
                "a timestamp tolerance of {secs} s is more than one day, which leaves replays \
                 unchecked; use danger_disable_timestamp_check to turn the check off on purpose"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
