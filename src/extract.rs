//! Handler arguments: the [`VerifiedEvent`] and [`TypedEvent`] extractors of axum (here), the
//! [`VerifiedEvent`] extractor of actix-web (`actix.rs`), and their one rejection.

use std::fmt;

#[cfg(feature = "axum")]
use axum_core::extract::FromRequestParts;
#[cfg(feature = "axum")]
use axum_core::response::{IntoResponse, Response};
#[cfg(feature = "axum")]
use http::request::Parts;
#[cfg(feature = "axum")]
use http::StatusCode;

#[cfg(feature = "axum")]
use crate::event::VerifiedEvent;
#[cfg(feature = "axum")]
use crate::typed::TypedEvent;

/// The body of the `500` answered by [`MissingVerifiedEvent`].
pub(crate) const MISSING_LAYER_BODY: &str =
    "webhook receiver misconfigured: signature layer missing\n";

/// The rejection of the [`VerifiedEvent`](crate::VerifiedEvent) extractor (axum's and
/// actix-web's): the handler is not behind [`MetiganSignatureLayer`](crate::MetiganSignatureLayer).
/// This is a server bug, so it answers 500 and logs an error saying how to fix it.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct MissingVerifiedEvent;

impl fmt::Display for MissingVerifiedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "no VerifiedEvent in the request extensions: \
             is the route behind MetiganSignatureLayer?",
        )
    }
}

impl std::error::Error for MissingVerifiedEvent {}

#[cfg(feature = "axum")]
impl IntoResponse for MissingVerifiedEvent {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (StatusCode::INTERNAL_SERVER_ERROR, MISSING_LAYER_BODY).into_response()
    }
}

#[cfg(feature = "axum")]
/// ```
/// use axum::{routing::post, Router};
/// use metigan_webhook::{MetiganSignatureLayer, VerifiedEvent};
///
/// async fn handler(event: VerifiedEvent) -> &'static str {
///     println!("{} for {:?}", event.event_type(), event.recipient());
///     "OK"
/// }
///
/// // On the POST handler only: another method answers 405 before the layer runs.
/// let layer = MetiganSignatureLayer::new("whsec_example").unwrap();
/// let app: Router = Router::new().route("/webhooks/metigan", post(handler).route_layer(layer));
/// # drop(app);
/// ```
impl<S: Send + Sync> FromRequestParts<S> for VerifiedEvent {
    type Rejection = MissingVerifiedEvent;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<VerifiedEvent>()
            .cloned()
            .ok_or(MissingVerifiedEvent)
    }
}

#[cfg(feature = "axum")]
/// The typed event, built from the [`VerifiedEvent`] the layer put in the extensions (the body
/// is not parsed again). Take both as arguments when the handler also needs the envelope.
///
/// ```
/// use axum::{routing::post, Router};
/// use metigan_webhook::{MetiganSignatureLayer, TypedEvent};
///
/// async fn handler(event: TypedEvent) -> &'static str {
///     match event {
///         TypedEvent::EmailBounced(bounce) if bounce.is_hard_bounce() => {
///             println!("stop sending to {:?}", bounce.recipient);
///         }
///         TypedEvent::EmailClicked(click) => println!("clicked {:?}", click.clicked_url()),
///         _ => {}
///     }
///     "OK"
/// }
///
/// let layer = MetiganSignatureLayer::new("whsec_example").unwrap();
/// let app: Router = Router::new().route("/webhooks/metigan", post(handler).route_layer(layer));
/// # drop(app);
/// ```
impl<S: Send + Sync> FromRequestParts<S> for TypedEvent {
    type Rejection = MissingVerifiedEvent;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<VerifiedEvent>()
            .map(VerifiedEvent::typed)
            .ok_or(MissingVerifiedEvent)
    }
}
