//! Database access on PostgreSQL or SQLite, chosen by the URL: one pool enum, one connection enum
//! and [`db_run!`](crate::db_run) to run the same Diesel query body on whichever is live.
//! Migrations are embedded per backend and applied at start-up by a readiness monitor that keeps
//! retrying with backoff while the database is unreachable, so the process stays up and its
//! readiness follows the database.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use diesel::{
    ConnectionError, SqliteConnection,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
};
use diesel_async::{
    AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod, deadpool},
    sync_connection_wrapper::SyncConnectionWrapper,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use tokio::sync::{Notify, watch};
use tonic::Status;

use crate::{
    config::DatabaseArgs,
    error,
    metrics::{ObservablePool, PoolStatus},
};

/// An async PostgreSQL connection.
pub type PgConn = AsyncPgConnection;

#[doc(hidden)]
pub use diesel_async::AsyncConnection as __AsyncConnection;
#[doc(hidden)]
pub use futures as __futures;
/// An SQLite connection run on the blocking pool behind an async face.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// How long SQLite waits on a locked database before giving up (PRAGMA busy_timeout).
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;
/// Key of the PostgreSQL advisory lock that serialises migrations across replicas.
const MIGRATION_LOCK_KEY: i64 = 0x6261_636b_626f_6e65; // "backbone"

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite://PATH`, `sqlite:PATH` or a plain file path.
    Sqlite,
}

/// A database URL that has been checked, split by backend.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A PostgreSQL connection string, validated by tokio-postgres's own parser.
    Postgres(String),
    /// The file of an SQLite database.
    Sqlite(PathBuf),
}

impl std::fmt::Debug for DatabaseUrl {
    // The URL may hold a password: show where it points, never the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

impl DatabaseUrl {
    /// Parses and checks `url`; the error message never repeats the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Self, DbError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(DbError::Config("the database URL is empty".into()));
        }
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if rest.is_empty() {
                return Err(DbError::Config("an sqlite:// URL needs a file path".into()));
            }
            return Ok(Self::Sqlite(PathBuf::from(rest)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return match url.parse::<tokio_postgres::Config>() {
                Ok(config) if config.get_hosts().is_empty() => {
                    Err(DbError::Config("the PostgreSQL URL names no host".into()))
                }
                Ok(_) => Ok(Self::Postgres(url.to_owned())),
                Err(err) => Err(DbError::Config(format!("malformed PostgreSQL URL: {err}"))),
            };
        }
        match url.split_once("://") {
            Some((scheme, _)) => Err(DbError::Config(format!(
                "unsupported database URL scheme `{scheme}`: use postgres://..., sqlite://PATH or a file path"
            ))),
            None => Ok(Self::Sqlite(PathBuf::from(url))),
        }
    }

    /// The backend this URL selects.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Where the URL points, without user or password: for logs.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(url) => match url.parse::<tokio_postgres::Config>() {
                Ok(config) => {
                    let hosts: Vec<String> = config
                        .get_hosts()
                        .iter()
                        .map(|h| match h {
                            tokio_postgres::config::Host::Tcp(name) => name.clone(),
                            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                        })
                        .collect();
                    format!(
                        "postgres://{}/{}",
                        hosts.join(","),
                        config.get_dbname().unwrap_or_default()
                    )
                }
                Err(_) => "postgres://(unparseable)".into(),
            },
        }
    }
}

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL or another setting is wrong: a start-up error.
    #[error("{0}")]
    Config(String),
    /// The database has not been reached yet or migrations are still pending.
    #[error("the database is not ready yet")]
    NotReady,
    /// The database could not be reached (connect, pool wait or a dropped connection).
    #[error("the database is unreachable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Applying migrations failed.
    #[error("database migration failed")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A query failed for another reason (constraint, bad SQL, ...).
    #[error("database query failed")]
    Query(#[source] diesel::result::Error),
}

impl From<diesel::result::Error> for DbError {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match err {
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | Error::BrokenTransactionManager => Self::Unavailable(Box::new(err)),
            other => Self::Query(other),
        }
    }
}

