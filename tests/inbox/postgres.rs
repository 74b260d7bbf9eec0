//! The PostgreSQL store (feature `postgres`) against a real server started by each test: the
//! behaviour suite every store passes, and what only a shared database adds.

use std::sync::Arc;
use std::time::Duration;

use metigan_webhook::inbox::{
    Appended, ClaimRequest, ErrorKind, InboxStore, PostgresStore, Settle, State,
};

use crate::new_event;
use crate::postgres_server::PostgresServer;

async fn postgres_store() -> (PostgresStore, PostgresServer) {
    let server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let store = PostgresStore::connect(&server.url()).await.unwrap();
    (store, server)
}

store_suite!(postgres_store);

/// The worker's behaviours over the PostgreSQL store.
mod worker {
    use metigan_webhook::inbox::Inbox;

    use crate::postgres_server::PostgresServer;

    async fn postgres_inbox() -> (Inbox, PostgresServer) {
        let (store, server) = super::postgres_store().await;
        (Inbox::new(store), server)
    }

    worker_suite!(postgres_inbox);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_database_share_keys_and_never_claim_one_event_twice() {
    let (first, _server) = postgres_store().await;
    // A second instance connects to the same database (its schema is already there).
    let second = PostgresStore::connect(&_server.url()).await.unwrap();
    let (first, second) = (Arc::new(first), Arc::new(second));
    // The same delivery through both instances at once: one record.
    let copies: Vec<_> = (0..40)
        .map(|n| {
            let store = if n % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tokio::spawn(async move { store.append(new_event(Some("m-shared"))).await.unwrap() })
        })
        .collect();
    let mut stored = 0;
    for copy in copies {
        if matches!(copy.await.unwrap(), Appended::Stored(_)) {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
    for n in 0..199 {
        first
            .append(new_event(Some(&format!("m-{n}"))))
            .await
            .unwrap();
    }
    // Both claim concurrently until nothing is left: every event exactly once.
    let claimers: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .map(|store| {
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let claimed = store
                        .claim(ClaimRequest::new(7, Duration::from_secs(30), 5))
                        .await
                        .unwrap();
                    if claimed.events.is_empty() {
                        return ids;
                    }
                    for event in claimed.events {
                        assert!(store.settle(event.lease, Settle::Done).await.unwrap());
                        ids.push(event.lease.id());
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (count, all.len()),
        (200, 200),
        "each event claimed exactly once"
    );
    assert_eq!(first.counts().await.unwrap().get(State::Done), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_a_storage_error_and_the_store_recovers() {
    let (store, mut server) = postgres_store().await;
    store.append(new_event(Some("m-before"))).await.unwrap();
    tokio::task::block_in_place(|| server.stop());
    let error = store.append(new_event(Some("m-down"))).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Storage);
    let shown = error.to_string();
    assert!(shown.contains("PostgreSQL"), "{shown}");
    tokio::task::block_in_place(|| server.start_again());
    // The pool drops its dead connections and opens new ones.
    let mut appended = None;
    for _ in 0..20 {
        match store.append(new_event(Some("m-after"))).await {
            Ok(done) => {
                appended = Some(done);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(
        matches!(appended, Some(Appended::Stored(_))),
        "{appended:?}"
    );
    assert_eq!(store.counts().await.unwrap().queued, 2);
}

#[tokio::test]
async fn a_bad_url_or_an_unreachable_server_fails_without_the_password() {
    let error = PostgresStore::connect("not a url at all")
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Storage);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let error = PostgresStore::builder()
        .connect_timeout(Duration::from_secs(2))
        .connect(&format!(
            "postgres://webhooks:hunter2-secret@127.0.0.1:{port}/db"
        ))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Storage);
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

/// A client configuration trusting only `cert_pem`.
fn tls_trusting(cert_pem: &str) -> tokio_postgres_rustls::MakeRustlsConnect {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_tls_talks_tls_and_a_required_tls_is_refused_without_it() {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (generated.cert.pem(), generated.signing_key.serialize_pem());
    let server = tokio::task::spawn_blocking({
        let (cert, key) = (cert.clone(), key.clone());
        move || PostgresServer::start_with_tls(&cert, &key)
    })
    .await
    .unwrap();
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=require&hostaddr=127.0.0.1",
        server.port
    );
    // Without a TLS connector, `sslmode=require` cannot be met: an error, not plain TCP.
    let error = PostgresStore::connect(&url).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Storage);
    let store = PostgresStore::builder()
        .connect_with_tls(&url, tls_trusting(&cert))
        .await
        .unwrap();
    assert!(matches!(
        store.append(new_event(Some("m-tls"))).await.unwrap(),
        Appended::Stored(_)
    ));
    // Every connection the store opened is encrypted, as the server sees it.
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE a.application_name = 'metigan-webhook'",
            &[],
        )
        .await
        .unwrap();
    let ssl: Vec<bool> = rows.iter().map(|row| row.get(0)).collect();
    assert!(!ssl.is_empty() && ssl.iter().all(|on| *on), "{ssl:?}");
    // A certificate the client does not trust is refused.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let error = PostgresStore::builder()
        .connect_with_tls(&url, tls_trusting(&other.cert.pem()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Storage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_takes_events_another_instance_appended_without_being_woken() {
    use metigan_webhook::inbox::{HandlerError, Inbox};
    use metigan_webhook::VerifiedEvent;

    let (store, server) = postgres_store().await;
    let worker_side = Inbox::new(store);
    let handled = Arc::new(tokio::sync::Notify::new());
    let worker = worker_side
        .worker()
        .spawn_fn({
            let handled = handled.clone();
            move |_event: VerifiedEvent| {
                handled.notify_one();
                async { Ok::<(), HandlerError>(()) }
            }
        })
        .unwrap();
    // Let the worker find the queue empty and go to sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another instance (its own store and inbox) appends: nothing wakes the first worker.
    let other = PostgresStore::connect(&server.url()).await.unwrap();
    let appended = std::time::Instant::now();
    other.append(new_event(Some("m-elsewhere"))).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), handled.notified())
        .await
        .expect("the worker looked at the queue again by itself");
    let took = appended.elapsed();
    println!("an event appended by another instance was handled {took:?} later");
    // The store's poll interval (1 s), not the worker's default of 30 s.
    assert!(
        took < metigan_webhook::inbox::postgres::POLL_INTERVAL + Duration::from_secs(2),
        "{took:?}"
    );
    worker.shutdown(Duration::from_secs(1)).await;
}
