//! The behaviour every `InboxStore` must have, as generic async functions taking a fresh store.
//! `store_suite!(make)` turns them into tests for one store (`make().await` returns the store
//! and a guard kept alive for the test): the file store and the PostgreSQL store run the same
//! suite.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metigan_webhook::inbox::{
    Appended, ClaimRequest, EventId, InboxStore, ListQuery, Settle, State,
};

use crate::new_event;

const LEASE: Duration = Duration::from_secs(30);

fn claim(limit: usize) -> ClaimRequest {
    ClaimRequest::new(limit, LEASE, 5)
}

macro_rules! store_suite {
    ($make:path) => {
        store_suite!(@tests $make;
            append_stores_what_was_asked_and_shows_the_body_only_on_request,
            a_duplicate_key_is_found_in_the_same_write,
            events_without_a_key_are_always_appended,
            concurrent_copies_of_one_key_make_one_record,
            an_expired_key_starts_over,
            claims_take_due_events_oldest_first_up_to_the_limit,
            settling_needs_the_current_lease,
            settle_many_answers_each_settlement_like_settle,
            an_expired_lease_is_claimed_again_and_a_renewed_one_is_not,
            a_retry_waits_for_its_time,
            dead_letters_are_replayed_with_their_key,
            replay_dead_replays_every_dead_letter,
            a_lease_that_ran_out_on_the_last_attempt_is_a_dead_letter,
            release_gives_the_event_back_without_counting_the_attempt,
            listing_pages_through_events_and_filters_by_state,
            purge_removes_old_done_events_and_keeps_keys_for_their_ttl
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make().await;
                tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    crate::suite::$name(store),
                )
                .await
                .expect("the test finished within 30 s");
            }
        )*
    };
}

pub async fn append_stores_what_was_asked_and_shows_the_body_only_on_request<S: InboxStore>(
    store: S,
) {
    let before = SystemTime::now() - Duration::from_secs(1);
    let record = new_event(Some("m-1"));
    let body = record.body.clone();
    let id = match store.append(record).await.unwrap() {
        Appended::Stored(id) => id,
        other => panic!("{other:?}"),
    };
    let shown = store.get(id, false).await.unwrap().expect("stored");
    assert_eq!(shown.id, id);
    assert_eq!(shown.state, State::Queued);
    assert_eq!(shown.event_type, "email.delivered");
    assert_eq!(shown.message_id.as_deref(), Some("m-1"));
    assert_eq!(shown.key.as_deref(), Some("email.delivered:m-1"));
    assert_eq!(shown.webhook_id.as_deref(), Some("wh_test"));
    assert!(shown.signed_at > 0);
    assert!(shown.received_at >= before);
    assert_eq!((shown.attempts, shown.replays), (0, 0));
    assert!(shown.body.is_none(), "no body unless asked");
    let with_body = store.get(id, true).await.unwrap().unwrap();
    assert_eq!(with_body.body.as_ref(), Some(&body));
    assert!(store
        .get(EventId::new(id.get() + 100), true)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.counts().await.unwrap().queued, 1);
}

pub async fn a_duplicate_key_is_found_in_the_same_write<S: InboxStore>(store: S) {
    let first = store.append(new_event(Some("m-1"))).await.unwrap();
    let second = store.append(new_event(Some("m-1"))).await.unwrap();
    let Appended::Stored(id) = first else {
        panic!("{first:?}")
    };
    assert_eq!(second, Appended::Duplicate(id));
    // Another key of the same message (another event type) is another event.
    let mut opened = new_event(Some("m-1"));
    opened.key = Some("email.opened:m-1".into());
    assert!(matches!(
        store.append(opened).await.unwrap(),
        Appended::Stored(_)
    ));
    assert_eq!(store.counts().await.unwrap().total(), 2);
}

pub async fn events_without_a_key_are_always_appended<S: InboxStore>(store: S) {
    let mut ids = Vec::new();
    for _ in 0..3 {
        match store.append(new_event(None)).await.unwrap() {
            Appended::Stored(id) => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert_eq!(store.counts().await.unwrap().queued, 3);
}

pub async fn concurrent_copies_of_one_key_make_one_record<S: InboxStore>(store: S) {
    let store = Arc::new(store);
    let copies: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.append(new_event(Some("m-copy"))).await.unwrap() })
        })
        .collect();
    let mut stored = Vec::new();
    let mut duplicates = Vec::new();
    for copy in copies {
        match copy.await.unwrap() {
            Appended::Stored(id) => stored.push(id),
            Appended::Duplicate(id) => duplicates.push(id),
        }
    }
    assert_eq!(stored.len(), 1, "exactly one copy is stored");
    assert!(duplicates.iter().all(|id| *id == stored[0]));
    assert_eq!(store.counts().await.unwrap().total(), 1);
}