impl From<deadpool::PoolError> for DbError {
    fn from(err: deadpool::PoolError) -> Self {
        Self::Unavailable(Box::new(err))
    }
}

impl DbError {
    /// True when trying again later may succeed (the database was unreachable or not ready).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::NotReady | Self::Unavailable(_))
    }
}

impl From<&DbError> for Status {
    fn from(err: &DbError) -> Self {
        match err {
            DbError::NotReady | DbError::Unavailable(_) => error::unavailable(
                "DATABASE_UNAVAILABLE",
                "the service's database is unreachable; try again shortly",
                Duration::from_secs(1),
            ),
            DbError::Config(_) | DbError::Migration(_) | DbError::Query(_) => error::internal(err),
        }
    }
}

/// The embedded migrations of one service, one tree per backend.
#[derive(Clone, Copy)]
pub struct Migrations {
    /// `migrations/postgres`.
    pub postgres: &'static EmbeddedMigrations,
    /// `migrations/sqlite`.
    pub sqlite: &'static EmbeddedMigrations,
}

impl std::fmt::Debug for Migrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Migrations")
    }
}

/// Lends a `'static` embedded tree to the harness, which wants a source by value.
struct Source(&'static EmbeddedMigrations);

impl<DB: diesel::backend::Backend> diesel::migration::MigrationSource<DB> for Source {
    fn migrations(
        &self,
    ) -> diesel::migration::Result<Vec<Box<dyn diesel::migration::Migration<DB>>>> {
        <EmbeddedMigrations as diesel::migration::MigrationSource<DB>>::migrations(self.0)
    }
}

enum Pool {
    Postgres(deadpool::Pool<PgConn>),
    Sqlite(deadpool::Pool<SqliteConn>),
}

/// A pooled connection to whichever backend is configured; use it with [`db_run!`](crate::db_run).
#[allow(
    clippy::large_enum_variant,
    reason = "one short-lived value per call; boxing would only add an allocation per checkout"
)]
pub enum DbConn {
    /// A PostgreSQL connection.
    Postgres(deadpool::Object<PgConn>),
    /// An SQLite connection.
    Sqlite(deadpool::Object<SqliteConn>),
}

impl std::fmt::Debug for DbConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Postgres(_) => "DbConn::Postgres",
            Self::Sqlite(_) => "DbConn::Sqlite",
        })
    }
}

/// Runs the same Diesel body against whichever connection is live. The body sees `$c` as
/// `&mut PgConn` or `&mut SqliteConn`; dialect-specific SQL belongs in explicit per-backend arms
/// (`match conn { DbConn::Postgres(c) => ..., DbConn::Sqlite(c) => ... }`), not here.
///
/// The body may also use `pipeline!(conn, h, step, step, ...)`: statements that do not depend on
/// each other's results. Each step is an expression (a block, say) that awaits its statements on
/// `h`, a handle of `conn`, and gives a `QueryResult`; `pipeline!` gives `QueryResult<(each step's
/// value, ...)>`. On PostgreSQL the steps run at once on the one connection, so their statements
/// go out before the first answer is read: one round trip for all of them, in the same
/// transaction. On SQLite they run one after the other. Which step's statement reaches the server
/// first is not fixed (one that must still be prepared waits for that), so statements that must
/// run in order (a row, then the rows that refer to it) go in the same step. A step may use `?`
/// but not `return` (on SQLite that would leave the whole `pipeline!`).
///
/// `transaction!(conn, async |tx| ...)` runs a body in a transaction, committed if it gives `Ok`
/// and rolled back if it gives `Err`. On PostgreSQL ([`pg_transaction`]) `BEGIN` goes out with
/// the body's first statements instead of in a round trip of its own, and `tx` is a shared
/// handle (`&mut &PgConn`) the body can `pipeline!` on; on SQLite it is diesel-async's
/// `transaction`.
#[macro_export]
macro_rules! db_run {
    ($conn:expr, |$c:ident| $body:expr) => {
        $crate::__db_run!(($) $conn, |$c| $body)
    };
}

