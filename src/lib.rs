#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "actix")]
pub mod actix;
mod body;
mod buffer;
mod config_error;
mod event;
#[cfg(any(feature = "axum", feature = "actix"))]
mod extract;
mod future;
pub mod idempotency;
#[cfg(feature = "inbox")]
pub mod inbox;
mod layer;
mod log;
#[cfg(feature = "metrics")]
pub mod metrics;
mod peer;
mod record;
mod rejection;
mod response;
#[cfg(feature = "server")]
pub mod server;
mod service;
pub mod signature;
#[cfg(feature = "testing")]
pub mod testing;
pub mod typed;

pub use body::{ResponseBody, VerifiedBody};
pub use config_error::ConfigError;
pub use event::{Envelope, EventType, VerifiedEvent};
#[cfg(any(feature = "axum", feature = "actix"))]
pub use extract::MissingVerifiedEvent;
pub use future::ResponseFuture;
pub use layer::{
    MetiganSignatureBuilder, MetiganSignatureLayer, DEFAULT_BODY_LIMIT, DEFAULT_MAX_BUFFERED_BYTES,
    MAX_TOLERANCE, SIGNATURE_HEADER, TIMESTAMP_HEADER, WEBHOOK_ID_HEADER,
};
pub use peer::PeerAddr;
pub use rejection::{Reason, Rejection};
pub use service::MetiganSignature;
pub use signature::{sign, SignatureHeader, Verified, Verifier};
pub use typed::{
    AudienceData, BounceType, ContactData, EmailData, EmailMetadata, TypedEvent, UnknownEvent,
};

/// The boxed error type of request bodies the layer accepts (`B::Error: Into<BoxError>`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
