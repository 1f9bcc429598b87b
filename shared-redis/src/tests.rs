//! The circuit against real `redis-server`s of the tests' own (never the shared one on 6379),
//! each on a free port and killed when dropped.

use std::net::TcpListener;

use fred::{
    interfaces::{HashesInterface, KeysInterface, LuaInterface},
    types::CustomCommand,
};

use super::*;
use crate::testing::{TestRedis, free_port};

/// Every wait of these tests is bounded by this.
const PATIENCE: Duration = Duration::from_secs(10);

async fn ping_through_run(redis: &RedisConn) -> Option<String> {
    run(
        redis,
        "test",
        |c| async move { c.ping::<String>(None).await },
    )
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
    let raw = server.connect().await.unwrap();
    let _: () = raw.set("before", 1, None, None, false).await.unwrap();
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
    let written = run(&redis, "test", |c| async move {
        c.incr::<i64, _>("after").await
    })
    .await;
    assert_eq!(written, Some(1), "commands reach the new server");
    let raw = server.connect().await.unwrap();
    let after: i64 = raw.get("after").await.unwrap();
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
    let set = run(&redis, "test", |c| async move {
        c.set::<(), _, _>("k", "v", None, None, false).await
    })
    .await;
    assert_eq!(set, Some(()));

    // WRONGTYPE
    let wrong = run(&redis, "test", |c| async move {
        c.hset::<i64, _, _>("k", ("f", "x")).await
    })
    .await;
    assert_eq!(wrong, None);
    // NOSCRIPT
    let unknown = run(&redis, "test", |c| async move {
        c.evalsha::<i64, _, _, _>(
            "0000000000000000000000000000000000000000",
            Vec::<String>::new(),
            Vec::<String>::new(),
        )
        .await
    })
    .await;
    assert_eq!(unknown, None);
    // A script's own error.
    let failing = run(&redis, "test", |c| async move {
        fred::types::scripts::Script::from_lua("return redis.error_reply('no')")
            .evalsha_with_reload::<i64, _, _>(&c, Vec::<String>::new(), Vec::<String>::new())
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
    let raw = server.connect().await.unwrap();
    let _: () = raw
        .custom(
            CustomCommand::new_static("CLIENT PAUSE", None, false),
            vec!["2000", "ALL"],
        )
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

/// Runs `f` through the handle, panicking if Redis did not answer.
async fn must<T, F, Fut>(redis: &RedisConn, f: F) -> T
where
    F: FnOnce(Conn) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    run(redis, "test", f).await.expect("redis answers")
}

#[tokio::test]
async fn every_script_runs_against_a_redis_cluster_with_keys_of_users_and_conversations_on_several_masters()
 {
    use crate::{
        presence::{self, Change},
        rate_limit::{self, Verdict},
        testing::TestCluster,
        typing,
    };
    use uuid::Uuid;

    let cluster = TestCluster::start().await;
    let redis = RedisConn::new(&cluster.url(), Duration::from_secs(2)).unwrap();
    let keys = &Keys::new(format!("cluster-test:{}", Uuid::new_v4()));
    let users: &Vec<Uuid> = &(0..12).map(|_| Uuid::new_v4()).collect();
    let mut masters = std::collections::HashSet::new();
    for user in users {
        masters.insert(cluster.master_of(&keys.presence_user(user)).await);
    }
    assert!(masters.len() > 1, "the users' keys spread over the masters");

    // Presence: a batch of connects and disconnects across slots, in order per user.
    let mut changes: Vec<(Change, Uuid)> = users.iter().map(|u| (Change::Connect, *u)).collect();
    changes.push((Change::Connect, users[0]));
    changes.push((Change::Disconnect, users[1]));
    let transitions = must(&redis, |c| {
        let changes = &changes;
        async move { presence::apply(&c, keys, "gw-a", changes).await }
    })
    .await;
    let mut expected = vec![true; users.len()];
    expected.extend([false, true]);
    assert_eq!(transitions, expected);
    let online = must(&redis, |c| async move {
        presence::online(&c, keys, users).await
    })
    .await;
    let mut want = vec![true; users.len()];
    want[1] = false;
    assert_eq!(online, want);

    // Heartbeat, a clean leave, and the reaping of what the gateway left behind.
    assert!(
        must(&redis, |c| async move {
            presence::heartbeat(&c, keys, "gw-a", 30_000).await
        })
        .await
    );
    assert!(
        !must(&redis, |c| async move {
            presence::heartbeat(&c, keys, "gw-a", 30_000).await
        })
        .await
    );
    must(&redis, |c| async move {
        presence::leave(&c, keys, "gw-a").await
    })
    .await;
    let dead = must(
        &redis,
        |c| async move { presence::dead(&c, keys, 30_000).await },
    )
    .await;
    assert_eq!(dead, vec!["gw-a".to_owned()]);
    let mut offline = Vec::new();
    loop {
        let reaped = must(&redis, |c| async move {
            presence::reap_chunk(&c, keys, "gw-a", 30_000, 5).await
        })
        .await;
        assert!(!reaped.incomplete);
        offline.extend(reaped.offline);
        if !reaped.more {
            break;
        }
    }
    offline.sort();
    let mut expected: Vec<Uuid> = users.iter().copied().filter(|u| *u != users[1]).collect();
    expected.sort();
    assert_eq!(offline, expected, "each connected user reaped exactly once");
    let dead = must(
        &redis,
        |c| async move { presence::dead(&c, keys, 30_000).await },
    )
    .await;
    assert!(dead.is_empty(), "the reaped gateway left the registry");

    // Re-registration brings reaped users back.
    let counts: Vec<(Uuid, usize)> = users[..3].iter().map(|u| (*u, 2)).collect();
    let mut back = must(&redis, |c| {
        let counts = &counts;
        async move { presence::reregister(&c, keys, "gw-b", counts).await }
    })
    .await;
    back.sort();
    let mut want: Vec<Uuid> = users[..3].to_vec();
    want.sort();
    assert_eq!(back, want);

    // Typing: start, the live list, stop, and the automatic stop claimed once.
    let conversations: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let rules = typing::Rules {
        entry_ttl: Duration::from_secs(6),
        stop_after: Duration::from_millis(1),
        rate_per_ms: 0.002,
        burst: 2,
    };
    for conversation in &conversations {
        let recorded = must(&redis, |c| {
            let rules = &rules;
            async move { typing::record(&c, keys, rules, conversation, &users[0], true).await }
        })
        .await;
        assert!(recorded);
        let live = must(&redis, |c| async move {
            typing::live(&c, keys, conversation).await
        })
        .await;
        assert_eq!(live, vec![users[0].to_string()]);
    }
    let stopped = must(&redis, |c| {
        let rules = &rules;
        let conversation = &conversations[0];
        async move { typing::record(&c, keys, rules, conversation, &users[0], false).await }
    })
    .await;
    assert!(stopped);
    let limited = must(&redis, |c| {
        let rules = &rules;
        let conversation = &conversations[0];
        async move { typing::record(&c, keys, rules, conversation, &users[0], true).await }
    })
    .await;
    assert!(!limited, "the third frame within the burst of 2 is refused");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut claimed = must(
        &redis,
        |c| async move { typing::sweep(&c, keys, 100).await },
    )
    .await;
    claimed.sort();
    let mut want: Vec<(Uuid, Uuid)> = conversations[1..].iter().map(|c| (*c, users[0])).collect();
    want.sort();
    assert_eq!(claimed, want, "stopped typists get no automatic stop");
    let again = must(
        &redis,
        |c| async move { typing::sweep(&c, keys, 100).await },
    )
    .await;
    assert!(again.is_empty(), "each deadline is claimed once");
    let live = must(&redis, |c| {
        let conversation = &conversations[1];
        async move { typing::live(&c, keys, conversation).await }
    })
    .await;
    assert!(live.is_empty(), "the sweep removed the entry");

    // Rate limiting: a batch over several users' buckets, a user repeated past the burst.
    let batch = vec![users[0], users[1], users[0], users[2], users[0]];
    let verdicts = must(&redis, |c| {
        let batch = &batch;
        async move { rate_limit::take(&c, keys, batch, 0.001, 2).await }
    })
    .await;
    assert_eq!(&verdicts[..4], &[Verdict::Taken; 4]);
    assert!(matches!(verdicts[4], Verdict::Refused { wait_ms } if wait_ms > 0));
    must(&redis, |c| async move {
        rate_limit::refund(&c, keys, &[users[0]], 2).await
    })
    .await;
    let verdicts = must(&redis, |c| async move {
        rate_limit::take(&c, keys, &[users[0], users[0]], 0.001, 2).await
    })
    .await;
    assert_eq!(verdicts[0], Verdict::Taken, "the refunded token");
    assert!(matches!(verdicts[1], Verdict::Refused { .. }));

    assert_eq!(redis.circuit(), Circuit::Closed);
    assert_eq!(redis.connection_attempts(), 1);
}