/// [`db_run!`](crate::db_run) with a `$` token to define `pipeline!` with.
#[doc(hidden)]
#[macro_export]
macro_rules! __db_run {
    (($d:tt) $conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConn::Postgres(pooled) => {
                #[allow(unused_macros)]
                macro_rules! pipeline { ($d($d t:tt)*) => { $crate::__pipeline_pg!($d($d t)*) } }
                #[allow(unused_macros)]
                macro_rules! transaction {
                    ($d conn:expr, $d body:expr) => { $crate::db::pg_transaction($d conn, $d body) };
                }
                let $c: &mut $crate::db::PgConn = &mut *pooled;
                $body
            }
            $crate::db::DbConn::Sqlite(pooled) => {
                #[allow(unused_macros)]
                macro_rules! pipeline { ($d($d t:tt)*) => { $crate::__pipeline_sqlite!($d($d t)*) } }
                #[allow(unused_macros)]
                macro_rules! transaction {
                    ($d conn:expr, $d body:expr) => {
                        $crate::db::__AsyncConnection::transaction($d conn, $d body)
                    };
                }
                let $c: &mut $crate::db::SqliteConn = &mut *pooled;
                $body
            }
        }
    };
}

/// `pipeline!` on PostgreSQL: the steps polled together on shared handles of one connection.
#[doc(hidden)]
#[macro_export]
macro_rules! __pipeline_pg {
    ($tx:expr, $h:ident, $($step:expr),+ $(,)?) => {{
        let shared: &$crate::db::PgConn = &*$tx;
        $crate::db::__futures::try_join!($(async {
            let mut handle = shared;
            let $h = &mut handle;
            $step
        }),+)
    }};
}

/// `pipeline!` on SQLite: the steps one after the other.
#[doc(hidden)]
#[macro_export]
macro_rules! __pipeline_sqlite {
    ($tx:expr, $h:ident, $($step:expr),+ $(,)?) => {
        async {
            ::core::result::Result::<_, ::diesel::result::Error>::Ok(($({
                let $h = &mut *$tx;
                $step?
            },)+))
        }
        .await
    };
}

/// A connection for one short read, used with [`read_run!`](crate::read_run): on PostgreSQL
/// one that other reads use at the same time (see [`Database::read_conn`]), on SQLite a pooled
/// one.
pub enum ReadConn {
    /// A PostgreSQL connection, shared or (with shared readers off) pooled.
    Postgres(PgRead),
    /// A pooled SQLite connection.
    Sqlite(deadpool::Object<SqliteConn>),
}

impl std::fmt::Debug for ReadConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postgres(read) => write!(f, "ReadConn::Postgres({read:?})"),
            Self::Sqlite(_) => f.write_str("ReadConn::Sqlite"),
        }
    }
}

/// The PostgreSQL side of a [`ReadConn`]; queries run on it through a shared reference, which
/// is what lets diesel-async pipeline statements from concurrent callers.
pub enum PgRead {
    /// One of the shared read connections.
    Shared(Arc<PgConn>),
    /// A pooled connection (shared readers off: the rare case, so it is boxed).
    Pooled(Box<deadpool::Object<PgConn>>),
}

impl std::fmt::Debug for PgRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Shared(_) => "shared",
            Self::Pooled(_) => "pooled",
        })
    }
}

impl std::ops::Deref for PgRead {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        match self {
            Self::Shared(conn) => conn,
            Self::Pooled(conn) => conn,
        }
    }
}

/// Runs one read body against a [`ReadConn`]: `$c` is `&mut &PgConn` on PostgreSQL (a shared
/// reference: the statement may pipeline with other callers' on the same connection) and
/// `&mut SqliteConn` on SQLite. Only for single statements outside any transaction.
#[macro_export]
macro_rules! read_run {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::ReadConn::Postgres(read) => {
                let mut shared: &$crate::db::PgConn = &*read;
                let $c = &mut shared;
                $body
            }
            $crate::db::ReadConn::Sqlite(pooled) => {
                let $c: &mut $crate::db::SqliteConn = &mut *pooled;
                $body
            }
        }
    };
}

