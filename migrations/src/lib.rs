//! ReTiCh Messaging's schema migrations in golang-migrate format, and the code that applies them:
//! api-service runs them (`api-service migrate …`, `AUTO_MIGRATE=true`) and both services' tests
//! build each test's fresh database with them.
//!
//! The SQL files of this crate's folder (`NNNNNN_name.up.sql` / `.down.sql`) are embedded at build
//! time ([`MIGRATIONS`]). State
//! lives in `schema_migrations(version bigint not null primary key, dirty boolean not null)` with
//! at most one row, read and written the way golang-migrate does: before a migration runs the row
//! is set to the target version with `dirty = true`; after it succeeds `dirty` is cleared; a
//! database left dirty is refused until an operator runs `migrate force N`. So an existing ReTiCh
//! database at version 5 is recognised as such, and the `migrate` CLI keeps working on the folder.
//!
//! Each migration file runs as one multi-statement query inside a transaction, together with the
//! version update that follows it, so a failed file leaves the schema as it was (and the row
//! dirty, as golang-migrate would). A session advisory lock keeps two replicas from migrating at
//! once.
//!
//! The statements here are the only ones of the services not compile-checked with `query!`
//! (docs/development.md): they run before the schema exists, against the `schema_migrations` table
//! this crate creates itself (which the offline data's scratch database, built from the `.sql`
//! files, does not have), and the migration files and `create database` are SQL known only at run
//! time.

use sqlx::{Connection, PgConnection, Row};
use thiserror::Error;

/// One embedded migration.
#[derive(Debug)]
pub struct Migration {
    pub version: u64,
    pub name: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Advisory lock key held while migrating ("retich-migrate" folded into an i64).
const MIGRATE_LOCK_KEY: i64 = 0x7265_7469_6368_6d67;

/// The state recorded in `schema_migrations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    /// `None`: no migration applied.
    pub version: Option<u64>,
    pub dirty: bool,
}

impl std::fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            None => write!(f, "no migration applied"),
            Some(v) if self.dirty => write!(f, "{v} (dirty)"),
            Some(v) => write!(f, "{v}"),
        }
    }
}

#[derive(Debug, Error)]
pub enum MigrateError {
    #[error(
        "database is dirty at version {0}: fix the schema by hand, then run `migrate force <version>`"
    )]
    Dirty(u64),
    #[error("database is at version {0}, which this build does not know")]
    UnknownVersion(u64),
    #[error("migration {version}_{name} failed: {source}")]
    Failed {
        version: u64,
        name: &'static str,
        source: sqlx::Error,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The highest version this build knows.
pub fn latest_version() -> u64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

async fn ensure_table(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // Checked first so PostgreSQL does not emit an "already exists" notice on every start.
    let exists: bool = sqlx::query_scalar("select to_regclass('schema_migrations') is not null")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        sqlx::raw_sql("create table if not exists schema_migrations (version bigint not null primary key, dirty boolean not null)")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Reads the recorded version (creating the table if it does not exist yet).
pub async fn current_version(conn: &mut PgConnection) -> Result<SchemaVersion, sqlx::Error> {
    ensure_table(conn).await?;
    let row = sqlx::query("select version, dirty from schema_migrations limit 1")
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        None => SchemaVersion {
            version: None,
            dirty: false,
        },
        Some(r) => SchemaVersion {
            version: Some(r.get::<i64, _>(0) as u64),
            dirty: r.get(1),
        },
    })
}

