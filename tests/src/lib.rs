//! Test harness shared by the end-to-end tests: a fresh database per test on each backend,
//! services started in-process on port-0 listeners or as real processes, and small gRPC helpers.

#![allow(
    clippy::expect_used,
    reason = "a test harness: a failed expectation is a failed test, with its message"
)]

pub mod auth_support;
pub mod catalog_support;
pub mod dns_support;
pub mod oidc_support;
pub mod otlp_support;
pub mod pki_support;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The PostgreSQL server the tests use (each test makes and drops its own database there).
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The two database backends every test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the server of `TEST_DATABASE_URL`.
    Postgres,
}

/// A database that exists for one test and is removed when dropped.
#[derive(Debug)]
pub struct TestDb {
    /// URL a service can use.
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Sqlite(
        #[expect(
            dead_code,
            reason = "held so the directory lives as long as the database"
        )]
        tempfile::TempDir,
    ),
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl TestDb {
    /// A new, empty database on `backend`. Panics with directions when PostgreSQL is unreachable:
    /// the suite never skips a backend silently.
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Self {
                    url,
                    cleanup: Cleanup::Sqlite(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let name = format!("backbone_test_{}", uuid::Uuid::now_v7().simple());
                let client = admin_client(&admin_url).await;
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
                let url = postgres_url(&admin_url, &name);
                Self {
                    url,
                    cleanup: Cleanup::Postgres { admin_url, name },
                }
            }
        }
    }
}

impl TestDb {
    /// Closes every server-side connection to this PostgreSQL database, as a database restart or
    /// failover does; returns how many there were (0 on SQLite, which has none).
    pub async fn terminate_connections(&self) -> i64 {
        let Cleanup::Postgres { admin_url, name } = &self.cleanup else {
            return 0;
        };
        let client = admin_client(admin_url).await;
        let row = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[name],
            )
            .await
            .expect("terminate connections");
        row.get(0)
    }
}

/// `admin_url` with its database name replaced by `name`.
pub fn postgres_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    format!("{base}/{name}{query}")
}

async fn admin_client(admin_url: &str) -> tokio_postgres::Client {
    let connected = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(admin_url, tokio_postgres::NoTls),
    )
    .await;
    match connected {
        Ok(Ok((client, connection))) => {
            tokio::spawn(connection);
            client
        }
        Ok(Err(e)) => panic!(
            "PostgreSQL is unreachable ({e}). The suite runs every test on PostgreSQL too: start \
             it, or point TEST_DATABASE_URL at a server where this user may CREATE DATABASE \
             (default postgres://postgres@127.0.0.1:5432/postgres)."
        ),
        Err(_) => panic!(
            "PostgreSQL did not answer within 5 s. Start it, or point TEST_DATABASE_URL at a \
             server where this user may CREATE DATABASE."
        ),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop cannot await; a short-lived runtime on its own thread does the cleanup.
            let done = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async {
                        if let Ok((client, connection)) =
                            tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await
                        {
                            tokio::spawn(connection);
                            let _ = client
                                .batch_execute(&format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                ))
                                .await;
                        }
                    });
                }
            });
            let _ = done.join();
        }
    }
}

/// A pool on a database a service has migrated, for a test that reads or locks its rows
/// directly; ready when this returns, closed when dropped. Open it once per test.
pub async fn open_database(
    url: &str,
    migrations: backbone_common::db::Migrations,
) -> backbone_common::db::Database {
    let args = backbone_common::config::DatabaseArgs {
        db_pool_size: 2,
        db_timeout: Duration::from_secs(5),
        db_read_connections: 2,
    };
    let database = backbone_common::db::Database::new(url, &args, migrations).expect("database");
    // `conn()` waits for readiness, which the monitor sets; once set, the monitor (which would
    // hold the pool alive for the rest of the test binary) is stopped.
    let monitor = tokio::spawn(database.clone().monitor());
    let mut ready = database.readiness();
    tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
        .await
        .expect("database ready in 10 s")
        .expect("readiness watch");
    monitor.abort();
    database
}

/// Generates one `#[tokio::test]` per backend (`NAME::sqlite`, `NAME::postgres`) from a body
/// `async fn(Backend)`. Multi-thread runtime: migrations need `block_in_place`.
#[macro_export]
macro_rules! on_both_backends {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn body($backend: $crate::Backend) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                body($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                body($crate::Backend::Postgres).await
            }
        }
    };
}

