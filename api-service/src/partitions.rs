//! Monthly `messages` partitions, created ahead of time by the service itself: at start and then
//! periodically, by one replica at a time (a PostgreSQL advisory lock), never left to a cron nobody
//! runs. The SQL function `ensure_messages_partitions`
//! (`migrations/000009_partition_maintenance.up.sql`) creates each missing month and first moves
//! any rows of that month out of `messages_default`, so rows never pile up there.

use std::time::Duration;

use chrono::{Datelike, NaiveDate, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Advisory lock key held while partitions are being created ("retich-partitions").
const PARTITION_LOCK_KEY: i64 = 0x7265_7469_6368_7074;

/// First day of the current UTC month.
pub fn current_month() -> NaiveDate {
    let today = Utc::now().date_naive();
    NaiveDate::from_ymd_opt(today.year(), today.month(), 1).expect("first of month")
}

/// Creates the partitions from `from` (a first-of-month) through `months_ahead` months later, if
/// this replica wins the lock. Returns `None` when another replica holds it, else how many
/// partitions were created.
pub async fn ensure(
    pool: &PgPool,
    from: NaiveDate,
    months_ahead: u32,
) -> Result<Option<i32>, sqlx::Error> {
    // Session-level lock: held on one pooled connection for the duration of the call.
    let mut conn = pool.acquire().await?;
    let locked = sqlx::query_scalar!(
        r#"select pg_try_advisory_lock($1) as "locked!""#,
        PARTITION_LOCK_KEY
    )
    .fetch_one(&mut *conn)
    .await?;
    if !locked {
        return Ok(None);
    }
    let created = async {
        // Months that already have rows in the default partition (an upgraded database, or a
        // period when maintenance did not run) get their partition too, rows moved into it.
        let stray: Vec<NaiveDate> = sqlx::query_scalar!(
            r#"select distinct (date_trunc('month', created_at at time zone 'utc'))::date as "month!"
               from messages_default"#
        )
        .fetch_all(&mut *conn)
        .await?;
        for month in &stray {
            sqlx::query!("select create_messages_partition($1)", month)
                .execute(&mut *conn)
                .await?;
        }
        let ahead = sqlx::query_scalar!(
            r#"select ensure_messages_partitions($1, $2) as "created!""#,
            from,
            months_ahead as i32
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok::<_, sqlx::Error>(ahead + stray.len() as i32)
    }
    .await;
    let unlocked = sqlx::query_scalar!(
        r#"select pg_advisory_unlock($1) as "unlocked!""#,
        PARTITION_LOCK_KEY
    )
    .fetch_one(&mut *conn)
    .await;
    let created = created?;
    unlocked?;
    Ok(Some(created))
}

/// Runs [`ensure`] now and then every `every`, until `stop` is cancelled.
pub async fn maintain(pool: PgPool, months_ahead: u32, every: Duration, stop: CancellationToken) {
    loop {
        match ensure(&pool, current_month(), months_ahead).await {
            Ok(Some(n)) if n > 0 => {
                tracing::info!(partitions.created = n, "created messages partitions")
            }
            Ok(_) => tracing::debug!("messages partitions up to date"),
            Err(e) => {
                tracing::error!(error = %shared_ops::Chain(&e), "messages partition maintenance failed")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
