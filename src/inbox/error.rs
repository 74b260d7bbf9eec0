//! [`InboxError`]: what an inbox operation reports when it cannot do its work.

use std::fmt;

/// What kind of failure an [`InboxError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The inbox file is already open, by another process or by another store of this one.
    AlreadyOpen,
    /// The storage failed: an I/O error, a full or read-only file system, a corrupt file.
    Storage,
    /// The store was closed (its writer stopped), so nothing can be written any more.
    Closed,
    /// The operation needs a Tokio runtime and was called outside one.
    NoRuntime,
}

/// An inbox store or worker could not do what was asked; nothing was committed.
///
/// Its text names the cause (and the file, for open errors), never an event's body.
#[derive(Debug, Clone)]
pub struct InboxError {
    kind: ErrorKind,
    message: String,
}

impl InboxError {
    /// An error of `kind` with a message for the logs (it must not contain bodies or secrets).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        InboxError {
            kind,
            message: message.into(),
        }
    }

    /// A storage failure.
    pub fn storage(message: impl fmt::Display) -> Self {
        InboxError::new(ErrorKind::Storage, message.to_string())
    }

    /// The store's writer has stopped.
    pub(crate) fn closed() -> Self {
        InboxError::new(ErrorKind::Closed, "the inbox store is closed")
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for InboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inbox: {}", self.message)
    }
}

impl std::error::Error for InboxError {}
