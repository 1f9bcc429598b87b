//! The batched send pipeline (api_service::ingest): the batch write statement and the batch
//! rate-limit call driven directly with hand-made batches (so each case is one batch for sure),
//! and a burst of mixed sends over HTTP where every request must get its own answer.

use std::{collections::HashMap, sync::Arc};

use api_service::{
    config::Settings,
    db::{
        messages::{NewMessage, insert_batch, new_identity},
        participants,
    },
    error::ApiError,
    metrics::Metrics,
    rate_limit::RateLimiter,
};
use futures_util::future::join_all;
use secrecy::ExposeSecret;
use serde_json::json;
use shared_redis::RedisConn;
use uuid::Uuid;

use crate::helpers::{As, TestApp, spawn_app, test_settings};

fn new<'a>(
    conversation: Uuid,
    sender: Uuid,
    content: &'a str,
    key: Option<&'a str>,
) -> NewMessage<'a> {
    let (id, created_at) = new_identity();
    NewMessage {
        id,
        created_at,
        conversation_id: conversation,
        sender_id: sender,
        kind: "text",
        content: Some(content),
        metadata: None,
        reply_to_id: None,
        client_msg_id: key,
    }
}

async fn last_seq(app: &TestApp, conversation: Uuid) -> i64 {
    sqlx::query_scalar("select last_seq from conversations where id = $1")
        .bind(conversation)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn one_batch_numbers_each_conversation_in_order_and_leaves_out_what_it_must() {
    let app = spawn_app().await;
    let (alice, bob, stranger) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let first = app.create_group(alice, &[bob]).await;
    let second = app.create_group(bob, &[alice]).await;
    // The second conversation already has two messages.
    for text in ["a", "b"] {
        let r = app
            .post_json(
                &format!("/conversations/{second}/messages"),
                As::User(bob),
                json!({"content": text, "client_msg_id": "taken"}),
            )
            .await;
        assert!(r.status == 201 || r.status == 200, "{}", r.text);
    }
    assert_eq!(
        last_seq(&app, second).await,
        1,
        "the second send was a replay"
    );

    let batch = vec![
        new(first, alice, "f1", Some("k1")),
        new(second, bob, "s2", None),
        new(first, stranger, "not a member", None),
        new(first, bob, "f2", Some("k1")), // same key, other sender: its own key
        new(first, alice, "twin", Some("k1")), // same sender, same key as the first: left out
        new(second, bob, "replay", Some("taken")), // key used before this batch: left out
        new(first, alice, "f3", None),
        new(Uuid::new_v4(), alice, "no such conversation", None),
        new(second, alice, "s3", Some("k2")),
    ];
    let mut conn = app.pool.acquire().await.unwrap();
    let rows = insert_batch(&mut conn, &batch).await.unwrap();
    let got: HashMap<Uuid, (Uuid, i64, Option<String>)> = rows
        .iter()
        .map(|r| (r.id, (r.conversation_id, r.seq, r.content.clone())))
        .collect();
    let expect = |i: usize| got.get(&batch[i].id).map(|(c, s, _)| (*c, *s));
    assert_eq!(expect(0), Some((first, 1)));
    assert_eq!(expect(1), Some((second, 2)));
    assert_eq!(expect(2), None, "a non-member's message is left out");
    assert_eq!(expect(3), Some((first, 2)));
    assert_eq!(
        expect(4),
        None,
        "a key repeated within the batch is left out"
    );
    assert_eq!(expect(5), None, "a key used before is left out");
    assert_eq!(expect(6), Some((first, 3)));
    assert_eq!(expect(7), None);
    assert_eq!(expect(8), Some((second, 3)));
    assert_eq!(rows.len(), 5);

    // Counters match, nothing was skipped, and the keys point at the inserted messages.
    assert_eq!(last_seq(&app, first).await, 3);
    assert_eq!(last_seq(&app, second).await, 3);
    let keyed: Vec<(Uuid, String, Uuid)> = sqlx::query_as(
        "select sender_id, client_msg_id, message_id from message_client_ids
         where conversation_id = $1 order by sender_id, client_msg_id",
    )
    .bind(first)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut want = vec![
        (alice, "k1".to_owned(), batch[0].id),
        (bob, "k1".to_owned(), batch[3].id),
    ];
    want.sort();
    assert_eq!(keyed, want);
    let newest: bool = sqlx::query_scalar(
        "select bool_and(c.last_message_at = (select max(created_at) from messages m where m.conversation_id = c.id))
         from conversations c where c.id = any($1)",
    )
    .bind([first, second])
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        newest,
        "last_message_at is each conversation's newest message"
    );
}

