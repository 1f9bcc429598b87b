//! The circuit against real `redis-server`s of the tests' own (never the shared one on 6379),
//! each on a free port and killed when dropped.

use std::net::TcpListener;

use super::*;
use crate::testing::{TestRedis, free_port};

/// Every wait of these tests is bounded by this.
const PATIENCE: Duration = Duration::from_secs(10);

async fn ping_through_run(redis: &RedisConn) -> Option<String> {
    run(redis, "test", |mut c| async move {
        redis::cmd("PING").query_async::<String>(&mut c).await
    })
    .await
}

/// Waits (bounded) until the circuit is `want`.
async fn wait_for(redis: &RedisConn, want: Circuit) {
    tokio::time::timeout(PATIENCE, async {
        while redis.circuit() != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the circuit did not become {want:?}"));
}

#[tokio::test]
async fn a_reachable_redis_answers_through_run_with_one_connection_attempt_and_the_circuit_closed()
{
    let server = TestRedis::start().await;
    let redis = RedisConn::new(&server.url(), Duration::from_secs(1)).unwrap();
    assert_eq!(redis.connection_attempts(), 0, "connected on first use");

    assert_eq!(ping_through_run(&redis).await.as_deref(), Some("PONG"));
    assert!(redis.ping().await);
    assert_eq!(ping_through_run(&redis).await.as_deref(), Some("PONG"));

    assert_eq!(redis.circuit(), Circuit::Closed);
    assert_eq!(redis.connection_attempts(), 1, "one connection, reused");
    assert_eq!(redis.probe_attempts(), 0);
    assert!(redis.probe_task().is_none());
}

#[tokio::test]
async fn killing_redis_opens_the_circuit_on_the_first_failed_command_and_later_calls_make_no_attempt()
 {
    let mut server = TestRedis::start().await;
    let redis = RedisConn::new(&server.url(), Duration::from_secs(1)).unwrap();
    assert_eq!(ping_through_run(&redis).await.as_deref(), Some("PONG"));
    let attempts = redis.connection_attempts();

    server.kill();
    assert_eq!(ping_through_run(&redis).await, None);
    assert_eq!(redis.circuit(), Circuit::Open, "the first failure opens it");

    for _ in 0..100 {
        assert_eq!(ping_through_run(&redis).await, None);
        assert!(redis.get().await.is_none());
        assert!(!redis.ping().await);
    }
    assert_eq!(redis.circuit(), Circuit::Open);
    assert_eq!(
        redis.connection_attempts(),
        attempts,
        "callers do not connect while the circuit is open"
    );
    assert!(redis.probe_task().is_some(), "a probe waits for Redis");
}

#[tokio::test]
async fn a_restarted_redis_is_found_by_the_probe_which_closes_the_circuit_by_itself() {
    let mut server = TestRedis::start().await;
    let redis = RedisConn::with_probe_interval(
        &server.url(),
        Duration::from_secs(1),
        Duration::from_millis(50),
    )
    .unwrap();
    let mut raw = server.connect().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg(1)
        .query_async(&mut raw)
        .await
        .unwrap();
    drop(raw);
    assert_eq!(ping_through_run(&redis).await.as_deref(), Some("PONG"));
    server.kill();
    assert_eq!(ping_through_run(&redis).await, None);
    assert_eq!(redis.circuit(), Circuit::Open);
    let attempts = redis.connection_attempts();

    server.restart().await;
    wait_for(&redis, Circuit::Closed).await;

    assert_eq!(
        redis.connection_attempts(),
        attempts,
        "the probe reconnected, not a caller"
    );
    assert!(redis.probe_attempts() >= 1);
    let written = run(&redis, "test", |mut c| async move {
        redis::cmd("INCR")
            .arg("after")
            .query_async::<i64>(&mut c)
            .await
    })
    .await;
    assert_eq!(written, Some(1), "commands reach the new server");
    let mut raw = server.connect().await.unwrap();
    let after: i64 = redis::cmd("GET")
        .arg("after")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(after, 1);
    assert!(redis.ping().await);
    let task_ended = tokio::time::timeout(PATIENCE, async {
        while redis.probe_task().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(task_ended.is_ok(), "the probe ends once the circuit closes");
}

#[tokio::test]
async fn a_refused_address_opens_the_circuit_on_the_first_attempt_and_later_callers_make_none() {
    let port = free_port();
    let redis = RedisConn::new(
        &format!("redis://127.0.0.1:{port}"),
        Duration::from_millis(500),
    )
    .unwrap();

    assert!(redis.get().await.is_none());
    assert_eq!(redis.connection_attempts(), 1);
    assert_eq!(redis.circuit(), Circuit::Open);

    for _ in 0..100 {
        assert!(redis.get().await.is_none());
        assert_eq!(ping_through_run(&redis).await, None);
        assert!(!redis.ping().await);
    }
    assert_eq!(redis.connection_attempts(), 1);
    assert_eq!(redis.circuit(), Circuit::Open);
}

#[tokio::test]
async fn one_probe_runs_however_many_callers_find_the_circuit_open() {
    let port = free_port();
    let redis = Arc::new(
        RedisConn::with_probe_interval(
            &format!("redis://127.0.0.1:{port}"),
            Duration::from_millis(500),
            Duration::from_millis(10),
        )
        .unwrap(),
    );
    assert!(redis.get().await.is_none());
    let probe = redis.probe_task().expect("a probe");

    let callers: Vec<_> = (0..50)
        .map(|_| {
            let redis = Arc::clone(&redis);
            tokio::spawn(async move {
                for _ in 0..20 {
                    assert!(redis.get().await.is_none());
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for caller in callers {
        tokio::time::timeout(PATIENCE, caller)
            .await
            .expect("callers do not wait")
            .unwrap();
    }

    let now = redis.probe_task().expect("still probing");
    assert_eq!(now.id(), probe.id(), "the same probe task");
    assert!(!probe.is_finished());
}

#[tokio::test]
async fn the_probe_ends_when_the_handle_is_dropped() {
    let port = free_port();
    let redis = RedisConn::with_probe_interval(
        &format!("redis://127.0.0.1:{port}"),
        Duration::from_millis(500),
        Duration::from_millis(10),
    )
    .unwrap();
    assert!(redis.get().await.is_none());
    let probe = redis.probe_task().expect("a probe");

    drop(redis);
    tokio::time::timeout(PATIENCE, async {
        while !probe.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the probe task ends");
}

#[tokio::test]
async fn errors_from_redis_itself_leave_the_circuit_closed() {
    let server = TestRedis::start().await;
    let redis = RedisConn::new(&server.url(), Duration::from_secs(1)).unwrap();
    let set = run(&redis, "test", |mut c| async move {
        redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async::<()>(&mut c)
            .await
    })
    .await;
    assert_eq!(set, Some(()));

    // WRONGTYPE
    let wrong = run(&redis, "test", |mut c| async move {
        redis::cmd("LPUSH")
            .arg("k")
            .arg("x")
            .query_async::<i64>(&mut c)
            .await
    })
    .await;
    assert_eq!(wrong, None);
    // NOSCRIPT
    let unknown = run(&redis, "test", |mut c| async move {
        redis::cmd("EVALSHA")
            .arg("0000000000000000000000000000000000000000")
            .arg(0)
            .query_async::<i64>(&mut c)
            .await
    })
    .await;
    assert_eq!(unknown, None);
    // A script's own error.
    let failing = run(&redis, "test", |mut c| async move {
        redis::Script::new("return redis.error_reply('no')")
            .invoke_async::<_, i64>(&mut c)
            .await
    })
    .await;
    assert_eq!(failing, None);

    assert_eq!(redis.circuit(), Circuit::Closed);
    assert_eq!(ping_through_run(&redis).await.as_deref(), Some("PONG"));
    assert_eq!(redis.connection_attempts(), 1);
}

#[tokio::test]
async fn a_command_that_runs_out_of_time_opens_the_circuit_until_redis_answers_again() {
    let server = TestRedis::start().await;
    let redis = RedisConn::with_probe_interval(
        &server.url(),
        Duration::from_millis(200),
        Duration::from_millis(50),
    )
    .unwrap();
    assert_eq!(ping_through_run(&redis).await.as_deref(), Some("PONG"));

    // Every client's commands wait for 2 s (the pausing client's own answer comes at once).
    let mut raw = server.connect().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(ping_through_run(&redis).await, None);
    assert_eq!(redis.circuit(), Circuit::Open);

    wait_for(&redis, Circuit::Closed).await;
    assert_eq!(ping_through_run(&redis).await.as_deref(), Some("PONG"));
    assert_eq!(redis.connection_attempts(), 1);
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_opens_the_circuit_once_the_attempt_times_out() {
    // The kernel completes the handshakes; nobody ever reads.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let redis = RedisConn::new(
        &format!("redis://127.0.0.1:{port}"),
        Duration::from_millis(200),
    )
    .unwrap();

    assert!(!redis.ping().await);
    assert_eq!(redis.circuit(), Circuit::Open);
    assert_eq!(redis.connection_attempts(), 1);
    assert!(redis.get().await.is_none());
    assert_eq!(redis.connection_attempts(), 1);
}
