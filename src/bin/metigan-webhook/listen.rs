//! `listen`: a local receiver that prints every verified event, for watching what Metigan sends
//! through a tunnel.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metigan_webhook::idempotency::Duplicate;
use metigan_webhook::{
    MetiganSignature, MetiganSignatureLayer, Reason, Rejection, ResponseBody, VerifiedBody,
    VerifiedEvent,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::escape::{json_safe, Escaped};
use crate::{json, unix_now, Failure};

/// How verified events are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// A summary line, then the body as indented JSON (key order as sent).
    Pretty,
    /// Exactly one line per event: the body as compact JSON (for `jq` and scripts).
    Line,
}

/// What `listen` needs.
pub(crate) struct Listen {
    pub(crate) addr: SocketAddr,
    pub(crate) format: Format,
    pub(crate) save: Option<PathBuf>,
    pub(crate) layer: MetiganSignatureLayer,
    pub(crate) body_limit: usize,
}

/// Prints the verified event and answers `200 OK`.
#[derive(Clone)]
struct Printer {
    format: Format,
}

impl Service<Request<VerifiedBody>> for Printer {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<VerifiedBody>) -> Self::Future {
        if let Some(event) = request.extensions().get::<VerifiedEvent>() {
            print_event(self.format, request.method(), request.uri(), event);
        }
        let mut response = Response::new(Full::new(Bytes::from_static(b"OK")));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        std::future::ready(Ok(response))
    }
}

