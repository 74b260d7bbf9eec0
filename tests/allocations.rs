//! DESIGN.md 6, memory: what the hot paths allocate, counted by a global allocator.
//!
//! The pure verifier allocates nothing for a real Metigan delivery (one `v1` value), and the
//! envelope parse at most serde_json's scratch stack (a known event type and a plain
//! `messageId` are not copied); a request rejected on its header allocates the same whatever
//! its declared body size, because the body is never read.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use metigan_webhook::{sign, Envelope, MetiganSignatureLayer, Reason, VerifiedBody, Verifier};
use tower::{ServiceBuilder, ServiceExt};

/// Counts the allocations of the current thread (tests run on several threads).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The allocations made by `f` on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

const SECRET: &str = "whsec_allocation_test";
const NOW: u64 = 1_700_000_000;

fn event() -> Bytes {
    let body = br#"{"event":"email.delivered","messageId":"msg_2f9c81d07be34a6f9d1e","data":{"recipient":"jane@example.com","subject":"Your invoice \u20ac","metadata":{"ip":"203.0.113.42"}},"timestamp":1705314600123}"#;
    // Shared once here, so cloning it in the measured code is a reference count, as in the layer.
    let bytes = Bytes::copy_from_slice(body);
    drop(bytes.clone());
    bytes
}

#[test]
fn verifier_and_envelope_allocate_nothing() {
    let verifier = Verifier::new([SECRET]).unwrap();
    let body = event();
    let header = sign(SECRET, NOW, &body);

    let (n, verified) = allocations(|| verifier.verify(Some(header.as_bytes()), None, &body, NOW));
    assert!(verified.is_ok());
    assert_eq!(n, 0, "verify allocated");

    let (n, envelope) = allocations(|| Envelope::parse(body.clone()));
    let envelope = envelope.unwrap();
    // The one allocation left is serde_json's own: skipping a value nested two levels deep
    // (`data.metadata` here) pushes onto its scratch stack, a small vector per parse.
    assert!(n <= 1, "the envelope parse allocated {n} times");
    assert_eq!(envelope.message_id(), Some("msg_2f9c81d07be34a6f9d1e"));
    assert_eq!(envelope.timestamp_ms(), Some(1_705_314_600_123));

    for (header, reason) in [
        (None, Reason::MissingSignature),
        (Some("t=17e8,v1=00"), Reason::MalformedSignature),
        (Some(header.as_str()), Reason::TimestampOutOfTolerance),
    ] {
        let (n, rejected) =
            allocations(|| verifier.check_header(header.map(str::as_bytes), None, NOW + 3600));
        assert_eq!(rejected.unwrap_err().reason(), reason);
        assert_eq!(n, 0, "rejecting {reason} allocated");
    }
}

/// Polls a future that never waits to its end.
fn run<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("waited"),
    }
}

/// A body that records whether anyone polled it.
struct Watched {
    inner: Full<Bytes>,
    polled: Arc<AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.polled.store(true, Ordering::SeqCst);
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[test]
fn a_header_rejection_allocates_the_same_for_any_declared_size() {
    let layer = MetiganSignatureLayer::builder()
        .secret(SECRET)
        .clock(|| NOW)
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_: Request<VerifiedBody>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"OK"))))
        });
    let mut counts = Vec::new();
    for size in [1024, 1024 * 1024] {
        let polled = Arc::new(AtomicBool::new(false));
        let body = Watched {
            inner: Full::new(Bytes::from(vec![b' '; size])),
            polled: polled.clone(),
        };
        let request = Request::post("/webhooks/metigan")
            .header("content-length", size)
            .body(body)
            .unwrap();
        let (n, response) = allocations(|| run(service.clone().oneshot(request)));
        assert_eq!(response.unwrap().status(), StatusCode::UNAUTHORIZED);
        assert!(!polled.load(Ordering::SeqCst), "the body is never read");
        println!("header rejection, declared {size} B: {n} allocations");
        counts.push(n);
    }
    assert_eq!(
        counts[0], counts[1],
        "allocations for 1 KiB and 1 MiB declared bodies"
    );
}

/// An accepted request: beyond what the request already holds, the layer allocates the event
/// (one `Arc`), its place in the request's extensions (the map, created on first insert, and
/// the boxed value) and serde_json's scratch stack; deduplication adds the key's text. The body
/// is not copied (it arrives in one chunk) and the `X-Webhook-Id` is shared, not copied.
#[test]
fn an_accepted_request_allocates_the_event_and_little_else() {
    use metigan_webhook::idempotency::Dedupe;
    use metigan_webhook::VerifiedEvent;
    for dedupe in [false, true] {
        let mut builder = MetiganSignatureLayer::builder()
            .secret(SECRET)
            .clock(|| NOW);
        if dedupe {
            builder = builder.deduplicate(Dedupe::in_memory());
        }
        let service = ServiceBuilder::new()
            .layer(builder.build().unwrap())
            .service_fn(|req: Request<VerifiedBody>| async move {
                let ok = req.extensions().get::<VerifiedEvent>().is_some();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(if ok {
                    b"OK"
                } else {
                    b"no event"
                }))))
            });
        let mut counts = Vec::new();
        for n in 0..3 {
            // Shared before the measure, as hyper's buffers are: cloning is a reference count.
            let body = Bytes::from(
                String::from_utf8(event().to_vec())
                    .unwrap()
                    .replace("msg_2f9c81d07be34a6f9d1e", &format!("msg_{n:020}")),
            );
            drop(body.clone());
            let request = Request::post("/webhooks/metigan")
                .header("content-type", "application/json")
                .header("content-length", body.len())
                .header(
                    "x-webhook-id",
                    http::HeaderValue::from_static("wh_0123456789"),
                )
                .header("x-webhook-signature", sign(SECRET, NOW, &body))
                .body(Full::new(body))
                .unwrap();
            let (count, response) = allocations(|| run(service.clone().oneshot(request)));
            assert_eq!(response.unwrap().status(), StatusCode::OK);
            counts.push(count);
        }
        println!("accepted (deduplicated: {dedupe}): {counts:?} allocations");
        let limit = if dedupe { 6 } else { 5 };
        assert!(counts.iter().all(|n| *n <= limit), "{counts:?} > {limit}");
    }
}