/// Replaces the single row, as golang-migrate's `SetVersion` does (`None` empties the table).
async fn set_version(
    conn: &mut PgConnection,
    version: Option<u64>,
    dirty: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from schema_migrations")
        .execute(&mut *conn)
        .await?;
    if let Some(v) = version {
        sqlx::query("insert into schema_migrations (version, dirty) values ($1, $2)")
            .bind(v as i64)
            .bind(dirty)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn with_lock<T>(
    conn: &mut PgConnection,
    f: impl AsyncFnOnce(&mut PgConnection) -> Result<T, MigrateError>,
) -> Result<T, MigrateError> {
    sqlx::query("select pg_advisory_lock($1)")
        .bind(MIGRATE_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    let result = f(conn).await;
    let unlock = sqlx::query("select pg_advisory_unlock($1)")
        .bind(MIGRATE_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    let value = result?;
    unlock?;
    Ok(value)
}

fn index_of(version: Option<u64>) -> Result<usize, MigrateError> {
    match version {
        None => Ok(0),
        Some(v) => MIGRATIONS
            .iter()
            .position(|m| m.version == v)
            .map(|i| i + 1)
            .ok_or(MigrateError::UnknownVersion(v)),
    }
}

async fn run_one(
    conn: &mut PgConnection,
    m: &'static Migration,
    sql: &'static str,
    target: Option<u64>,
) -> Result<(), MigrateError> {
    set_version(conn, target, true).await?;
    let failed = |source| MigrateError::Failed {
        version: m.version,
        name: m.name,
        source,
    };
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(failed)?;
    set_version(&mut tx, target, false).await?;
    tx.commit().await?;
    Ok(())
}

/// Applies up to `limit` pending up-migrations (all when `None`); returns how many ran.
pub async fn up(conn: &mut PgConnection, limit: Option<usize>) -> Result<usize, MigrateError> {
    with_lock(conn, async |conn| {
        let state = current_version(conn).await?;
        if state.dirty {
            return Err(MigrateError::Dirty(state.version.unwrap_or(0)));
        }
        let start = index_of(state.version)?;
        let pending = &MIGRATIONS[start..];
        let count = limit.map_or(pending.len(), |l| l.min(pending.len()));
        for m in &pending[..count] {
            tracing::info!(
                migration.version = m.version,
                migration.name = m.name,
                "applying migration"
            );
            run_one(conn, m, m.up, Some(m.version)).await?;
        }
        Ok(count)
    })
    .await
}

/// Reverts up to `steps` applied migrations (all when `None`); returns how many ran.
pub async fn down(conn: &mut PgConnection, steps: Option<usize>) -> Result<usize, MigrateError> {
    with_lock(conn, async |conn| {
        let state = current_version(conn).await?;
        if state.dirty {
            return Err(MigrateError::Dirty(state.version.unwrap_or(0)));
        }
        let applied = index_of(state.version)?;
        let count = steps.map_or(applied, |s| s.min(applied));
        for i in (applied - count..applied).rev() {
            let m = &MIGRATIONS[i];
            let target = i.checked_sub(1).map(|p| MIGRATIONS[p].version);
            tracing::info!(
                migration.version = m.version,
                migration.name = m.name,
                "reverting migration"
            );
            run_one(conn, m, m.down, target).await?;
        }
        Ok(count)
    })
    .await
}

/// Records `version` as applied and clean without running anything (golang-migrate `force`).
pub async fn force(conn: &mut PgConnection, version: Option<u64>) -> Result<(), MigrateError> {
    if let Some(v) = version {
        index_of(Some(v))?;
    }
    with_lock(conn, async |conn| {
        ensure_table(conn).await?;
        set_version(conn, version, false).await?;
        Ok(())
    })
    .await
}

/// Creates the database named in `url` when the server says it does not exist, by connecting to
/// the `postgres` maintenance database of the same server. Returns whether it was created.
pub async fn create_database_if_missing(url: &str) -> Result<bool, sqlx::Error> {
    use sqlx::postgres::PgConnectOptions;
    let options: PgConnectOptions = url.parse()?;
    match PgConnection::connect_with(&options).await {
        Ok(conn) => {
            conn.close().await?;
            Ok(false)
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            let name = options.get_database().unwrap_or("postgres").to_owned();
            let mut admin =
                PgConnection::connect_with(&options.clone().database("postgres")).await?;
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            match sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {quoted}")))
                .execute(&mut admin)
                .await
            {
                Ok(_) => Ok(true),
                // Another replica created it first.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}