/// PostgreSQL connections shared by short reads. A pooled connection serves one statement at a
/// time, so every in-flight read costs the database a wake-up and the service a write and a
/// read of its own socket; concurrent reads on a shared connection pipeline, so the database
/// takes them in batches. A slow statement would hold up the ones queued behind it, so only
/// primary-key lookups use these.
struct SharedReaders {
    /// The PostgreSQL connection string.
    url: String,
    slots: Vec<ReaderSlot>,
    next: AtomicUsize,
}

#[derive(Default)]
struct ReaderSlot {
    live: Mutex<Option<SharedConn>>,
    /// Held while (re)connecting, so one caller connects and the others wait for it.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct SharedConn {
    conn: Arc<PgConn>,
    /// Set when the connection's driver task ends (the server closed it, or the network failed).
    closed: Arc<AtomicBool>,
}

impl ReaderSlot {
    fn live(&self) -> Option<Arc<PgConn>> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.as_ref()
            .filter(|shared| !AtomicBool::load(&shared.closed, Ordering::Acquire))
            .map(|shared| shared.conn.clone())
    }

    fn replace(&self, conn: Option<SharedConn>) {
        *self.live.lock().unwrap_or_else(PoisonError::into_inner) = conn;
    }
}

/// Opens a connection for [`SharedReaders`], driving it on its own task so its end is seen.
async fn connect_shared(url: &str) -> Result<SharedConn, DbError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|err| DbError::Unavailable(Box::new(err)))?;
    let closed = Arc::new(AtomicBool::new(false));
    let driver_closed = closed.clone();
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "a shared read connection ended");
        }
        driver_closed.store(true, Ordering::Release);
    });
    let conn = AsyncPgConnection::try_from(client)
        .await
        .map_err(|err| DbError::Unavailable(Box::new(err)))?;
    Ok(SharedConn {
        conn: Arc::new(conn),
        closed,
    })
}

struct Inner {
    url: DatabaseUrl,
    pool: Pool,
    /// None on SQLite and with `--db-read-connections 0`.
    readers: Option<SharedReaders>,
    timeout: Duration,
    migrations: Migrations,
    ready: watch::Sender<bool>,
    check_now: Notify,
}

impl ObservablePool for Inner {
    fn status(&self) -> PoolStatus {
        let status = match &self.pool {
            Pool::Postgres(pool) => pool.status(),
            Pool::Sqlite(pool) => pool.status(),
        };
        PoolStatus {
            max: status.max_size,
            open: status.size,
            idle: status.available,
            waiting: status.waiting,
        }
    }
}

