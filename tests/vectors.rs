//! Every case of the shared conformance vectors, through the pure verifier and through the
//! layer served by a real axum server on 127.0.0.1.

mod common;

use std::time::Duration;

use axum::routing::post;
use axum::{Extension, Router};
use metigan_webhook::{Envelope, MetiganSignatureLayer, Reason, VerifiedEvent, Verifier};

use common::{cases, post as http_post, serve_axum, Case};

/// The verdict of the pure core for one case: signature checks, then the envelope.
fn pure_verdict(case: &Case) -> String {
    let verifier = Verifier::new(&case.secrets)
        .unwrap()
        .with_tolerance(Duration::from_secs(case.tolerance));
    let verified = verifier.verify(
        case.signature_header.as_deref().map(str::as_bytes),
        case.timestamp_header.as_deref().map(str::as_bytes),
        case.body.as_bytes(),
        case.now,
    );
    match verified {
        Err(rejection) => rejection.reason().code().to_owned(),
        Ok(_) => match Envelope::parse(bytes::Bytes::from(case.body.clone())) {
            Ok(_) => "ok".to_owned(),
            Err(rejection) => rejection.reason().code().to_owned(),
        },
    }
}

/// The same verdict through `Verifier::verify_request`, from a `HeaderMap`; `None` when a
/// header value of the case cannot be an `http::HeaderValue` (it could not arrive in a request).
fn headers_verdict(case: &Case) -> Option<String> {
    let verifier = Verifier::new(&case.secrets)
        .unwrap()
        .with_tolerance(Duration::from_secs(case.tolerance));
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("x-webhook-signature", &case.signature_header),
        ("x-webhook-timestamp", &case.timestamp_header),
    ] {
        if let Some(value) = value {
            headers.insert(name, http::HeaderValue::from_bytes(value.as_bytes()).ok()?);
        }
    }
    Some(
        match verifier.verify_request(&headers, case.body.as_bytes(), case.now) {
            Err(rejection) => rejection.reason().code().to_owned(),
            Ok(_) => match Envelope::parse(bytes::Bytes::from(case.body.clone())) {
                Ok(_) => "ok".to_owned(),
                Err(rejection) => rejection.reason().code().to_owned(),
            },
        },
    )
}

#[test]
fn every_vector_through_verify_request() {
    let cases = cases();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &cases {
        let Some(got) = headers_verdict(case) else {
            continue;
        };
        ran += 1;
        if got != case.expect {
            failures.push(format!(
                "{}: expected {}, got {got}",
                case.name, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        ran * 10 >= cases.len() * 9,
        "only {ran} of {} cases ran",
        cases.len()
    );
}

#[test]
fn vendored_copy_matches_the_shared_vectors() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/vectors/signatures.json");
    let vendored = root.join("tests/vectors/signatures.json");
    if let (Ok(shared), Ok(vendored)) = (std::fs::read(shared), std::fs::read(vendored)) {
        assert!(
            shared == vendored,
            "tests/vectors/signatures.json is stale: copy ../shared/vectors/signatures.json over it"
        );
    }
}

#[test]
fn every_vector_through_the_pure_verifier() {
    let mut failures = Vec::new();
    for case in cases() {
        let got = pure_verdict(&case);
        if got != case.expect {
            failures.push(format!(
                "{}: expected {}, got {got}",
                case.name, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_expected_code_is_a_reason() {
    for case in cases() {
        assert!(
            case.expect == "ok" || Reason::from_code(&case.expect).is_some(),
            "{}: unknown code {}",
            case.name,
            case.expect
        );
    }
}

async fn handler(Extension(event): Extension<VerifiedEvent>, body: bytes::Bytes) -> String {
    // Echo what the handler saw so the test can check it.
    assert_eq!(event.body(), &body);
    format!("ok {} {}", event.event_type(), event.secret_index())
}

#[tokio::test]
async fn every_vector_through_the_layer_over_http() {
    let mut failures = Vec::new();
    for case in cases() {
        let now = case.now;
        let layer = MetiganSignatureLayer::builder()
            .secrets(&case.secrets)
            .tolerance(Duration::from_secs(case.tolerance))
            .clock(move || now)
            .build()
            .unwrap();
        let app = Router::new().route("/hook", post(handler)).layer(layer);
        let addr = serve_axum(app).await;
        let mut headers = vec![("content-type", "application/json")];
        if let Some(sig) = &case.signature_header {
            headers.push(("x-webhook-signature", sig));
        }
        if let Some(ts) = &case.timestamp_header {
            headers.push(("x-webhook-timestamp", ts));
        }
        let answer = http_post(addr, "/hook", &headers, case.body.clone()).await;
        let got = if answer.status.is_success() {
            assert!(
                answer.text().starts_with("ok "),
                "{}: {}",
                case.name,
                answer.text()
            );
            "ok".to_owned()
        } else {
            let text = answer.text();
            let code = text.split(':').next().unwrap_or_default().to_owned();
            let reason = Reason::from_code(&code)
                .unwrap_or_else(|| panic!("{}: unexpected body {text:?}", case.name));
            assert_eq!(answer.status, reason.status(), "{}", case.name);
            assert_eq!(
                answer.headers["content-type"], "text/plain; charset=utf-8",
                "{}",
                case.name
            );
            code
        };
        if got != case.expect {
            failures.push(format!(
                "{}: expected {}, got {got}",
                case.name, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
