//! A JSON API to see and repair an [`Inbox`] from outside the process: an axum [`Router`] for
//! an internal port (feature `inbox-admin`).
//!
//! **It has no authentication.** Anyone who reaches it can read events (with `?body=true`,
//! their bodies, which hold personal data), replay dead letters and purge done events. Serve it
//! on a loopback or private address, on its own port, never on the port Metigan posts to; add
//! your own authentication layer (`router(inbox).layer(..)`) if it must be reachable from
//! other machines. Requests that carry an `Origin` header are refused (`403`), so a web page
//! open in a browser on the same machine cannot call it.
//!
//! | request | answer |
//! |---|---|
//! | `GET /inbox/stats` | `{"queued":0,"running":0,"retrying":0,"dead":2,"done":40,"total":42}` |
//! | `GET /inbox/events?state=dead&limit=50&cursor=C` | `{"events":[..],"next_cursor":"17"}`, oldest first, no bodies; `state`, `limit` (1 to 1000, default 50) and `cursor` (a previous `next_cursor`) are optional; `next_cursor` is `null` on the last page |
//! | `GET /inbox/events/{id}` | one event, without its body; `?body=true` adds it |
//! | `POST /inbox/events/{id}/replay` | queues dead letter `id` again: `{"replayed":1,"event":{..}}`; `404` when there is no such event, `409` when it is not a dead letter |
//! | `POST /inbox/replay` | replays every dead letter: `{"replayed":N}` |
//! | `POST /inbox/purge?older_than_secs=N` | removes done events finished more than `N` seconds ago, and deduplication keys past their TTL: `{"purged_events":N,"purged_keys":M}` |
//!
//! An event is an object:
//!
//! ```json
//! {"id":7,"state":"dead","event_type":"email.bounced","message_id":"msg_1",
//!  "key":"email.bounced:msg_1","webhook_id":"wh_1","signed_at":1700000000,"secret_index":0,
//!  "received_at":"2023-11-14T22:13:20.000Z","attempts":15,"replays":0,
//!  "last_error":"smtp relay refused","due_at":null,"finished_at":"2023-11-15T22:28:50.000Z"}
//! ```
//!
//! Times are RFC 3339 in UTC, `signed_at` the signed `t` in Unix seconds. With `?body=true` it
//! also has `"body"` (the raw body: its text when it is UTF-8, else its base64),
//! `"body_encoding"` (`"utf-8"` or `"base64"`) and `"body_bytes"`. Secrets are never stored, so
//! never shown.
//!
//! Errors are `{"error":"..."}`: `400` for a bad parameter (an unknown one included, so that a
//! typo does not silently list everything), `403` for a browser's request, `404` and `409` as
//! above, `405` (with `Allow`) for another method, `503` when the store cannot be read or
//! cannot commit. Every answer has `Cache-Control: no-store`. A path outside these answers
//! axum's empty `404`: the router sets no fallback of its own, so it merges into yours.
//!
//! The `metigan-webhook inbox` commands of the command-line tool (feature `cli`) talk to this
//! router.
//!
//! # Example
//!
//! The webhook endpoint on the public port, the admin router on 127.0.0.1 only:
//!
//! ```
//! use axum::{routing::post_service, Router};
//! use metigan_webhook::inbox::{admin, Inbox};
//! use metigan_webhook::MetiganSignatureLayer;
//! # use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("admin-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let inbox = Inbox::open(dir.join("metigan-inbox.redb"))?;
//! let app: Router = Router::new()
//!     .route("/webhooks/metigan", post_service(inbox.service()))
//!     .route_layer(MetiganSignatureLayer::new("whsec_example")?);
//! # drop(app);
//!
//! let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = internal.local_addr()?;
//! let admin = admin::router(inbox.clone());
//! tokio::spawn(async move { axum::serve(internal, admin).await });
//!
//! let mut client = tokio::net::TcpStream::connect(addr).await?;
//! client
//!     .write_all(b"GET /inbox/stats HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
//!     .await?;
//! let mut answer = String::new();
//! client.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
//! assert!(answer.ends_with(r#"{"queued":0,"running":0,"retrying":0,"dead":0,"done":0,"total":0}"#));
//! # drop(inbox); let _ = std::fs::remove_dir_all(&dir);
//! # Ok(()) }
//! ```
//!
//! `axum::serve` needs axum's `tokio` and `http1` features in your own `Cargo.toml`;
//! [`server::Server`](crate::server::Server) (feature `server`) serves the router too. To put
//! it beside routes that use a state, merge it after `with_state`:
//! `Router::new().route(..).with_state(state).merge(admin::router(inbox))`; to put it under a
//! prefix, `Router::new().nest("/admin", admin::router(inbox))` (the tool's `--admin-url` then
//! ends in `/admin`).

mod params;
mod reply;
mod routes;
mod wire;

use axum::routing::{get, post};
use axum::Router;

use super::handle::Inbox;

/// The admin API's routes over `inbox`, all under `/inbox/`: see the [module docs](self).
///
/// It has no authentication: serve it on an internal address only.
pub fn router(inbox: Inbox) -> Router {
    Router::new()
        .route(
            "/inbox/stats",
            get(routes::stats).fallback(routes::get_only),
        )
        .route(
            "/inbox/events",
            get(routes::list).fallback(routes::get_only),
        )
        .route(
            "/inbox/events/{id}",
            get(routes::show).fallback(routes::get_only),
        )
        .route(
            "/inbox/events/{id}/replay",
            post(routes::replay_one).fallback(routes::post_only),
        )
        .route(
            "/inbox/replay",
            post(routes::replay_all).fallback(routes::post_only),
        )
        .route(
            "/inbox/purge",
            post(routes::purge).fallback(routes::post_only),
        )
        .route_layer(axum::middleware::from_fn(routes::refuse_browsers))
        .with_state(inbox)
}