/// A service's database: the pool, its migrations and its readiness. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Builds the pool for `url` without connecting yet. Fails only on configuration errors
    /// (a malformed URL, an SQLite directory that cannot be created).
    pub fn new(url: &str, args: &DatabaseArgs, migrations: Migrations) -> Result<Self, DbError> {
        let url = DatabaseUrl::parse(url)?;
        let pool = match &url {
            DatabaseUrl::Postgres(conn_str) => {
                let mut config = ManagerConfig::default();
                // A dead connection is found by the query that uses it (and the monitor then
                // empties the pool), instead of a round trip before every checkout.
                config.recycling_method = RecyclingMethod::Fast;
                let manager = AsyncDieselConnectionManager::new_with_config(conn_str, config);
                Pool::Postgres(build_pool(manager, args)?)
            }
            DatabaseUrl::Sqlite(path) => {
                create_parent_dir(path)?;
                let mut config = ManagerConfig::default();
                config.recycling_method = RecyclingMethod::Fast;
                config.custom_setup = Box::new(|url| Box::pin(establish_sqlite(url.to_owned())));
                let manager =
                    AsyncDieselConnectionManager::new_with_config(path.to_string_lossy(), config);
                Pool::Sqlite(build_pool(manager, args)?)
            }
        };
        let readers = match &url {
            DatabaseUrl::Postgres(conn_str) if args.db_read_connections > 0 => {
                Some(SharedReaders {
                    url: conn_str.clone(),
                    slots: (0..args.db_read_connections)
                        .map(|_| ReaderSlot::default())
                        .collect(),
                    next: AtomicUsize::new(0),
                })
            }
            _ => None,
        };
        let (ready, _) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Inner {
                url,
                pool,
                readers,
                timeout: args.db_timeout,
                migrations,
                ready,
                check_now: Notify::new(),
            }),
        })
    }

    /// The configured backend.
    pub fn backend(&self) -> Backend {
        self.inner.url.backend()
    }

    /// Where the database is, without credentials.
    pub fn redacted_url(&self) -> String {
        self.inner.url.redacted()
    }

    /// A connection for a request. Fails fast with [`DbError::NotReady`] while the monitor
    /// knows the database is down or unmigrated.
    pub async fn conn(&self) -> Result<DbConn, DbError> {
        if !*self.inner.ready.borrow() {
            return Err(DbError::NotReady);
        }
        self.pooled().await.inspect_err(|err| {
            if err.is_unavailable() {
                self.report_unavailable();
            }
        })
    }

    /// A connection for one short read outside any transaction (a lookup by primary key), used
    /// with [`read_run!`](crate::read_run). On PostgreSQL it is one of the shared read
    /// connections (`--db-read-connections`), round robin, connected on first use and again
    /// after it closes; with none configured, and on SQLite, it is a pooled one.
    pub async fn read_conn(&self) -> Result<ReadConn, DbError> {
        let Some(readers) = &self.inner.readers else {
            return Ok(match self.conn().await? {
                DbConn::Postgres(conn) => ReadConn::Postgres(PgRead::Pooled(Box::new(conn))),
                DbConn::Sqlite(conn) => ReadConn::Sqlite(conn),
            });
        };
        if !*self.inner.ready.borrow() {
            return Err(DbError::NotReady);
        }
        let turn = readers.next.fetch_add(1, Ordering::Relaxed);
        let slot = &readers.slots[turn % readers.slots.len()];
        if let Some(conn) = slot.live() {
            return Ok(ReadConn::Postgres(PgRead::Shared(conn)));
        }
        let connected = async {
            let _connecting = slot.connecting.lock().await;
            if let Some(conn) = slot.live() {
                return Ok(conn);
            }
            let fresh = connect_shared(&readers.url).await?;
            slot.replace(Some(fresh.clone()));
            Ok(fresh.conn)
        };
        let connected = tokio::time::timeout(self.inner.timeout, connected)
            .await
            .unwrap_or_else(|elapsed| Err(DbError::Unavailable(Box::new(elapsed))));
        match connected {
            Ok(conn) => Ok(ReadConn::Postgres(PgRead::Shared(conn))),
            Err(err) => {
                self.report_unavailable();
                Err(err)
            }
        }
    }

    /// Tells the monitor that a call just found the database unreachable, so it re-checks now
    /// instead of at its next tick.
    pub fn report_unavailable(&self) {
        self.inner.check_now.notify_one();
    }

    /// Follows readiness: true once reachable and migrated, false while unreachable.
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }

    /// Applies pending migrations (the `migrate` subcommand, and the monitor at start-up).
    /// On PostgreSQL an advisory lock makes replicas starting together take turns.
    pub async fn migrate(&self) -> Result<usize, DbError> {
        let migrations = self.inner.migrations;
        match self.pooled().await? {
            DbConn::Postgres(mut conn) => {
                diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
                    .execute(&mut conn)
                    .await?;
                let (mut conn, applied) = run_migrations(conn, migrations.postgres).await;
                diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
                    .execute(&mut conn)
                    .await?;
                applied
            }
            DbConn::Sqlite(conn) => run_migrations(conn, migrations.sqlite).await.1,
        }
    }

    /// Applies pending migrations and marks the database ready: for one-shot commands
    /// (`create-admin`, `seed`) that run without the [`monitor`](Self::monitor).
    pub async fn prepare(&self) -> Result<usize, DbError> {
        let applied = self.migrate().await?;
        self.inner.ready.send_replace(true);
        Ok(applied)
    }

    /// Reverts every applied migration (tests check that each `down.sql` undoes its `up.sql`).
    pub async fn revert_all(&self) -> Result<usize, DbError> {
        let migrations = self.inner.migrations;
        let reverted = match self.pooled().await? {
            DbConn::Postgres(conn) => revert_migrations(conn, migrations.postgres).await,
            DbConn::Sqlite(conn) => revert_migrations(conn, migrations.sqlite).await,
        };
        self.inner.ready.send_replace(false);
        reverted
    }

    /// Keeps readiness true to the database: migrates once reachable, then pings it, retrying
    /// with capped exponential backoff while it is down. Runs until the process ends.
    pub async fn monitor(self) {
        const HEALTHY_EVERY: Duration = Duration::from_secs(5);
        const FIRST_RETRY: Duration = Duration::from_millis(200);
        const MAX_RETRY: Duration = Duration::from_secs(2);
        let mut migrated = false;
        let mut retry = FIRST_RETRY;
        loop {
            let result = if migrated {
                self.ping().await
            } else {
                self.migrate().await.map(drop)
            };
            let was_ready = *self.inner.ready.borrow();
            let wait = match result {
                Ok(()) => {
                    if !migrated {
                        tracing::info!(database = %self.redacted_url(), "database migrated and ready");
                    } else if !was_ready {
                        tracing::info!(database = %self.redacted_url(), "database reachable again");
                    }
                    migrated = true;
                    retry = FIRST_RETRY;
                    self.inner.ready.send_replace(true);
                    HEALTHY_EVERY
                }
                Err(err) => {
                    if was_ready || retry == FIRST_RETRY {
                        tracing::warn!(
                            database = %self.redacted_url(),
                            error = %error::SourceChain(&err),
                            "database unreachable; readiness is NOT_SERVING until it is back"
                        );
                    }
                    self.inner.ready.send_replace(false);
                    // Connections opened before the outage are dead; drop the idle ones.
                    self.clear_idle();
                    let wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.inner.check_now.notified() => {}
            }
        }
    }

    async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self.pooled().await?;
        db_run!(&mut conn, |c| diesel::sql_query("SELECT 1")
            .execute(c)
            .await)?;
        Ok(())
    }

    async fn pooled(&self) -> Result<DbConn, DbError> {
        Ok(match &self.inner.pool {
            Pool::Postgres(pool) => DbConn::Postgres(pool.get().await?),
            Pool::Sqlite(pool) => DbConn::Sqlite(pool.get().await?),
        })
    }

    /// The pool's state now (the metrics' `db.client.connection.*` gauges).
    pub fn pool_status(&self) -> PoolStatus {
        self.inner.status()
    }

    /// Reports the pool's gauges, labelled `pool_name`, for as long as the database lives.
    pub fn observe(&self, pool_name: &'static str) {
        crate::metrics::observe_pool(pool_name, Arc::downgrade(&self.inner));
    }

    fn clear_idle(&self) {
        for slot in self.inner.readers.iter().flat_map(|r| &r.slots) {
            slot.replace(None);
        }
        match &self.inner.pool {
            Pool::Postgres(pool) => drop(pool.retain(|_, _| false)),
            Pool::Sqlite(pool) => drop(pool.retain(|_, _| false)),
        }
    }
}