/// Installs the services' telemetry once per test binary, as `main` does (logs only errors, to
/// keep test output readable), so spans carry trace ids as in production.
pub fn init_telemetry() {
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let args = backbone_common::config::TelemetryArgs {
            log_format: backbone_common::config::LogFormat::Text,
            log_filter: "error".into(),
        };
        // Kept for the whole test binary: nothing to flush without an exporter.
        std::mem::forget(backbone_common::telemetry::init("backbone-tests", &args));
    });
}

/// Which service a test starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Svc {
    /// backbone-auth.
    Auth,
    /// backbone-catalog.
    Catalog,
    /// backbone-billing.
    Billing,
}

impl Svc {
    /// All three.
    pub const ALL: [Svc; 3] = [Svc::Auth, Svc::Catalog, Svc::Billing];

    /// The gRPC service name (also its health entry).
    pub fn grpc_name(self) -> &'static str {
        match self {
            Svc::Auth => backbone_auth::SERVICE_NAME,
            Svc::Catalog => backbone_catalog::SERVICE_NAME,
            Svc::Billing => backbone_billing::SERVICE_NAME,
        }
    }

    /// The binary name.
    pub fn binary(self) -> &'static str {
        match self {
            Svc::Auth => "backbone-auth",
            Svc::Catalog => "backbone-catalog",
            Svc::Billing => "backbone-billing",
        }
    }

    /// The environment variable prefix.
    pub fn env_prefix(self) -> &'static str {
        match self {
            Svc::Auth => "AUTH",
            Svc::Catalog => "CATALOG",
            Svc::Billing => "BILLING",
        }
    }
}

/// The shutdown future handed to a service's `run`.
/// The shutdown future handed to an in-process service.
pub type ShutdownSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A service running inside the test process on a port-0 listener.
#[derive(Debug)]
pub struct InProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), backbone_common::app::AppError>>>,
}

impl InProcess {
    /// Starts `svc` on `database_url` and returns once it listens (readiness may still be
    /// NOT_SERVING while migrations run; see [`wait_ready`]).
    pub async fn start(svc: Svc, database_url: &str) -> Self {
        match svc {
            Svc::Auth => Self::start_auth(database_url, &[]).await,
            Svc::Catalog => {
                let config = backbone_catalog::config::Config::with_database(database_url);
                Self::launch(|listener, shutdown| backbone_catalog::run(config, listener, shutdown))
                    .await
            }
            Svc::Billing => {
                let config = backbone_billing::config::Config::with_database(database_url);
                Self::launch(|listener, shutdown| backbone_billing::run(config, listener, shutdown))
                    .await
            }
        }
    }

    /// Starts the auth service with extra flags (`--refresh-reuse-grace 1s`, ...).
    pub async fn start_auth(database_url: &str, extra: &[&str]) -> Self {
        let config = auth_support::config(database_url, extra);
        Self::launch(|listener, shutdown| backbone_auth::run(config, listener, shutdown)).await
    }

