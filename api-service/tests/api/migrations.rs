//! Schema migrations and partition maintenance against real PostgreSQL databases.

use api_service::partitions;
use chrono::NaiveDate;
use retich_migrations as migrate;
use sqlx::PgConnection;

use crate::helpers::TestDb;

async fn tables(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "select tablename::text from pg_tables where schemaname = 'public' and tablename <> 'schema_migrations' order by 1",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn up_from_empty_reaches_the_latest_version_clean() {
    let db = TestDb::create().await;
    let mut conn = db.connect().await;
    let applied = migrate::up(&mut conn, None).await.unwrap();
    assert_eq!(applied, migrate::MIGRATIONS.len());
    let state = migrate::current_version(&mut conn).await.unwrap();
    assert_eq!(
        state,
        migrate::SchemaVersion {
            version: Some(migrate::latest_version()),
            dirty: false
        }
    );
    let t = tables(&mut conn).await;
    for expected in [
        "attachments",
        "conversation_participants",
        "conversations",
        "message_client_ids",
        "message_reactions",
        "messages",
        "messages_default",
        "messages_y2026m02",
        "pinned_messages",
        "read_receipts",
    ] {
        assert!(
            t.iter().any(|x| x == expected),
            "missing table {expected} in {t:?}"
        );
    }
    // Running again is a no-op.
    assert_eq!(migrate::up(&mut conn, None).await.unwrap(), 0);
}

#[tokio::test]
async fn down_to_zero_and_up_again_leaves_the_same_schema() {
    let db = TestDb::create().await;
    let mut conn = db.connect().await;
    migrate::up(&mut conn, None).await.unwrap();
    let before = tables(&mut conn).await;
    let reverted = migrate::down(&mut conn, None).await.unwrap();
    assert_eq!(reverted, migrate::MIGRATIONS.len());
    assert_eq!(
        migrate::current_version(&mut conn).await.unwrap().version,
        None
    );
    assert!(
        tables(&mut conn).await.is_empty(),
        "down to 0 left tables behind"
    );
    let rows = count(&mut conn, "select count(*) from schema_migrations").await;
    assert_eq!(rows, 0, "golang-migrate keeps no row at version nil");
    migrate::up(&mut conn, None).await.unwrap();
    assert_eq!(tables(&mut conn).await, before);
}

#[tokio::test]
async fn each_step_down_then_up_records_the_version_like_golang_migrate() {
    let db = TestDb::create().await;
    let mut conn = db.connect().await;
    migrate::up(&mut conn, Some(2)).await.unwrap();
    assert_eq!(
        migrate::current_version(&mut conn).await.unwrap().version,
        Some(5)
    );
    migrate::up(&mut conn, Some(1)).await.unwrap();
    assert_eq!(
        migrate::current_version(&mut conn).await.unwrap().version,
        Some(6)
    );
    migrate::down(&mut conn, Some(1)).await.unwrap();
    assert_eq!(
        migrate::current_version(&mut conn).await.unwrap().version,
        Some(5)
    );
    let (version, dirty): (i64, bool) =
        sqlx::query_as("select version, dirty from schema_migrations")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((version, dirty), (5, false));
}

#[tokio::test]
async fn a_dirty_database_is_refused_until_forced() {
    let db = TestDb::create().await;
    let mut conn = db.connect().await;
    migrate::up(&mut conn, Some(2)).await.unwrap();
    sqlx::query("update schema_migrations set dirty = true")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = migrate::up(&mut conn, None).await.unwrap_err();
    assert!(matches!(err, migrate::MigrateError::Dirty(5)), "{err}");
    migrate::force(&mut conn, Some(5)).await.unwrap();
    assert!(migrate::up(&mut conn, None).await.unwrap() > 0);
}

#[tokio::test]
async fn a_database_created_at_version_5_upgrades_with_its_rows_intact() {
    let db = TestDb::create().await;
    let mut conn = db.connect().await;
    // Exactly what an existing ReTiCh database looks like: versions 1 and 5, recorded as 5.
    migrate::up(&mut conn, Some(2)).await.unwrap();
    assert_eq!(
        migrate::current_version(&mut conn).await.unwrap().version,
        Some(5)
    );
    sqlx::raw_sql(
        r#"
        insert into conversations (id, type, name, creator_id) values
          ('00000000-0000-4000-8000-000000000001', 'group', 'old group', '00000000-0000-4000-8000-0000000000aa'),
          ('00000000-0000-4000-8000-000000000002', 'direct', null, null);
        insert into conversation_participants (conversation_id, user_id, role) values
          ('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000aa', 'owner'),
          ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-0000000000aa', 'member'),
          ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-0000000000bb', 'member');
        insert into messages (id, conversation_id, sender_id, content, created_at) values
          ('00000000-0000-4000-8000-000000000101', '00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000aa', 'first', '2026-03-01T10:00:00Z'),
          ('00000000-0000-4000-8000-000000000102', '00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000aa', 'second', '2026-07-01T10:00:00Z'),
          ('00000000-0000-4000-8000-000000000103', '00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-0000000000bb', 'dm', '2026-08-01T10:00:00Z');
        insert into message_reactions (message_id, message_created_at, user_id, emoji) values
          ('00000000-0000-4000-8000-000000000102', '2026-07-01T10:00:00Z', '00000000-0000-4000-8000-0000000000aa', '👍');
        "#,
    )
    .execute(&mut conn)
    .await
    .unwrap();

    migrate::up(&mut conn, None).await.unwrap();

    assert_eq!(count(&mut conn, "select count(*) from messages").await, 3);
    assert_eq!(
        count(&mut conn, "select count(*) from message_reactions").await,
        1
    );
    let seqs: Vec<(String, i64)> =
        sqlx::query_as("select content, seq from messages order by conversation_id, seq")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        seqs,
        vec![("first".into(), 1), ("second".into(), 2), ("dm".into(), 1)]
    );
    let last_seq: i64 = sqlx::query_scalar(
        "select last_seq from conversations where id = '00000000-0000-4000-8000-000000000001'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(last_seq, 2);
    // The active DM got its pair key, so a second one for the same users is refused.
    let pair: (Option<uuid::Uuid>, Option<uuid::Uuid>) = sqlx::query_as(
        "select direct_user_low, direct_user_high from conversations where id = '00000000-0000-4000-8000-000000000002'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(pair.0.is_some() && pair.1.is_some());
}

#[tokio::test]
async fn partition_maintenance_moves_rows_of_a_future_month_out_of_the_default_partition() {
    let db = TestDb::create().await;
    let mut conn = db.connect().await;
    migrate::up(&mut conn, None).await.unwrap();
    sqlx::raw_sql(
        r#"
        insert into conversations (id, type, name, creator_id) values
          ('00000000-0000-4000-8000-000000000001', 'group', 'g', '00000000-0000-4000-8000-0000000000aa');
        insert into messages (id, conversation_id, sender_id, content, seq, created_at, client_msg_id) values
          ('00000000-0000-4000-8000-000000000101', '00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000aa', 'a', 1, '2031-06-03T10:00:00Z', 'k1'),
          ('00000000-0000-4000-8000-000000000102', '00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000aa', 'b', 2, '2031-06-20T10:00:00Z', 'k2');
        insert into message_reactions (message_id, message_created_at, user_id, emoji) values
          ('00000000-0000-4000-8000-000000000101', '2031-06-03T10:00:00Z', '00000000-0000-4000-8000-0000000000aa', '🎉');
        insert into attachments (message_id, message_created_at, file_name, file_type, file_size, file_url) values
          ('00000000-0000-4000-8000-000000000102', '2031-06-20T10:00:00Z', 'a.png', 'image/png', 1, 'http://x/a.png');
        insert into message_client_ids (conversation_id, sender_id, client_msg_id, message_id, message_created_at) values
          ('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000aa', 'k1', '00000000-0000-4000-8000-000000000101', '2031-06-03T10:00:00Z'),
          ('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000aa', 'k2', '00000000-0000-4000-8000-000000000102', '2031-06-20T10:00:00Z');
        "#,
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        count(&mut conn, "select count(*) from messages_default").await,
        2
    );

    let pool = db.pool().await;
    let created = partitions::ensure(&pool, NaiveDate::from_ymd_opt(2031, 5, 1).unwrap(), 2)
        .await
        .unwrap();
    // May, June and July 2031; June held the stray rows.
    assert_eq!(created, Some(3));
    assert_eq!(
        count(&mut conn, "select count(*) from messages_default").await,
        0
    );
    assert_eq!(
        count(&mut conn, "select count(*) from messages_y2031m06").await,
        2
    );
    assert_eq!(
        count(&mut conn, "select count(*) from messages_y2031m05").await,
        0
    );
    assert_eq!(
        count(&mut conn, "select count(*) from messages_y2031m07").await,
        0
    );
    // Nothing referencing the moved rows was cascaded away, and the foreign keys still hold.
    assert_eq!(
        count(&mut conn, "select count(*) from message_reactions").await,
        1
    );
    assert_eq!(
        count(&mut conn, "select count(*) from attachments").await,
        1
    );
    assert_eq!(
        count(&mut conn, "select count(*) from message_client_ids").await,
        2,
        "the move keeps the client_msg_id keys"
    );
    assert_eq!(
        count(&mut conn, "select count(*) from pg_constraint where confrelid = 'messages'::regclass and contype = 'f' and conparentid = 0").await,
        3
    );
    // A message really deleted (through messages) takes its key with it (version 12's trigger).
    sqlx::query("delete from messages where id = '00000000-0000-4000-8000-000000000101'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        count(
            &mut conn,
            "select count(*) from message_client_ids where client_msg_id = 'k1'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&mut conn, "select count(*) from message_client_ids").await,
        1
    );
    // A second pass creates nothing.
    assert_eq!(
        partitions::ensure(&pool, NaiveDate::from_ymd_opt(2031, 5, 1).unwrap(), 2)
            .await
            .unwrap(),
        Some(0)
    );
}

#[tokio::test]
async fn the_service_creates_the_coming_months_partitions_at_start() {
    let app = crate::helpers::spawn_app().await;
    let name = partitions::current_month()
        .format("messages_y%Ym%m")
        .to_string();
    let mut found = false;
    for _ in 0..100 {
        let exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
            .bind(&name)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if exists {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(found, "{name} was not created");
    app.shutdown().await;
}

#[tokio::test]
async fn attachment_durations_hold_milliseconds_from_version_17_and_whole_seconds_before() {
    async fn duration_type(conn: &mut PgConnection) -> (String, Option<i32>) {
        sqlx::query_as(
            "select data_type::text, numeric_scale::int from information_schema.columns
             where table_name = 'attachments' and column_name = 'duration'",
        )
        .fetch_one(conn)
        .await
        .unwrap()
    }
    let db = TestDb::create().await;
    let mut conn = db.connect().await;
    migrate::up(&mut conn, None).await.unwrap();
    assert!(migrate::latest_version() >= 17);
    let steps = migrate::MIGRATIONS
        .iter()
        .filter(|m| m.version >= 17)
        .count();
    migrate::down(&mut conn, Some(steps)).await.unwrap();
    assert_eq!(
        duration_type(&mut conn).await,
        ("integer".to_owned(), Some(0))
    );
    migrate::up(&mut conn, Some(1)).await.unwrap();
    assert_eq!(
        migrate::current_version(&mut conn).await.unwrap().version,
        Some(17)
    );
    assert_eq!(
        duration_type(&mut conn).await,
        ("numeric".to_owned(), Some(3))
    );
}
