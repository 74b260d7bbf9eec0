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