pub async fn an_expired_key_starts_over<S: InboxStore>(store: S) {
    let mut record = new_event(Some("m-ttl"));
    record.key_ttl = Duration::from_millis(400);
    let first = store.append(record.clone()).await.unwrap();
    assert!(matches!(
        store.append(record.clone()).await.unwrap(),
        Appended::Duplicate(_)
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = store.append(record).await.unwrap();
    assert!(
        matches!(again, Appended::Stored(id) if id != first.id()),
        "{again:?}"
    );
}

pub async fn claims_take_due_events_oldest_first_up_to_the_limit<S: InboxStore>(store: S) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            store
                .append(new_event(Some(&format!("m-{n}"))))
                .await
                .unwrap()
                .id(),
        );
    }
    let first = store.claim(claim(2)).await.unwrap();
    let got: Vec<_> = first.events.iter().map(|e| e.lease.id()).collect();
    assert_eq!(got, ids[..2]);
    assert!(first.events.iter().all(|e| e.attempt == 1));
    assert_eq!(first.next_due, Some(Duration::ZERO), "more are due now");
    let rest = store.claim(claim(10)).await.unwrap();
    assert_eq!(rest.events.len(), 3);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.running, counts.queued), (5, 0));
    let none = store.claim(claim(10)).await.unwrap();
    assert!(none.events.is_empty());
    let next = none.next_due.expect("leases run out some day");
    assert!(
        next > LEASE - Duration::from_secs(5) && next <= LEASE,
        "{next:?}"
    );
    // The claimed event carries what rebuilding it needs.
    let event = &first.events[0];
    assert!(!event.body.is_empty());
    assert_eq!(event.webhook_id.as_deref(), Some("wh_test"));
    assert!(event.signed_at > 0);
}

pub async fn settling_needs_the_current_lease<S: InboxStore>(store: S) {
    store.append(new_event(Some("m-1"))).await.unwrap();
    let event = store.claim(claim(1)).await.unwrap().events.remove(0);
    let lease = event.lease;
    let forged = metigan_webhook::inbox::Lease::new(lease.id(), lease.token() + 1000);
    assert!(!store.settle(forged, Settle::Done).await.unwrap());
    assert!(!store.renew(forged, LEASE).await.unwrap());
    assert!(store.settle(lease, Settle::Done).await.unwrap());
    assert!(
        !store.settle(lease, Settle::Done).await.unwrap(),
        "settled once"
    );
    let shown = store.get(lease.id(), false).await.unwrap().unwrap();
    assert_eq!(shown.state, State::Done);
    assert!(shown.finished_at.is_some() && shown.due_at.is_none());
    assert_eq!(store.counts().await.unwrap().done, 1);
}

pub async fn settle_many_answers_each_settlement_like_settle<S: InboxStore>(store: S) {
    for n in 0..3 {
        store
            .append(new_event(Some(&format!("m-{n}"))))
            .await
            .unwrap();
    }
    let events = store.claim(claim(3)).await.unwrap().events;
    let leases: Vec<_> = events.iter().map(|event| event.lease).collect();
    let forged = metigan_webhook::inbox::Lease::new(leases[2].id(), leases[2].token() + 1000);
    let retry = Settle::Retry {
        after: Duration::from_secs(3600),
        error: "later".into(),
    };
    let answers = store
        .settle_many(vec![
            (leases[0], Settle::Done),
            (forged, Settle::Done),
            (leases[1], retry),
            (leases[0], Settle::Done),
        ])
        .await;
    let answers: Vec<bool> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        answers,
        [true, false, true, false],
        "held, forged, held, settled already"
    );
    let state = |n: usize| {
        let store = &store;
        let id = leases[n].id();
        async move { store.get(id, false).await.unwrap().unwrap().state }
    };
    assert_eq!(state(0).await, State::Done);
    assert_eq!(state(1).await, State::Retrying);
    assert_eq!(
        state(2).await,
        State::Running,
        "the forged lease changed nothing"
    );
    assert!(store.settle_many(Vec::new()).await.is_empty());
}