fn print_event(format: Format, method: &http::Method, uri: &http::Uri, event: &VerifiedEvent) {
    let text = String::from_utf8_lossy(event.body());
    let mut out = std::io::stdout().lock();
    let _ = match format {
        Format::Line => writeln!(
            out,
            "{}",
            json_safe(&json::one_line(&text).unwrap_or(text.into_owned()))
        ),
        Format::Pretty => {
            // Everything taken from the event is escaped: it cannot end the line or rewrite it.
            let kind = event.event_type();
            let mut summary = format!("── {} {}  {}", method, uri.path(), Escaped(kind.as_str()));
            if let Some(id) = event.message_id() {
                summary.push_str(&format!("  messageId={}", Escaped(id)));
            }
            summary.push_str(&format!("  t={}", event.signed_at()));
            if let Some(id) = event.webhook_id() {
                summary.push_str(&format!("  webhook-id={id}"));
            }
            if let Some(recipient) = event.recipient() {
                summary.push_str(&format!("  recipient={}", Escaped(recipient)));
            }
            writeln!(
                out,
                "{summary}\n{}",
                // Line by line: the pretty layout's own newlines stay.
                json::pretty(&text)
                    .unwrap_or(text.into_owned())
                    .lines()
                    .map(json_safe)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        }
    }
    .and_then(|()| out.flush());
}

struct State {
    service: MetiganSignature<Printer>,
    save: Option<PathBuf>,
    body_limit: usize,
    seq: AtomicU64,
}

/// The layer's answer (or the same answer for a body refused before it reached the layer).
type Answer = Response<ResponseBody<Full<Bytes>>>;

/// Why a body was not read whole: the rejection, and a line for the saved capture.
struct Cut {
    reason: Reason,
    note: String,
}

/// Reads the body (bounded by `limit`), keeping what arrived even when it is refused: over the
/// limit (the bytes read so far, at most one read past `limit`) or cut off by a read error.
async fn read_body(
    mut body: Incoming,
    limit: usize,
    declared: Option<&str>,
) -> (Bytes, Option<Cut>) {
    let mut bytes = Vec::new();
    let declared = declared.map_or_else(
        || "no Content-Length".to_owned(),
        |length| format!("Content-Length {length}"),
    );
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                    if bytes.len() > limit {
                        let note = format!(
                            "body_too_large: over the {limit}-byte --body-limit, reading stopped \
                             after {} bytes ({declared})",
                            bytes.len()
                        );
                        let cut = Cut {
                            reason: Reason::BodyTooLarge,
                            note,
                        };
                        return (Bytes::from(bytes), Some(cut));
                    }
                }
            }
            Err(e) => {
                let note = format!(
                    "body_read_error: reading failed after {} bytes ({declared}): {e}",
                    bytes.len()
                );
                let cut = Cut {
                    reason: Reason::BodyReadError,
                    note,
                };
                return (Bytes::from(bytes), Some(cut));
            }
        }
    }
    (Bytes::from(bytes), None)
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Answer, Infallible> {
    let (parts, body) = request.into_parts();
    let received = unix_now();
    let seq = state.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let what = format!("{} {}", parts.method, parts.uri.path());
    // Read the body (bounded) before the layer, so it can be saved whatever happens next: a
    // rejection by the layer, or a body refused here.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let (bytes, cut) = read_body(body, state.body_limit, declared.as_deref()).await;
    if let Some(dir) = &state.save {
        let name = match cut {
            Some(_) => format!("{received}-{seq:04}-truncated.http"),
            None => format!("{received}-{seq:04}.http"),
        };
        let path = dir.join(name);
        let note = cut.as_ref().map(|cut| cut.note.as_str());
        let raw =
            crate::net::write_captured(&parts.method, &parts.uri, &parts.headers, &bytes, note);
        let marked = match &cut {
            Some(cut) => format!(
                " (truncated: {}, {} body bytes)",
                cut.reason.code(),
                bytes.len()
            ),
            None => String::new(),
        };
        match std::fs::write(&path, raw) {
            Ok(()) => log!("saved {what} to {}{marked}", path.display()),
            Err(e) => log!("cannot save {what} to {}: {e}", path.display()),
        }
    }
    if let Some(Cut { reason, .. }) = cut {
        log!(
            "rejected {what}: {} ({})",
            reason.code(),
            reason.status().as_u16()
        );
        // The layer's own answer for it, as if the layer had cut the body.
        return Ok(Rejection::new(reason).into_response());
    }
    let mut service = state.service.clone();
    if let Err(never) =
        std::future::poll_fn(|cx| Service::<Request<Full<Bytes>>>::poll_ready(&mut service, cx))
            .await
    {
        match never {}
    }
    let response = match service
        .call(Request::from_parts(parts, Full::new(bytes)))
        .await
    {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if let Some(rejection) = response.extensions().get::<Rejection>() {
        log!(
            "rejected {what}: {} ({})",
            rejection.reason().code(),
            response.status().as_u16()
        );
    } else if let Some(duplicate) = response.extensions().get::<Duplicate>() {
        log!(
            "duplicate {what}: {duplicate:?}, not printed again ({})",
            response.status().as_u16()
        );
    }
    Ok(response)
}

/// How long `listen` waits after a failed accept before trying again.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs until Ctrl-C or SIGTERM. Output that cannot be written (a closed stdout or stderr) is
/// dropped: the receiver keeps serving.
pub(crate) async fn run(listen: Listen) -> Result<(), Failure> {
    if let Some(dir) = &listen.save {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::io(format!("cannot create {}: {e}", dir.display())))?;
    }
    let listener = tokio::net::TcpListener::bind(listen.addr)
        .await
        .map_err(|e| Failure::io(format!("cannot listen on {}: {e}", listen.addr)))?;
    let local = listener.local_addr().unwrap_or(listen.addr);
    let state = Arc::new(State {
        service: listen.layer.layer(Printer {
            format: listen.format,
        }),
        save: listen.save,
        body_limit: listen.body_limit,
        seq: AtomicU64::new(0),
    });
    log!("listening on http://{local} (any path, POST); Ctrl-C to stop");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors (EMFILE) and the like: the pending connection stays
                // queued, so the listener is ready again at once. Pause instead of spinning; a
                // connection that closes meanwhile frees a descriptor.
                log!("accept failed: {e}");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(state.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    log!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
