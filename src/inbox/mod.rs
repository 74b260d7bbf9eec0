//! A durable inbox: answer `200 OK` only once the event is on disk, then run your handler for
//! it with retries, leases, dead letters and replay (feature `inbox`).
//!
//! This first part is the storage: the [`InboxStore`] trait and [`FileStore`], one redb file
//! (pure Rust, no server), created with mode `0600`, locked against a second opener, with
//! group commit.

mod error;
mod file;
mod store;

pub use error::{ErrorKind, InboxError};
pub use file::{FileStats, FileStore};
pub use store::{
    Appended, BoxFuture, ClaimRequest, Claimed, ClaimedEvent, Counts, EventId, InboxStore, Lease,
    ListQuery, NewEvent, Page, Purged, Settle, State, StoredEvent, MAX_LIST_LIMIT,
};