pub async fn an_expired_lease_is_claimed_again_and_a_renewed_one_is_not<S: InboxStore>(store: S) {
    store.append(new_event(Some("crashed"))).await.unwrap();
    store.append(new_event(Some("slow"))).await.unwrap();
    let short = Duration::from_millis(400);
    let claimed = store
        .claim(ClaimRequest::new(2, short, 5))
        .await
        .unwrap()
        .events;
    let (crashed, slow) = (claimed[0].lease, claimed[1].lease);
    // The slow one is renewed; the crashed one's holder is gone.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(store.renew(slow, short).await.unwrap());
    }
    let again = store.claim(ClaimRequest::new(10, LEASE, 5)).await.unwrap();
    let ids: Vec<_> = again.events.iter().map(|e| e.lease.id()).collect();
    assert_eq!(ids, [crashed.id()], "only the expired lease is taken again");
    assert_eq!(again.events[0].attempt, 2);
    assert!(
        !store.settle(crashed, Settle::Done).await.unwrap(),
        "the old lease is void"
    );
    assert!(!store.renew(crashed, LEASE).await.unwrap());
    assert!(store
        .settle(again.events[0].lease, Settle::Done)
        .await
        .unwrap());
    assert!(store.settle(slow, Settle::Done).await.unwrap());
}

pub async fn a_retry_waits_for_its_time<S: InboxStore>(store: S) {
    store.append(new_event(Some("m-1"))).await.unwrap();
    let lease = store.claim(claim(1)).await.unwrap().events[0].lease;
    let after = Duration::from_millis(1000);
    let error = "crm unreachable".to_owned();
    assert!(store
        .settle(lease, Settle::Retry { after, error })
        .await
        .unwrap());
    let shown = store.get(lease.id(), false).await.unwrap().unwrap();
    assert_eq!(shown.state, State::Retrying);
    assert_eq!(shown.last_error.as_deref(), Some("crm unreachable"));
    assert!(shown.due_at.is_some());
    let early = store.claim(claim(1)).await.unwrap();
    assert!(early.events.is_empty(), "not before its time");
    let wait = early.next_due.unwrap();
    assert!(wait <= after && wait > after / 2, "{wait:?}");
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    let later = store.claim(claim(1)).await.unwrap();
    assert_eq!(later.events.len(), 1);
    assert_eq!(later.events[0].attempt, 2);
}

pub async fn dead_letters_are_replayed_with_their_key<S: InboxStore>(store: S) {
    let id = store.append(new_event(Some("m-dead"))).await.unwrap().id();
    assert!(
        !store.replay(id).await.unwrap(),
        "only dead letters are replayed"
    );
    let lease = store.claim(claim(1)).await.unwrap().events[0].lease;
    let error = "bad address".to_owned();
    assert!(store.settle(lease, Settle::Dead { error }).await.unwrap());
    let dead = store.get(id, false).await.unwrap().unwrap();
    assert_eq!(dead.state, State::Dead);
    assert_eq!(
        (dead.attempts, dead.last_error.as_deref()),
        (1, Some("bad address"))
    );
    assert!(
        store.claim(claim(1)).await.unwrap().events.is_empty(),
        "dead stays dead"
    );

    assert!(store.replay(id).await.unwrap());
    let replayed = store.get(id, false).await.unwrap().unwrap();
    assert_eq!(replayed.state, State::Queued);
    assert_eq!((replayed.attempts, replayed.replays), (0, 1));
    assert_eq!(replayed.key.as_deref(), Some("email.delivered:m-dead"));
    assert!(!store.replay(id).await.unwrap(), "no longer dead");
    // The key is kept: a retried delivery is still a duplicate.
    assert_eq!(
        store.append(new_event(Some("m-dead"))).await.unwrap(),
        Appended::Duplicate(id)
    );
    let again = store.claim(claim(1)).await.unwrap().events;
    assert_eq!((again[0].attempt, again[0].replays), (1, 1));
}

pub async fn replay_dead_replays_every_dead_letter<S: InboxStore>(store: S) {
    for n in 0..4 {
        store
            .append(new_event(Some(&format!("m-{n}"))))
            .await
            .unwrap();
    }
    let claimed = store.claim(claim(4)).await.unwrap().events;
    for event in &claimed[..3] {
        let error = "no".to_owned();
        store
            .settle(event.lease, Settle::Dead { error })
            .await
            .unwrap();
    }
    store.settle(claimed[3].lease, Settle::Done).await.unwrap();
    assert_eq!(store.counts().await.unwrap().dead, 3);
    assert_eq!(store.replay_dead().await.unwrap(), 3);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.dead, counts.queued, counts.done), (0, 3, 1));
    assert_eq!(store.replay_dead().await.unwrap(), 0);
}

pub async fn a_lease_that_ran_out_on_the_last_attempt_is_a_dead_letter<S: InboxStore>(store: S) {
    let id = store.append(new_event(Some("poison"))).await.unwrap().id();
    let short = Duration::from_millis(30);
    for attempt in 1..=2 {
        let claimed = store.claim(ClaimRequest::new(1, short, 2)).await.unwrap();
        assert_eq!(claimed.events[0].attempt, attempt);
        tokio::time::sleep(short * 2).await;
    }
    let claimed = store.claim(ClaimRequest::new(1, short, 2)).await.unwrap();
    assert!(claimed.events.is_empty());
    let dead = store.get(id, false).await.unwrap().unwrap();
    assert_eq!(dead.state, State::Dead);
    assert_eq!(dead.attempts, 2);
    assert!(dead.last_error.unwrap().contains("lease ran out"));
}