#[tokio::test]
async fn a_batch_whose_every_message_is_left_out_writes_nothing() {
    let app = spawn_app().await;
    let alice = Uuid::new_v4();
    let conv = app.create_group(alice, &[Uuid::new_v4()]).await;
    let before: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select updated_at from conversations where id = $1")
            .bind(conv)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    let rows = insert_batch(&mut conn, &[new(conv, Uuid::new_v4(), "x", Some("k"))])
        .await
        .unwrap();
    assert!(rows.is_empty());
    assert_eq!(last_seq(&app, conv).await, 0);
    let after: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select updated_at from conversations where id = $1")
            .bind(conv)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(before, after, "the conversation row is untouched");
    let keys: i64 = sqlx::query_scalar("select count(*) from message_client_ids")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, 0, "no key without its message");
}

#[tokio::test]
async fn concurrent_batches_over_the_same_conversations_neither_deadlock_nor_skip_numbers() {
    let app = spawn_app().await;
    let alice = Uuid::new_v4();
    let convs: Vec<Uuid> =
        join_all((0..4).map(|_| async { app.create_group(alice, &[Uuid::new_v4()]).await })).await;
    // 8 writers, each writing the four conversations in its own order, 10 times.
    let writers = (0..8).map(|w| {
        let pool = app.pool.clone();
        let mut order = convs.clone();
        order.rotate_left(w % 4);
        if w % 2 == 1 {
            order.reverse();
        }
        async move {
            let mut written = 0;
            for _ in 0..10 {
                let batch: Vec<NewMessage<'_>> =
                    order.iter().map(|&c| new(c, alice, "x", None)).collect();
                let mut conn = pool.acquire().await.unwrap();
                written += insert_batch(&mut conn, &batch).await.unwrap().len();
            }
            written
        }
    });
    let written: usize = join_all(writers).await.into_iter().sum();
    assert_eq!(written, 8 * 10 * 4);
    for conv in convs {
        let seqs = app.stored_seqs(conv).await;
        assert_eq!(seqs, (1..=80).collect::<Vec<_>>());
    }
}