    /// Binds a port-0 listener and spawns `run` on it with a shutdown the handle controls.
    pub async fn launch<F, Fut>(run: F) -> Self
    where
        F: FnOnce(tokio::net::TcpListener, ShutdownSignal) -> Fut,
        Fut: std::future::Future<Output = Result<(), backbone_common::app::AppError>>
            + Send
            + 'static,
    {
        init_telemetry();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown: ShutdownSignal = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(run(listener, shutdown));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A channel to it.
    pub async fn channel(&self) -> Channel {
        channel(self.addr).await
    }

    /// Stops it gracefully and returns how `run` ended.
    pub async fn stop(mut self) -> Result<(), backbone_common::app::AppError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("service task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A plaintext channel to `addr`, retried until it connects (10 s at most).
pub async fn channel(addr: SocketAddr) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            Ok(channel) => return channel,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The health status of `service` ("" for the whole server).
pub async fn health(channel: &Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// Waits until `service` reports `wanted` (panics after `within`).
pub async fn wait_for_health(
    channel: &Channel,
    service: &str,
    wanted: ServingStatus,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let status = health(channel, service).await;
        if matches!(status, Ok(s) if s == wanted) {
            return;
        }
        if Instant::now() > deadline {
            panic!("{service:?} did not become {wanted:?} within {within:?}; last: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `service` is SERVING (migrated, database reachable).
pub async fn wait_ready(channel: &Channel, service: &str) {
    wait_for_health(
        channel,
        service,
        ServingStatus::Serving,
        Duration::from_secs(20),
    )
    .await;
}

/// The grpcurl binary (`GRPCURL`, else `grpcurl` on the PATH); panics with directions if absent.
pub fn grpcurl() -> String {
    let path = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".to_owned());
    let found = Command::new(&path)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "grpcurl not found at {path:?}: run `make grpcurl` (or set GRPCURL)"
    );
    path
}

/// Runs grpcurl with `args`; returns whether it succeeded and its stdout and stderr.
pub fn run_grpcurl(args: &[&str]) -> (bool, String) {
    let output = Command::new(grpcurl())
        .args(args)
        .output()
        .expect("run grpcurl");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A free loopback port (bound then released; fine for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The path of a service binary in the target directory of this test build.
pub fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// The key-encryption key test processes of the auth service run with (base64 of 32 bytes).
pub const TEST_KEY_ENCRYPTION_KEY: &str = "dGVzdC1rZXktZW5jcnlwdGlvbi1rZXktMzItYnl0ZXM=";

/// A service started as a real process; its JSON log (stdout) goes to a file the test can read.
#[derive(Debug)]
pub struct Process {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The child process.
    pub child: Child,
    log: tempfile::NamedTempFile,
}

impl Process {
    /// Starts `svc` as a process listening on a free port, with extra flags.
    pub fn start(svc: Svc, database_url: &str, extra: &[&str]) -> Self {
        Self::start_with_env(svc, database_url, extra, &[])
    }

    /// Like [`Process::start`], with extra environment variables.
    pub fn start_with_env(
        svc: Svc,
        database_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        Self::start_on(svc, addr, database_url, extra, env)
    }

    /// Like [`Process::start_with_env`], listening on `addr` (a restart on the same address).
    pub fn start_on(
        svc: Svc,
        addr: SocketAddr,
        database_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let stdout = log.reopen().expect("reopen log file");
        let mut command = Command::new(binary_path(svc.binary()));
        if svc == Svc::Auth {
            // Tests may override it through `env`.
            command.env("AUTH_KEY_ENCRYPTION_KEY", TEST_KEY_ENCRYPTION_KEY);
        }
        let child = command
            .args([
                "--listen-addr",
                &addr.to_string(),
                "--database-url",
                database_url,
                "--log-format",
                "json",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn service");
        Self { addr, child, log }
    }

    /// Everything the process has logged so far (JSON lines).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Sends SIGKILL and reaps it: no shutdown, no flushing, as a crash or an OOM kill.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the process wrote to stderr (call after it exited).
    pub fn stderr(&mut self) -> String {
        use std::io::Read as _;
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }

    /// Waits for the process to exit (panics after `within`) and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("process did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a test runs the services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Mode {
    /// In the test process: `run()` on port-0 listeners.
    #[default]
    InProcess,
    /// As real processes of the built binaries, with these extra environment variables (so a
    /// test can kill one, or see each as its own OpenTelemetry `service.name`).
    Processes(Vec<(String, String)>),
}

impl Mode {
    /// The extra environment of processes.
    pub fn env(&self) -> Vec<(&str, &str)> {
        match self {
            Mode::InProcess => Vec::new(),
            Mode::Processes(env) => env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        }
    }
}

/// A service started either way.
#[derive(Debug)]
pub enum Running {
    /// In the test process.
    InProcess(InProcess),
    /// A real process.
    Process(Process),
}

impl Running {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Running::InProcess(service) => service.addr,
            Running::Process(process) => process.addr,
        }
    }

    /// Its `http://` URL, as other services' flags take it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// A channel to it.
    pub async fn channel(&self) -> Channel {
        channel(self.addr()).await
    }

    /// The process (panics for an in-process service).
    pub fn process(&mut self) -> &mut Process {
        match self {
            Running::Process(process) => process,
            Running::InProcess(_) => panic!("this service runs in the test process"),
        }
    }

    /// Stops it gracefully (SIGTERM for a process) and checks it ended cleanly.
    pub async fn stop(self) {
        match self {
            Running::InProcess(service) => service.stop().await.expect("stops cleanly"),
            Running::Process(mut process) => {
                process.terminate();
                let code =
                    tokio::task::spawn_blocking(move || process.wait_exit(Duration::from_secs(20)))
                        .await
                        .expect("wait for the process");
                assert_eq!(code, Some(0), "the process exits 0 on SIGTERM");
            }
        }
    }
}