pub async fn release_gives_the_event_back_without_counting_the_attempt<S: InboxStore>(store: S) {
    let id = store.append(new_event(Some("m-1"))).await.unwrap().id();
    let lease = store.claim(claim(1)).await.unwrap().events[0].lease;
    assert!(store.settle(lease, Settle::Release).await.unwrap());
    let shown = store.get(id, false).await.unwrap().unwrap();
    assert_eq!((shown.state, shown.attempts), (State::Queued, 0));
    let again = store.claim(claim(1)).await.unwrap().events;
    assert_eq!(again[0].attempt, 1, "the released attempt is not counted");
    // A failed event given back stays a retrying one.
    let after = Duration::ZERO;
    let error = "x".to_owned();
    store
        .settle(again[0].lease, Settle::Retry { after, error })
        .await
        .unwrap();
    let lease = store.claim(claim(1)).await.unwrap().events[0].lease;
    store.settle(lease, Settle::Release).await.unwrap();
    let shown = store.get(id, false).await.unwrap().unwrap();
    assert_eq!((shown.state, shown.attempts), (State::Retrying, 1));
}

pub async fn listing_pages_through_events_and_filters_by_state<S: InboxStore>(store: S) {
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(
            store
                .append(new_event(Some(&format!("m-{n}"))))
                .await
                .unwrap()
                .id(),
        );
    }
    let mut seen = Vec::new();
    let mut query = ListQuery::new().limit(3);
    loop {
        let page = store.list(query).await.unwrap();
        assert!(page.events.len() <= 3);
        assert!(page.events.iter().all(|e| e.body.is_none()));
        seen.extend(page.events.iter().map(|e| e.id));
        match page.next {
            Some(cursor) => query = query.after(cursor),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    // Two of them done.
    for event in store.claim(claim(2)).await.unwrap().events {
        store.settle(event.lease, Settle::Done).await.unwrap();
    }
    let done = store
        .list(ListQuery::new().state(State::Done))
        .await
        .unwrap();
    assert_eq!(
        done.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[..2]
    );
    assert!(done.next.is_none());
    let queued = store
        .list(ListQuery::new().state(State::Queued).limit(2).with_body())
        .await
        .unwrap();
    assert_eq!(
        queued.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[2..4]
    );
    assert!(queued
        .events
        .iter()
        .all(|e| e.body.as_ref().is_some_and(|b| !b.is_empty())));
    let next = store
        .list(
            ListQuery::new()
                .state(State::Queued)
                .after(queued.next.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        next.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[4..]
    );
}

pub async fn purge_removes_old_done_events_and_keeps_keys_for_their_ttl<S: InboxStore>(store: S) {
    // Three events: done, dead, queued; the done one's key lives 1 h, another key 400 ms.
    let done = store.append(new_event(Some("m-done"))).await.unwrap().id();
    let dead = store.append(new_event(Some("m-dead"))).await.unwrap().id();
    let mut short = new_event(Some("m-short"));
    short.key_ttl = Duration::from_millis(400);
    let queued = store.append(short).await.unwrap().id();
    let claimed = store.claim(claim(2)).await.unwrap().events;
    store.settle(claimed[0].lease, Settle::Done).await.unwrap();
    let error = "no".to_owned();
    store
        .settle(claimed[1].lease, Settle::Dead { error })
        .await
        .unwrap();

    // Nothing is old enough yet for a 1 h retention; the short key has not expired yet.
    let purged = store.purge(Duration::from_secs(3600), 100).await.unwrap();
    assert_eq!((purged.events, purged.keys), (0, 0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let purged = store.purge(Duration::from_millis(10), 100).await.unwrap();
    assert_eq!(
        (purged.events, purged.keys),
        (1, 1),
        "the done event, the short key"
    );
    assert!(store.get(done, true).await.unwrap().is_none());
    assert!(
        store.get(dead, false).await.unwrap().is_some(),
        "dead letters stay"
    );
    assert!(
        store.get(queued, false).await.unwrap().is_some(),
        "queued events stay"
    );
    // The purged event's key is still remembered; the expired one is not.
    assert_eq!(
        store.append(new_event(Some("m-done"))).await.unwrap(),
        Appended::Duplicate(done)
    );
    assert!(matches!(
        store.append(new_event(Some("m-short"))).await.unwrap(),
        Appended::Stored(_)
    ));
}