fn build_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    args: &DatabaseArgs,
) -> Result<deadpool::Pool<C>, DbError>
where
    AsyncDieselConnectionManager<C>:
        ::deadpool::managed::Manager<Type = C, Error = diesel_async::pooled_connection::PoolError>,
{
    deadpool::Pool::builder(manager)
        .max_size(args.db_pool_size.max(1))
        .runtime(::deadpool::Runtime::Tokio1)
        .wait_timeout(Some(args.db_timeout))
        .create_timeout(Some(args.db_timeout))
        .build()
        .map_err(|err| DbError::Config(format!("cannot build the connection pool: {err}")))
}

async fn establish_sqlite(path: String) -> Result<SqliteConn, ConnectionError> {
    let mut conn = SqliteConn::establish(&path).await?;
    // WAL lets readers run beside the writer; foreign keys are off by default in SQLite;
    // busy_timeout makes a writer wait for the lock instead of failing at once.
    conn.batch_execute(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};"
    ))
    .await
    .map_err(ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

fn create_parent_dir(path: &Path) -> Result<(), DbError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|err| {
            DbError::Config(format!(
                "cannot create the SQLite directory {}: {err}",
                dir.display()
            ))
        }),
        _ => Ok(()),
    }
}

// The harness runs Diesel's synchronous migration code through `block_in_place`, which needs
// the multi-thread runtime (services and tests use it).
async fn run_migrations<C>(
    conn: C,
    migrations: &'static EmbeddedMigrations,
) -> (C, Result<usize, DbError>)
where
    C: AsyncConnection + 'static,
    AsyncMigrationHarness<C>: MigrationHarness<C::Backend>,
{
    let mut harness = AsyncMigrationHarness::new(conn);
    let applied = harness
        .run_pending_migrations(Source(migrations))
        .map(|versions| versions.len())
        .map_err(DbError::Migration);
    (harness.into_inner(), applied)
}

