//! The admin API's handlers: each parses its parameters, asks the [`Inbox`] and answers JSON.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};

use super::params;
use super::reply::{json, AdminError};
use super::wire::{CountsJson, EventJson, PageJson, PurgedJson, ReplayedAll, ReplayedOne};
use crate::inbox::handle::Inbox;
use crate::inbox::store::{EventId, State as EventState};

type Answer = Result<Response, AdminError>;

/// Refuses requests made by web pages. Browsers send `Origin` with every cross-origin request
/// and every `POST`; the tool and `curl` do not. Without this, a page open on the operator's
/// machine could replay or purge through a simple cross-origin `POST`.
pub(super) async fn refuse_browsers(request: Request, next: Next) -> Response {
    if request.headers().contains_key(header::ORIGIN) {
        return AdminError::forbidden(
            "the inbox admin API does not answer requests from web pages (an Origin header)",
        )
        .into_response();
    }
    next.run(request).await
}

/// `GET /inbox/stats`.
pub(super) async fn stats(State(inbox): State<Inbox>, RawQuery(query): RawQuery) -> Answer {
    params::none(query.as_deref()).map_err(AdminError::bad_request)?;
    let counts = inbox.counts().await?;
    Ok(json(StatusCode::OK, &CountsJson::from(counts)))
}

/// `GET /inbox/events?state=..&limit=..&cursor=..`.
pub(super) async fn list(State(inbox): State<Inbox>, RawQuery(query): RawQuery) -> Answer {
    let query = params::list_query(query.as_deref()).map_err(AdminError::bad_request)?;
    let page = inbox.list(query).await?;
    Ok(json(
        StatusCode::OK,
        &PageJson {
            events: page.events.iter().map(EventJson::from).collect(),
            next_cursor: page.next.map(|id| id.to_string()),
        },
    ))
}

/// `GET /inbox/events/{id}[?body=true]`.
pub(super) async fn show(
    State(inbox): State<Inbox>,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Answer {
    let id = event_id(id)?;
    let with_body = params::with_body(query.as_deref()).map_err(AdminError::bad_request)?;
    let event = if with_body {
        inbox.get_with_body(id).await?
    } else {
        inbox.get(id).await?
    };
    let event = event.ok_or_else(|| no_event(id))?;
    Ok(json(StatusCode::OK, &EventJson::from(&event)))
}

/// `POST /inbox/events/{id}/replay`.
pub(super) async fn replay_one(
    State(inbox): State<Inbox>,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Answer {
    let id = event_id(id)?;
    params::none(query.as_deref()).map_err(AdminError::bad_request)?;
    if inbox.replay(id).await? {
        // As it is now: queued, or already taken by a worker.
        let event = inbox.get(id).await?;
        return Ok(json(
            StatusCode::OK,
            &ReplayedOne {
                replayed: 1,
                event: event.as_ref().map(EventJson::from),
            },
        ));
    }
    match inbox.get(id).await? {
        None => Err(no_event(id)),
        // It was not dead when asked, and died since (its last attempt just failed).
        Some(event) if event.state == EventState::Dead => Err(AdminError::conflict(format!(
            "event {id} became a dead letter while it was replayed: replay it again"
        ))),
        Some(event) => Err(AdminError::conflict(format!(
            "event {id} is {}, not {}: only dead letters are replayed",
            event.state,
            EventState::Dead
        ))),
    }
}

/// `POST /inbox/replay`.
pub(super) async fn replay_all(State(inbox): State<Inbox>, RawQuery(query): RawQuery) -> Answer {
    params::none(query.as_deref()).map_err(AdminError::bad_request)?;
    let replayed = inbox.replay_dead().await?;
    Ok(json(StatusCode::OK, &ReplayedAll { replayed }))
}

/// `POST /inbox/purge?older_than_secs=N`.
pub(super) async fn purge(State(inbox): State<Inbox>, RawQuery(query): RawQuery) -> Answer {
    let retention = params::older_than(query.as_deref()).map_err(AdminError::bad_request)?;
    let purged = inbox.purge(retention).await?;
    Ok(json(StatusCode::OK, &PurgedJson::from(purged)))
}

/// Any other method on a route of `GET` (and `HEAD`).
pub(super) async fn get_only() -> AdminError {
    AdminError::method_not_allowed("GET, HEAD")
}

/// Any other method on a route of `POST`.
pub(super) async fn post_only() -> AdminError {
    AdminError::method_not_allowed("POST")
}

fn event_id(path: Result<Path<String>, PathRejection>) -> Result<EventId, AdminError> {
    let Path(id) = path.map_err(|rejection| AdminError::bad_request(rejection.body_text()))?;
    params::event_id(&id).map_err(AdminError::bad_request)
}

fn no_event(id: EventId) -> AdminError {
    AdminError::not_found(format!("no event {id}"))
}