fn limiter(app: &TestApp, extra: &[(&str, &str)]) -> RateLimiter {
    let mut settings: Settings = test_settings(&app.db.url, extra);
    settings.redis_key_prefix = app.redis_prefix.clone();
    let redis = RedisConn::new(
        settings.redis_url.expose_secret(),
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    RateLimiter::new(Arc::new(redis), Arc::new(settings), Metrics::new())
}

#[tokio::test]
async fn one_limiter_call_takes_a_token_per_entry_in_order_even_for_one_user_twice() {
    let app = spawn_app().await;
    let limiter = limiter(
        &app,
        &[
            ("RATE_LIMIT_MESSAGES_PER_SEC", "0.05"),
            ("RATE_LIMIT_MESSAGES_BURST", "2"),
        ],
    );
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let verdicts = limiter.take(&[alice, bob, alice, alice, bob]).await;
    let shape: Vec<Option<u64>> = verdicts
        .iter()
        // As the HTTP edge answers a refusal.
        .map(|v| match v.map_err(ApiError::from) {
            Ok(()) => None,
            Err(ApiError::RateLimited { retry_after_secs }) => Some(retry_after_secs),
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(shape[..4], [None, None, None, shape[3]]);
    assert!(shape[3].is_some_and(|s| (1..=20).contains(&s)), "{shape:?}");
    assert_eq!(shape[4], None, "bob's second token");
    assert!(
        limiter.take(&[bob]).await[0].is_err(),
        "bob's burst is spent"
    );
    assert!(limiter.take(&[]).await.is_empty());
}

#[tokio::test]
async fn a_burst_of_mixed_sends_gets_each_request_its_own_answer() {
    let app = spawn_app().await;
    let (alice, bob, stranger) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let convs: Vec<Uuid> =
        join_all((0..3).map(|_| async { app.create_group(alice, &[bob]).await })).await;
    let path = |c: Uuid| format!("/conversations/{c}/messages");
    // Per conversation: 10 plain sends, 5 retries of one key, one non-member, one system.
    let mut requests = Vec::new();
    for &c in &convs {
        for i in 0..10 {
            requests.push((
                c,
                if i % 2 == 0 { alice } else { bob },
                json!({"content": "m"}),
                201,
            ));
        }
        for _ in 0..5 {
            requests.push((c, alice, json!({"content": "k", "client_msg_id": "one"}), 0));
        }
        requests.push((c, stranger, json!({"content": "no"}), 403));
        requests.push((c, bob, json!({"type": "system", "content": "no"}), 403));
    }
    requests.push((Uuid::new_v4(), alice, json!({"content": "no"}), 404));
    let replies = join_all(requests.iter().map(|(c, u, body, _)| async {
        app.post_json(&path(*c), As::User(*u), body.clone()).await
    }))
    .await;
    for ((_, _, _, want), r) in requests.iter().zip(&replies) {
        if *want == 0 {
            assert!(r.status == 201 || r.status == 200, "{}", r.text);
        } else {
            assert_eq!(r.status, *want, "{}", r.text);
        }
    }
    for &c in &convs {
        let keyed: Vec<serde_json::Value> = requests
            .iter()
            .zip(&replies)
            .filter(|((conv, _, body, _), _)| *conv == c && body.get("client_msg_id").is_some())
            .map(|(_, r)| r.data()["id"].clone())
            .collect();
        assert!(
            keyed.windows(2).all(|w| w[0] == w[1]),
            "one message per key"
        );
        let seqs = app.stored_seqs(c).await;
        assert_eq!(
            seqs,
            (1..=11).collect::<Vec<_>>(),
            "10 plain + 1 keyed, gap-free"
        );
    }
}

#[tokio::test]
async fn sends_bump_their_conversation_in_place_without_touching_its_indexes() {
    // Version 13: every message updates its conversation's row; that update must be HOT (no new
    // index entries, old versions pruned on the page), or a busy conversation's row bloats.
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let first = app.create_group(alice, &[bob]).await;
    let second = app.create_group(bob, &[alice]).await;
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::query("begin").execute(&mut *conn).await.unwrap();
    for round in 0..20 {
        let texts: Vec<String> = (0..3).map(|i| format!("m{round}-{i}")).collect();
        let batch = vec![
            new(first, alice, &texts[0], None),
            new(second, bob, &texts[1], None),
            new(first, bob, &texts[2], None),
        ];
        assert_eq!(insert_batch(&mut conn, &batch).await.unwrap().len(), 3);
    }
    // This transaction's own counters, exact and immediate.
    let (updated, hot): (i64, i64) = sqlx::query_as(
        "select n_tup_upd, n_tup_hot_upd from pg_stat_xact_user_tables
         where relid = 'conversations'::regclass",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    sqlx::query("commit").execute(&mut *conn).await.unwrap();
    assert_eq!(updated, 40, "one bump per conversation per batch");
    assert_eq!(hot, updated, "every bump is a HOT update");
    assert_eq!(last_seq(&app, first).await, 40);
    assert_eq!(last_seq(&app, second).await, 20);
}

/// Rows of conversation_participants fetched through its indexes, as this backend counts them
/// (its current transaction included). Read twice in one transaction, the difference is exactly
/// that transaction's: PostgreSQL 15's `pg_stat_xact_*` views also show earlier transactions whose
/// counts the backend has not flushed yet, and it flushes only between transactions.
async fn participant_fetches(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "select idx_tup_fetch from pg_stat_xact_user_tables
         where relid = 'conversation_participants'::regclass",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn in_a_large_group_the_sender_and_membership_checks_fetch_one_participant_row_each() {
    // Version 16: the active-member check is one index probe, not a walk over the group's active
    // rows filtered on user_id (which fetched every member's row up to the sender's).
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let members: Vec<Uuid> = (0..399).map(|_| Uuid::new_v4()).collect();
    let conv = app.create_group(owner, &members).await;
    let sender = *members.last().unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    // The writers run with the generic plan (startup.rs); the other routes with PostgreSQL's
    // default, which also switches to a generic plan after five runs of a statement.
    for mode in ["auto", "force_generic_plan"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("set plan_cache_mode = {mode}")))
            .execute(&mut *conn)
            .await
            .unwrap();
        for round in 0..7 {
            sqlx::query("begin").execute(&mut *conn).await.unwrap();
            let before = participant_fetches(&mut conn).await;
            let text = format!("{mode} {round}");
            let stored = insert_batch(&mut conn, &[new(conv, sender, &text, None)])
                .await
                .unwrap();
            assert_eq!(stored.len(), 1);
            let membership = participants::membership(&mut conn, conv, sender)
                .await
                .unwrap();
            assert!(membership.is_some(), "the sender is an active member");
            let read = participant_fetches(&mut conn).await - before;
            sqlx::query("commit").execute(&mut *conn).await.unwrap();
            assert!(
                read <= 2,
                "{mode}, round {round}: {read} participant rows fetched for one send and one \
                 membership check in a group of 400"
            );
        }
    }
}

#[tokio::test]
async fn idempotency_keys_go_with_their_message_or_their_conversation() {
    // Version 14: the keys have no foreign keys; triggers on messages and conversations delete
    // them (deletes by hand: the service itself only soft-deletes messages).
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let kept = app.create_group(alice, &[bob]).await;
    let doomed = app.create_group(alice, &[bob]).await;
    let mut conn = app.pool.acquire().await.unwrap();
    let batch = vec![
        new(kept, alice, "a", Some("k1")),
        new(kept, bob, "b", Some("k1")),
        new(doomed, alice, "c", Some("k1")),
        new(doomed, bob, "d", Some("k2")),
    ];
    let rows = insert_batch(&mut conn, &batch).await.unwrap();
    assert_eq!(rows.len(), 4);
    let keys = |conv: Uuid| {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from message_client_ids where conversation_id = $1",
        )
        .bind(conv)
        .fetch_one(&app.pool)
    };
    assert_eq!(
        (keys(kept).await.unwrap(), keys(doomed).await.unwrap()),
        (2, 2)
    );

    sqlx::query("delete from messages where id = $1")
        .bind(rows[0].id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        keys(kept).await.unwrap(),
        1,
        "alice's key went with her message"
    );
    sqlx::query("delete from conversations where id = $1")
        .bind(doomed)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        keys(doomed).await.unwrap(),
        0,
        "the conversation's keys went with it"
    );
    assert_eq!(keys(kept).await.unwrap(), 1);
    // The freed key takes a new message.
    let again = insert_batch(&mut conn, &[new(kept, alice, "again", Some("k1"))])
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].seq, 3);
}