async fn revert_migrations<C>(
    conn: C,
    migrations: &'static EmbeddedMigrations,
) -> Result<usize, DbError>
where
    C: AsyncConnection + 'static,
    AsyncMigrationHarness<C>: MigrationHarness<C::Backend>,
{
    let mut harness = AsyncMigrationHarness::new(conn);
    harness
        .revert_all_migrations(Source(migrations))
        .map(|versions| versions.len())
        .map_err(DbError::Migration)
}

/// A transaction body: an async closure over the transaction's connection whose future is
/// `Send` (the bound diesel-async's own `transaction` uses, which `AsyncFnOnce` alone cannot
/// state).
pub trait TxBody<T, R>: AsyncFnOnce(T) -> R + FnOnce(T) -> <Self as TxBody<T, R>>::Fut {
    /// The body's future.
    type Fut: Future<Output = R> + Send;
}

impl<F, T, Fut, R> TxBody<T, R> for F
where
    F: AsyncFnOnce(T) -> R + FnOnce(T) -> Fut,
    Fut: Future<Output = R> + Send,
{
    type Fut = Fut;
}

/// `transaction!(c, async |tx| ...)` on PostgreSQL (see [`db_run!`](crate::db_run)): the body
/// in a transaction, committed if it gives `Ok`, rolled back if it gives `Err`, as diesel-async's
/// `transaction`, but `BEGIN` is not a round trip of its own: it goes out with the body's first
/// statements. `tx` is a shared handle (`&mut &PgConn`), so the body can `pipeline!` on it.
pub fn pg_transaction<'conn, R, E, F>(
    conn: &'conn mut PgConn,
    body: F,
) -> impl Future<Output = Result<R, E>> + Send + 'conn
where
    for<'r> F: TxBody<&'r mut &'r PgConn, Result<R, E>> + Send + 'conn,
    E: From<diesel::result::Error> + Send + 'conn,
    R: Send + 'conn,
{
    use diesel::connection::{TransactionDepthChange, TransactionManagerStatus};
    use diesel_async::{AnsiTransactionManager, TransactionManager as _};
    async move {
        // The transaction counts as open before BEGIN is sent: if this future is dropped
        // part-way (the caller gave up), the pool finds a connection with a transaction still
        // open, counts it broken and closes it, as it does after diesel-async's own.
        match AnsiTransactionManager::transaction_manager_status_mut(conn) {
            TransactionManagerStatus::Valid(status) if status.transaction_depth().is_none() => {
                status.change_transaction_depth(TransactionDepthChange::IncreaseDepth)?;
            }
            TransactionManagerStatus::Valid(_) => {
                return Err(diesel::result::Error::AlreadyInTransaction.into());
            }
            TransactionManagerStatus::InError => {
                return Err(diesel::result::Error::BrokenTransactionManager.into());
            }
        }
        let (begun, result) = {
            // BEGIN is queued on the connection when first polled, before the body starts, and
            // tokio-postgres sends in queue order: it reaches the server first. BEGIN fails only
            // where every statement after it fails too (the connection is lost).
            let shared: &PgConn = conn;
            let mut begin = shared;
            let mut handle = shared;
            futures::join!(begin.batch_execute("BEGIN"), body(&mut handle))
        };
        let err = match (begun, result) {
            (Ok(()), Ok(value)) => {
                AnsiTransactionManager::commit_transaction(conn).await?;
                return Ok(value);
            }
            // The body's error, or else BEGIN's.
            (_, Err(err)) => err,
            (Err(err), Ok(_)) => err.into(),
        };
        if let Err(rollback) = AnsiTransactionManager::rollback_transaction(conn).await {
            tracing::warn!(error = %rollback, "rollback failed; the connection is closed");
        }
        Err(err)
    }
}

/// Why a transaction body stopped: an answer of ours that rolls the transaction back
/// (`Abort`), or the database's error.
#[derive(Debug)]
pub enum TxError<E> {
    /// Roll back and answer with this.
    Abort(E),
    /// The database failed.
    Diesel(diesel::result::Error),
}

impl<E> From<diesel::result::Error> for TxError<E> {
    fn from(err: diesel::result::Error) -> Self {
        TxError::Diesel(err)
    }
}

/// A query whose prepared statement is kept in the connection's statement cache under its SQL
/// text (see [`Prepared::prepared`]).
#[derive(Debug, Clone, Copy)]
pub struct PreparedBySql<Q>(Q);

/// Keeps a write's prepared statement for the next time.
///
/// Diesel prepares every `INSERT` of an `Insertable` row, every `UPDATE` and every upsert anew
/// on each call and throws it away after, because their SQL can vary with the values (`DEFAULT`
/// for a `None`, a changeset's skipped columns). On PostgreSQL that is a round trip to parse and
/// describe and a message to close, beside the one that runs it, and a parse and analysis on the
/// server each time. `.prepared()` keys the statement by its SQL text instead, so each shape a
/// call site can produce is prepared once per connection. Use it only where the shapes are
/// bounded: a fixed set of columns, or a batch insert whose row count has a small, known ceiling.
pub trait Prepared: Sized {
    /// This query, its prepared statement cached under its SQL text.
    fn prepared(self) -> PreparedBySql<Self> {
        PreparedBySql(self)
    }
}

impl<Q: QueryId> Prepared for Q {}

impl<Q> QueryId for PreparedBySql<Q> {
    type QueryId = ();
    // No static id: the cache key is the SQL text (and bind types), never the Rust type.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, DB> QueryFragment<DB> for PreparedBySql<Q>
where
    DB: diesel::backend::Backend,
    Q: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q: Query> Query for PreparedBySql<Q> {
    type SqlType = Q::SqlType;
}

/// True if `err` is a unique-constraint violation.
pub fn is_unique_violation(err: &diesel::result::Error) -> bool {
    matches!(
        err,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_picks_the_backend() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://.data/a.db").ok(),
            Some(DatabaseUrl::Sqlite(".data/a.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("/tmp/x.db").ok(),
            Some(DatabaseUrl::Sqlite("/tmp/x.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("postgres://u:p@localhost:5432/db")
                .map(|u| u.backend())
                .ok(),
            Some(Backend::Postgres)
        );
    }

    #[test]
    fn malformed_urls_are_config_errors_without_the_secret() {
        for bad in [
            "mysql://root:hunter2@h/db",
            "postgres://u:hunter2@h:notaport/db",
            "",
            "sqlite://",
        ] {
            match DatabaseUrl::parse(bad) {
                Err(DbError::Config(message)) => assert!(!message.contains("hunter2"), "{message}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn redacted_url_drops_credentials() {
        let url = DatabaseUrl::parse("postgres://app:hunter2@db.internal:5432/catalog")
            .expect("valid url");
        assert_eq!(url.redacted(), "postgres://db.internal/catalog");
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