#[tokio::test]
async fn the_writers_connections_keep_one_generic_plan_for_the_send_statement() {
    let app = spawn_app().await;
    let settings: Settings = test_settings(&app.db.url, &[("SEND_WRITERS", "2")]);
    let pool = api_service::startup::ingest_database(&settings).unwrap();
    let mode: String = sqlx::query_scalar("show plan_cache_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "force_generic_plan");
    assert_eq!(pool.options().get_max_connections(), 2, "one per writer");
    // The main pool plans as usual.
    let mode: String = sqlx::query_scalar("show plan_cache_mode")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(mode, "auto");
}

/// The writer keeps its connection from one write to the next (no pool round trips per batch),
/// and one the server closed while it sat idle is replaced before the next send, which still
/// gets its 201.
#[tokio::test]
async fn the_writer_keeps_its_connection_and_replaces_one_the_server_closed() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let path = format!("/conversations/{conv}/messages");
    let writers = || async {
        sqlx::query_scalar::<_, i32>(
            "select pid from pg_stat_activity
             where datname = current_database() and application_name = $1",
        )
        .bind(api_service::startup::SEND_WRITER_APPLICATION)
        .fetch_all(&app.pool)
        .await
        .unwrap()
    };
    let send = |text: &'static str| {
        let (app, path) = (&app, &path);
        async move {
            app.post_json(path, As::User(alice), json!({ "content": text }))
                .await
        }
    };
    let r = send("one").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let first = writers().await;
    assert_eq!(first.len(), 1, "one writer, one connection: {first:?}");
    let r = send("two").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(writers().await, first, "the same connection wrote again");

    let terminated: bool = sqlx::query_scalar("select pg_terminate_backend($1)")
        .bind(first[0])
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(terminated);
    for _ in 0..100 {
        if writers().await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(writers().await.is_empty(), "the writer's backend is gone");
    // Idle for longer than the writer's idle check.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = send("three").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let now = writers().await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, first, "a new connection");
    let seqs = app.stored_seqs(conv).await;
    assert_eq!(seqs, vec![1, 2, 3], "all three stored, gap-free");
}
