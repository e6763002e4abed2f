//! `make bench`: starts the bare tonic baseline and the services (release binaries) on
//! PostgreSQL and SQLite, drives load and prints one table: scenario, throughput, p50, p99,
//! ratio, target, pass/fail. Ratios are measured in the same run, alternating baseline and
//! scenario for three rounds and taking the median, since this machine is shared and noisy.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use backbone_bench::{
    echo::{EchoRequest, EchoResponse},
    grpc_frame,
};
use backbone_proto::{
    auth::{self as auth_pb, auth_service_client::AuthServiceClient},
    billing::{self as billing_pb, billing_service_client::BillingServiceClient},
    catalog::{self as catalog_pb, catalog_service_client::CatalogServiceClient},
    common::Money,
};
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use prost::Message as _;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const PASSWORD: &str = "bench-password-Quill-Harbor-42";
const KEK: &str = "YmVuY2gta2V5LWVuY3J5cHRpb24ta2V5LTMyLWJ5dGU=";

#[derive(Debug, Parser)]
#[command(name = "backbone-bench", about = "Backbone's benchmarks (make bench)")]
struct Opts {
    /// Shorter runs (2 s per measurement instead of 6 s): the whole bench in under 5 minutes.
    #[arg(long)]
    quick: bool,
    /// PostgreSQL server (any database on it; the bench creates and drops its own).
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// h2load, from nghttp2-client.
    #[arg(long, default_value = "h2load")]
    h2load: PathBuf,
    /// pgbench, from PostgreSQL.
    #[arg(long, default_value = "pgbench")]
    pgbench: PathBuf,
    /// Where the release binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Rounds of baseline-then-scenario per ratio (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Run only these sections (comma-separated: startup, kit, get, list, checkout, login);
    /// memory rows need every section. Default: all of them.
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Section>,
}

/// A part of the bench that `--only` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// Start-up to SERVING on SQLite.
    Startup,
    /// The trivial RPC through the kit.
    Kit,
    /// GetProduct, cached and not.
    Get,
    /// ListProducts, page 1 against page 500.
    List,
    /// Checkout against pgbench.
    Checkout,
    /// Login flood.
    Login,
}

impl Opts {
    fn runs(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}

/// One line of the report.
struct Row {
    scenario: String,
    throughput: String,
    p50: String,
    p99: String,
    ratio: String,
    target: String,
    pass: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = Opts::parse();
    match run(&opts).await {
        Ok(rows) => {
            print!("{}", table(&rows));
            if rows.iter().all(|row| row.pass) {
                ExitCode::SUCCESS
            } else {
                println!("\nsome targets were missed (see the table)");
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | throughput | p50 | p99 | ratio | target | result |\n|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.throughput,
            row.p50,
            row.p99,
            row.ratio,
            row.target,
            if row.pass { "pass" } else { "FAIL" }
        );
    }
    out
}

/// A started process, killed when dropped.
struct Proc {
    name: String,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn rss_kib(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .with_context(|| format!("{} is not running", self.name))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no {field} for {}", self.name))
    }
}

struct Bench<'a> {
    opts: &'a Opts,
    bins: PathBuf,
    work: PathBuf,
    measure: Duration,
}

impl Bench<'_> {
    /// A free loopback port (the kernel picks it; the process binds it right after).
    fn port(&self) -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts `binary` on a free port with `args`; its output goes to `<name>.log`.
    fn spawn(&self, name: &str, binary: &str, args: &[&str]) -> anyhow::Result<Proc> {
        self.spawn_with_env(name, binary, args, &[])
    }

    /// [`Self::spawn`] with extra environment variables.
    fn spawn_with_env(
        &self,
        name: &str,
        binary: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let addr = self.port();
        let log = std::fs::File::create(self.work.join(format!("{name}.log")))?;
        let child = Command::new(self.bins.join(binary))
            .arg("--listen-addr")
            .arg(addr.to_string())
            .args(args)
            .env("AUTH_KEY_ENCRYPTION_KEY", KEK)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {binary} (run `make release` first)"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            addr,
        })
    }

    /// `backbone-auth <args>` against `database_url`, as a one-shot command.
    fn auth_command(&self, database_url: &str, args: &[&str]) -> Command {
        let mut command = Command::new(self.bins.join("backbone-auth"));
        command
            .args(args)
            .args(["--database-url", database_url, "--log-format", "text"])
            .env("AUTH_KEY_ENCRYPTION_KEY", KEK)
            .env("RUST_LOG", "warn");
        command
    }

    /// Runs h2load against `load` and checks that every call succeeded with the expected answer.
    fn h2load(&self, load: &Load, measure: Duration) -> anyhow::Result<Measured> {
        let body = self.work.join("body.bin");
        std::fs::write(&body, &load.body)?;
        let log = self.work.join("h2load.log");
        let _ = std::fs::remove_file(&log);
        let mut command = Command::new(&self.opts.h2load);
        command
            .args([
                "-t",
                "1",
                "-c",
                &load.clients.to_string(),
                "-m",
                &load.streams.to_string(),
            ])
            .args([
                "-D",
                &measure.as_secs().max(1).to_string(),
                "--warm-up-time",
                "1",
            ])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg("-d")
            .arg(&body)
            .arg("--log-file")
            .arg(&log);
        for header in &load.headers {
            command.args(["-H", header]);
        }
        let output = command
            .arg(&load.url)
            .output()
            .context("run h2load (apt-get install nghttp2-client)")?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        ensure!(
            output.status.success(),
            "h2load failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let rps =
            number_after(&text, "req/s", true).ok_or_else(|| anyhow!("no req/s in {text}"))?;
        let requests = text
            .lines()
            .find(|line| line.starts_with("requests:"))
            .ok_or_else(|| anyhow!("no requests line in {text}"))?;
        let count = |what: &str| number_after(requests, what, true).unwrap_or(0.0);
        let (succeeded, failed, errored) = (count("succeeded"), count("failed"), count("errored"));
        ensure!(
            succeeded > 0.0 && failed == 0.0 && errored == 0.0,
            "{}: {requests}",
            load.url
        );
        // A gRPC error is HTTP 200 with an error in the trailers and no message: count the bytes.
        let data = text
            .lines()
            .find(|line| line.starts_with("traffic:"))
            .and_then(|line| line.rsplit_once(" data"))
            .and_then(|(head, _)| head.rsplit_once('('))
            .and_then(|(_, n)| n.trim_end_matches(')').parse::<f64>().ok())
            .ok_or_else(|| anyhow!("no data traffic in {text}"))?;
        #[allow(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
        let expected = load.answer_bytes as f64;
        ensure!(
            data >= succeeded * expected,
            "{}: {data} response bytes for {succeeded} calls of {expected} bytes: some answered with a gRPC error",
            load.url
        );
        let mut latencies: Vec<u64> = std::fs::read_to_string(&log)?
            .lines()
            .filter_map(|line| {
                let mut columns = line.split('\t');
                let _start = columns.next()?;
                let status = columns.next()?;
                (status == "200").then_some(())?;
                columns.next()?.trim().parse().ok()
            })
            .collect();
        ensure!(!latencies.is_empty(), "h2load logged no requests");
        latencies.sort_unstable();
        Ok(Measured {
            rps,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
        })
    }

    /// Alternates `baseline` and `scenario` for the configured rounds; the median round (by
    /// ratio of `metric`) is returned with the ratio.
    fn alternate(
        &self,
        baseline: &Load,
        scenario: &Load,
        metric: fn(&Measured) -> f64,
    ) -> anyhow::Result<(Measured, f64)> {
        let mut rounds = Vec::new();
        for _ in 0..self.opts.rounds {
            let base = self.h2load(baseline, self.measure)?;
            let measured = self.h2load(scenario, self.measure)?;
            let ratio = metric(&measured) / metric(&base);
            rounds.push((measured, ratio));
        }
        rounds.sort_by(|a, b| a.1.total_cmp(&b.1));
        let middle = rounds.len() / 2;
        Ok(rounds.swap_remove(middle))
    }
}

/// One h2load target.
struct Load {
    url: String,
    body: Vec<u8>,
    headers: Vec<String>,
    clients: u32,
    streams: u32,
    /// Bytes of DATA in one successful answer (gRPC frame header included).
    answer_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
struct Measured {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[u64], q: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a non-empty list"
    )]
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Duration::from_micros(sorted[index.min(sorted.len() - 1)])
}

/// The number just before (or after) `word` in `text`.
fn number_after(text: &str, word: &str, before: bool) -> Option<f64> {
    let at = text.find(word)?;
    let token = if before {
        text[..at].trim_end().rsplit([' ', ',']).next()?
    } else {
        text[at + word.len()..].split_whitespace().next()?
    };
    token
        .trim_matches(|c: char| !c.is_ascii_digit() && c != '.')
        .parse()
        .ok()
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?.connect_lazy())
}

/// Polls health until `service` is SERVING; returns how long it took from `since`.
async fn wait_serving(addr: SocketAddr, service: &str, since: Instant) -> anyhow::Result<Duration> {
    let deadline = since + Duration::from_secs(60);
    loop {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await
        {
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .map(|r| r.into_inner().status());
            if matches!(status, Ok(ServingStatus::Serving)) {
                return Ok(since.elapsed());
            }
        }
        ensure!(
            Instant::now() < deadline,
            "{service} at {addr} did not become SERVING"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn bearer<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

async fn login(auth: &mut AuthServiceClient<Channel>, email: &str) -> anyhow::Result<String> {
    let tokens = auth
        .login(auth_pb::LoginRequest {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
        })
        .await?
        .into_inner()
        .tokens
        .ok_or_else(|| anyhow!("login gave no tokens"))?;
    Ok(tokens.access_token)
}

async fn sign_up(auth: &mut AuthServiceClient<Channel>, email: &str) -> anyhow::Result<String> {
    auth.sign_up(auth_pb::SignUpRequest {
        email: email.to_owned(),
        password: PASSWORD.to_owned(),
        display_name: "Bench".to_owned(),
    })
    .await?;
    login(auth, email).await
}

/// Creates, drops first if it exists, one database per name on the server of `url`.
async fn fresh_databases(url: &str, names: &[&str]) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connect to PostgreSQL (make postgres starts it)")?;
    let driver = tokio::spawn(connection);
    for name in names {
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// `url` with its database replaced by `name`.
fn database_url(url: &str, name: &str) -> String {
    match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => format!("{url}/{name}"),
    }
}

fn eur(amount_minor: i64) -> Money {
    Money {
        currency_code: "EUR".into(),
        amount_minor,
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "the bench reads top to bottom, one scenario after another"
)]
async fn run(opts: &Opts) -> anyhow::Result<Vec<Row>> {
    let bins = match &opts.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("no directory"))?
            .to_owned(),
    };
    let work = std::env::temp_dir().join(format!("backbone-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let bench = Bench {
        opts,
        bins,
        work: work.clone(),
        measure: Duration::from_secs(if opts.quick { 2 } else { 6 }),
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    eprintln!(
        "bench: {cores} cores, {} s per measurement, {} rounds; logs in {}",
        bench.measure.as_secs(),
        opts.rounds,
        work.display()
    );
    let mut rows = Vec::new();

    // Start-up to SERVING on SQLite, fresh databases (migrations included), median of three.
    let startup: &[(&str, &str)] = if opts.runs(Section::Startup) {
        &[
            ("auth", "backbone.auth.v1.AuthService"),
            ("catalog", "backbone.catalog.v1.CatalogService"),
            ("billing", "backbone.billing.v1.BillingService"),
        ]
    } else {
        &[]
    };
    for &(svc, name) in startup {
        let mut times = Vec::new();
        for round in 0..3 {
            let db = format!(
                "sqlite://{}",
                work.join(format!("{svc}-{round}.db")).display()
            );
            let started = Instant::now();
            let proc = bench.spawn(svc, &format!("backbone-{svc}"), &["--database-url", &db])?;
            times.push(wait_serving(proc.addr, name, started).await?);
        }
        times.sort();
        let median = times[1];
        rows.push(Row {
            scenario: format!("start-up to SERVING, {svc}, SQLite"),
            throughput: "-".into(),
            p50: ms(median),
            p99: "-".into(),
            ratio: "-".into(),
            target: "≤ 300 ms".into(),
            pass: median <= Duration::from_millis(300),
        });
    }

    // The stack on PostgreSQL, one database per service.
    eprintln!("bench: preparing PostgreSQL databases");
    fresh_databases(
        &opts.database_url,
        &[
            "bench_auth",
            "bench_catalog",
            "bench_billing",
            "bench_pgbench",
            "bench_floor",
        ],
    )
    .await?;
    let url = |name: &str| database_url(&opts.database_url, name);
    let auth_db = url("bench_auth");
    // An administrator and billing's service account, made with the binary's own commands.
    let admin_email = "admin@bench.test";
    let mut create_admin = bench
        .auth_command(&auth_db, &["create-admin", "--email", admin_email])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    if let Some(stdin) = create_admin.stdin.as_mut() {
        use std::io::Write as _;
        writeln!(stdin, "{PASSWORD}")?;
    }
    ensure!(create_admin.wait()?.success(), "create-admin failed");
    let secret_file = work.join("billing-secret").display().to_string();
    let account = bench
        .auth_command(
            &auth_db,
            &[
                "create-service-account",
                "--display-name",
                "billing",
                "--secret-file",
                &secret_file,
            ],
        )
        .output()?;
    ensure!(account.status.success(), "create-service-account failed");
    let client_id = String::from_utf8(account.stdout)?.trim().to_owned();

    // Every call of the bench comes from 127.0.0.1: the per-address login limit would stop the
    // login flood, as it stops one address sweeping accounts.
    let auth = bench.spawn(
        "auth",
        "backbone-auth",
        &[
            "--database-url",
            &auth_db,
            "--login-attempts-per-address",
            "1000000000",
        ],
    )?;
    let auth_url = format!("http://{}", auth.addr);
    let catalog_db = url("bench_catalog");
    let catalog = bench.spawn(
        "catalog",
        "backbone-catalog",
        &["--database-url", &catalog_db, "--auth-url", &auth_url],
    )?;
    let catalog_url = format!("http://{}", catalog.addr);
    // The same catalog without its product cache: every GetProduct reads PostgreSQL.
    let uncached = bench.spawn(
        "catalog-uncached",
        "backbone-catalog",
        &[
            "--database-url",
            &catalog_db,
            "--auth-url",
            &auth_url,
            "--product-cache-capacity",
            "0",
            "--product-cache-ttl",
            "0s",
        ],
    )?;
    let billing_db = url("bench_billing");
    let billing = bench.spawn(
        "billing",
        "backbone-billing",
        &[
            "--database-url",
            &billing_db,
            "--auth-url",
            &auth_url,
            "--catalog-url",
            &catalog_url,
            "--service-client-id",
            &client_id,
            "--service-client-secret-file",
            &secret_file,
        ],
    )?;
    let bare = bench.spawn("echo-bare", "bench-echo", &["--mode", "bare"])?;
    let kit = bench.spawn(
        "echo-kit",
        "bench-echo",
        &["--mode", "kit", "--auth-url", &auth_url],
    )?;
    // The same kit exporting every call's span over OTLP to a collector in this process.
    let collector = SpanSink::start().await?;
    let kit_exporting = bench.spawn_with_env(
        "echo-kit-otlp",
        "bench-echo",
        &["--mode", "kit", "--auth-url", &auth_url],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint),
            ("OTEL_METRICS_EXPORTER", "none"),
        ],
    )?;
    let now = Instant::now();
    for (proc, health) in [
        (&auth, "backbone.auth.v1.AuthService"),
        (&catalog, "backbone.catalog.v1.CatalogService"),
        (&uncached, "backbone.catalog.v1.CatalogService"),
        (&billing, "backbone.billing.v1.BillingService"),
        (&kit, "backbone.bench.v1.EchoService"),
        (&kit_exporting, "backbone.bench.v1.EchoService"),
    ] {
        wait_serving(proc.addr, health, now).await?;
    }
    // tonic alone has no health service: it is up once it accepts connections.
    while tokio::net::TcpStream::connect(bare.addr).await.is_err() {
        ensure!(
            now.elapsed() < Duration::from_secs(60),
            "the bare echo server did not start"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (auth_addr, catalog_addr, uncached_addr, billing_addr) =
        (auth.addr, catalog.addr, uncached.addr, billing.addr);
    let (bare_addr, kit_addr) = (bare.addr, kit.addr);
    // Idle memory: after start-up, before any load.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut idle = Vec::new();
    for proc in [&auth, &catalog, &billing] {
        idle.push((proc.name.clone(), proc.rss_kib("VmRSS:")?));
    }

    let mut auth_client = AuthServiceClient::new(channel(auth_addr).await?);
    let admin = login(&mut auth_client, admin_email).await?;
    let customer = sign_up(&mut auth_client, "customer@bench.test").await?;
    let mut catalog_client = CatalogServiceClient::new(channel(catalog_addr).await?);
    // The product GetProduct reads, then one per shopper for checkout (as pgbench's 8 clients
    // spread over 8 branches, eight customers buy different things).
    let mut products = Vec::new();
    for n in 0..9 {
        products.push(stocked_product(&mut catalog_client, &admin, n).await?);
    }
    let product = products.remove(0);

    // Baseline and the trivial RPC through the kit.
    let echo = EchoRequest {
        message: "ping".into(),
    };
    let echo_answer = 5 + EchoResponse {
        message: echo.message.clone(),
    }
    .encoded_len();
    let echo_load = |addr: SocketAddr, headers: Vec<String>, clients, streams| Load {
        url: format!("http://{addr}/backbone.bench.v1.EchoService/Echo"),
        body: grpc_frame(&echo),
        headers,
        clients,
        streams,
        answer_bytes: echo_answer,
    };
    let auth_header = |token: &str| vec![format!("authorization: Bearer {token}")];
    let (clients, streams) = (4, 16);
    // The baseline gets the very request the scenarios get, bearer header included (the bare
    // server ignores it): the ratio then measures the server's layers, not the cost every HTTP/2
    // server pays to receive that header. h2load, like nghttp2 clients, never indexes an
    // `authorization` header in HPACK, so each call carries and Huffman-decodes the whole token:
    // about 6% of the kit's CPU in a perf profile, paid by the bare server as much.
    let baseline = echo_load(bare_addr, auth_header(&customer), clients, streams);
    if opts.runs(Section::Kit) {
        eprintln!("bench: trivial RPC");
        let (kit_run, ratio) = bench.alternate(
            &baseline,
            &echo_load(kit_addr, auth_header(&customer), clients, streams),
            |m| m.rps,
        )?;
        rows.push(throughput_row(
            "trivial RPC through the full kit (token, tracing, limits)",
            kit_run,
            ratio,
            0.90,
        ));
        let (exporting, ratio) = bench.alternate(
            &baseline,
            &echo_load(kit_exporting.addr, auth_header(&customer), clients, streams),
            |m| m.rps,
        )?;
        let spans = collector.spans();
        ensure!(spans > 0, "the kit exported no spans over OTLP");
        rows.push(Row {
            target: "(OTLP export off above)".into(),
            pass: true,
            ..throughput_row(
                &format!("reference: the same with OTLP trace export on ({spans} spans received)"),
                exporting,
                ratio,
                0.0,
            )
        });
    }

    // GetProduct, cached, with a bearer token.
    let get = catalog_pb::GetProductRequest {
        product_id: product.id.clone(),
    };
    let get_answer = 5 + catalog_client
        .get_product(get.clone())
        .await?
        .into_inner()
        .encoded_len();
    let get_load = |addr: SocketAddr, token: &str, clients, streams| Load {
        url: format!("http://{addr}/backbone.catalog.v1.CatalogService/GetProduct"),
        body: grpc_frame(&get),
        headers: auth_header(token),
        clients,
        streams,
        answer_bytes: get_answer,
    };
    // The baseline's rate in the uncached round, for the PostgreSQL reference row.
    let mut uncached_reference = None;
    if opts.runs(Section::Get) {
        eprintln!("bench: GetProduct");
        let (cached, ratio) = bench.alternate(
            &baseline,
            &get_load(catalog_addr, &customer, clients, streams),
            |m| m.rps,
        )?;
        rows.push(throughput_row(
            "GetProduct, cached, bearer token",
            cached,
            ratio,
            0.80,
        ));
        let single = echo_load(bare_addr, auth_header(&customer), 1, 1);
        let (one, ratio) =
            bench.alternate(&single, &get_load(catalog_addr, &customer, 1, 1), |m| {
                m.p50.as_secs_f64()
            })?;
        rows.push(latency_row(
            "GetProduct, cached, 1 in flight: p50 vs baseline p50",
            one,
            ratio,
            1.2,
        ));
        let (uncached_run, ratio) = bench.alternate(
            &baseline,
            &get_load(uncached_addr, &customer, clients, streams),
            |m| m.rps,
        )?;
        rows.push(throughput_row(
            "GetProduct, not cached, PostgreSQL",
            uncached_run,
            ratio,
            0.30,
        ));
        uncached_reference = Some(uncached_run.rps / ratio);
    }

    // ListProducts over 100,000 products: page 1 against page 500.
    if opts.runs(Section::List) {
        eprintln!("bench: ListProducts (loading 100,000 products)");
        seed_products(&url("bench_catalog"), 100_000).await?;
        let first_page = catalog_pb::ListProductsRequest {
            page_size: 20,
            ..Default::default()
        };
        let mut page = first_page.clone();
        for _ in 1..500 {
            let answer = catalog_client
                .list_products(page.clone())
                .await?
                .into_inner();
            ensure!(!answer.next_page_token.is_empty(), "fewer than 500 pages");
            page.page_token = answer.next_page_token;
        }
        let list_load = |request: &catalog_pb::ListProductsRequest, answer: usize| Load {
            url: format!("http://{catalog_addr}/backbone.catalog.v1.CatalogService/ListProducts"),
            body: grpc_frame(request),
            headers: Vec::new(),
            clients: 1,
            streams: 1,
            answer_bytes: answer,
        };
        let first_answer = 5 + catalog_client
            .list_products(first_page.clone())
            .await?
            .into_inner()
            .encoded_len();
        let deep_answer = 5 + catalog_client
            .list_products(page.clone())
            .await?
            .into_inner()
            .encoded_len();
        let (deep, ratio) = bench.alternate(
            &list_load(&first_page, first_answer),
            &list_load(&page, deep_answer),
            |m| m.p50.as_secs_f64(),
        )?;
        rows.push(latency_row(
            "ListProducts page 500 vs page 1, 100,000 products (p50)",
            deep,
            ratio,
            1.2,
        ));
    }

    let shopper_emails: Vec<String> = (0..8).map(|n| format!("shopper{n}@bench.test")).collect();
    let mut shoppers = Vec::new();
    for email in &shopper_emails {
        shoppers.push(sign_up(&mut auth_client, email).await?);
    }

    // Checkout on PostgreSQL, 8 customers, against pgbench tpcb-like with 8 clients.
    if opts.runs(Section::Checkout) {
        eprintln!("bench: checkout vs pgbench (initialising pgbench at scale 8)");
        let pgbench_db = url("bench_pgbench");
        let init = pgbench(opts)
            .args(["-i", "-q", "-s", "8", &pgbench_db])
            .output()
            .context("run pgbench")?;
        ensure!(
            init.status.success(),
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let floor_db = url("bench_floor");
        let floor_script = checkout_floor(&floor_db).await?;
        // -n: no vacuum of pgbench's own tables, which this database does not have.
        let floor = ["-n", "-f", floor_script.to_str().unwrap_or_default()];
        let mut rounds = Vec::new();
        let mut floors = Vec::new();
        for _ in 0..opts.rounds {
            let tps = pgbench_tps(opts, &pgbench_db, bench.measure, &["-b", "tpcb-like"])?;
            let checkouts =
                checkout_rate(billing_addr, &shoppers, &products, bench.measure).await?;
            rounds.push((checkouts, checkouts.rps / tps, tps));
            let floor_tps = pgbench_tps(opts, &floor_db, bench.measure, &floor)?;
            floors.push((floor_tps, floor_tps / tps));
        }
        let _ = std::fs::remove_file(&floor_script);
        rounds.sort_by(|a, b| a.1.total_cmp(&b.1));
        floors.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (checkouts, ratio, tps) = rounds[rounds.len() / 2];
        let (floor_tps, floor_ratio) = floors[floors.len() / 2];
        // What PostgreSQL alone answers in point reads (pgbench -S, 8 clients, prepared): the
        // ceiling of any uncached read path on this machine, next to the baseline it is held to.
        if let Some(reference) = uncached_reference {
            let select_only =
                pgbench_tps(opts, &pgbench_db, bench.measure, &["-b", "select-only"])?;
            let ceiling = select_only / reference;
            rows.push(reference_row(
                "PostgreSQL point reads alone (pgbench select-only, 8 clients)",
                format!("{select_only:.0}/s"),
                format!("{ceiling:.2}"),
                "the uncached read",
            ));
        }
        rows.push(Row {
            scenario: format!(
                "checkout, PostgreSQL, 8 customers (pgbench tpcb-like 8 clients: {tps:.0} tps)"
            ),
            throughput: format!("{:.0}/s", checkouts.rps),
            p50: ms(checkouts.p50),
            p99: ms(checkouts.p99),
            ratio: format!("{ratio:.2} × pgbench"),
            target: "≥ 0.20".into(),
            pass: ratio >= 0.20,
        });
        rows.push(reference_row(
            "the leanest checkout's SQL alone (6 statements, 5 of them writes in their own \
             transactions, on billing's and catalog's schemas, pgbench 8 clients, no services)",
            format!("{floor_tps:.0}/s"),
            format!("{floor_ratio:.2} × pgbench"),
            "checkout",
        ));
    }

    // Login (argon2id), each round: logins per second while a flood has the machine to itself,
    // the password checks alone that bound them, then GetProduct's p99 with and without a flood
    // beside it.
    if opts.runs(Section::Login) {
        eprintln!("bench: login flood");
        let steady = get_load(catalog_addr, &customer, 1, 1);
        // A flood is more callers than the hashing pool has workers: each login also spends
        // round trips and a commit in the database, and with two callers per worker the pool
        // sat idle in those gaps (h2load against auth: 2 to 10% fewer logins per second with
        // 4 callers than with 8).
        let callers = 4 * cores;
        let mut rounds = Vec::new();
        for _ in 0..opts.rounds {
            let flood = login_flood(auth_addr, &shopper_emails, callers);
            tokio::time::sleep(bench.measure).await;
            let logins = flood.stop().await?;
            // The ceiling, in the same round: the same password checks with nothing else,
            // through auth's own hashing pool (one worker per core, same parameters), in this
            // process while the services idle.
            let checks = password_checks_alone(cores, bench.measure).await?;
            let quiet = bench.h2load(&steady, bench.measure)?;
            let flood = login_flood(auth_addr, &shopper_emails, callers);
            let loaded = bench.h2load(&steady, bench.measure)?;
            flood.stop().await?;
            rounds.push(LoginRound {
                logins,
                checks,
                loaded,
                p99_ratio: loaded.p99.as_secs_f64() / quiet.p99.as_secs_f64(),
            });
        }
        let median = |value: fn(&LoginRound) -> f64| {
            let mut values: Vec<f64> = rounds.iter().map(value).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let (logins, checks) = (median(|r| r.logins), median(|r| r.checks));
        let of_ceiling = median(|r| r.logins / r.checks);
        rounds.sort_by(|a, b| a.p99_ratio.total_cmp(&b.p99_ratio));
        let LoginRound {
            loaded, p99_ratio, ..
        } = rounds[rounds.len() / 2];
        #[allow(clippy::cast_precision_loss, reason = "a core count")]
        let (per_core, ceiling) = (logins / cores as f64, checks / cores as f64);
        rows.push(reference_row(
            &format!(
                "Argon2id password checks alone (auth's hashing pool, {cores} workers, no RPC or database)"
            ),
            format!("{checks:.1}/s"),
            format!("{ceiling:.1}/s per core"),
            "login",
        ));
        rows.push(Row {
            scenario: format!(
                "login, argon2id (OWASP: {}), {cores} cores",
                backbone_auth::domain::password::OwaspParams::default()
            ),
            throughput: format!("{logins:.1}/s"),
            p50: "-".into(),
            p99: "-".into(),
            ratio: format!("{per_core:.1}/s per core ({of_ceiling:.2} × the ceiling)"),
            target: "≥ 40/s per core".into(),
            pass: per_core >= 40.0,
        });
        rows.push(latency_row(
            "GetProduct p99 during the login flood vs without",
            loaded,
            p99_ratio,
            1.5,
        ));
    }

    // Memory: resident set idle (after start-up) and at peak (the kernel's high-water mark),
    // which only means something after every section.
    let all_sections = opts.only.is_empty();
    for (proc, (name, idle_kib)) in [&auth, &catalog, &billing]
        .into_iter()
        .zip(idle)
        .filter(|_| all_sections)
    {
        let peak_kib = proc.rss_kib("VmHWM:")?;
        #[allow(clippy::cast_precision_loss, reason = "kibibytes")]
        let (idle_mb, peak_mb) = (idle_kib as f64 / 1024.0, peak_kib as f64 / 1024.0);
        rows.push(Row {
            scenario: format!("memory, {name}: RSS idle / peak"),
            throughput: "-".into(),
            p50: format!("{idle_mb:.1} MiB"),
            p99: format!("{peak_mb:.1} MiB"),
            ratio: "-".into(),
            target: "≤ 30 MiB idle, ≤ 150 MiB peak".into(),
            pass: idle_mb <= 30.0 && peak_mb <= 150.0,
        });
    }
    drop((uncached, bare, kit));
    let _ = std::fs::remove_dir_all(&work);
    Ok(rows)
}

/// A reference measurement with no target of its own: the ceiling `of` a scenario.
fn reference_row(scenario: &str, throughput: String, ratio: String, of: &str) -> Row {
    Row {
        scenario: format!("reference: {scenario}"),
        throughput,
        p50: "-".into(),
        p99: "-".into(),
        ratio,
        target: format!("(ceiling for {of})"),
        pass: true,
    }
}

/// A throughput ratio, which must reach `target`.
fn throughput_row(scenario: &str, run: Measured, ratio: f64, target: f64) -> Row {
    ratio_row(scenario, run, ratio, target, true)
}

/// A latency ratio, which must stay within `target`.
fn latency_row(scenario: &str, run: Measured, ratio: f64, target: f64) -> Row {
    ratio_row(scenario, run, ratio, target, false)
}

fn ratio_row(scenario: &str, run: Measured, ratio: f64, target: f64, at_least: bool) -> Row {
    Row {
        scenario: scenario.into(),
        throughput: format!("{:.0}/s", run.rps),
        p50: ms(run.p50),
        p99: ms(run.p99),
        ratio: format!("{ratio:.2}"),
        target: format!("{} {target:.2}", if at_least { "≥" } else { "≤" }),
        pass: if at_least {
            ratio >= target
        } else {
            ratio <= target
        },
    }
}

/// Creates product `n` as the admin, with a million units in stock.
async fn stocked_product(
    catalog: &mut CatalogServiceClient<Channel>,
    admin: &str,
    n: usize,
) -> anyhow::Result<catalog_pb::Product> {
    let product = catalog
        .create_product(bearer(
            catalog_pb::CreateProductRequest {
                product: Some(catalog_pb::Product {
                    sku: format!("BENCH-{n}"),
                    title: format!("Benchmark product {n}"),
                    description: "Read and bought over and over by the benchmark".into(),
                    price: Some(eur(1999)),
                    status: catalog_pb::ProductStatus::Active as i32,
                    ..Default::default()
                }),
            },
            admin,
        )?)
        .await?
        .into_inner()
        .product
        .ok_or_else(|| anyhow!("no product"))?;
    catalog
        .adjust_stock(bearer(
            catalog_pb::AdjustStockRequest {
                product_id: product.id.clone(),
                delta: 1_000_000,
                reason: "benchmark".into(),
                request_id: String::new(),
            },
            admin,
        )?)
        .await?;
    Ok(product)
}

/// Adds `count` active products straight into catalog's tables (the API would take minutes).
async fn seed_products(url: &str, count: i64) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .execute(
            "INSERT INTO products (id, sku, title, description, price_minor, currency_code, status, created_at, updated_at, search_text)
             SELECT gen_random_uuid()::text, 'SEED-' || n, 'Seeded product ' || n, '', 100 + n % 5000, 'EUR', 'ACTIVE',
                    now() - make_interval(secs => n), now(), 'seeded product ' || n
             FROM generate_series(1, $1::bigint) AS n",
            &[&count],
        )
        .await?;
    client.batch_execute("ANALYZE products").await?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// pgbench's tps for `script` (`-b tpcb-like`, `-b select-only`, or `-n -f file`) with 8 clients
/// and prepared statements, run for `measure`.
fn pgbench_tps(opts: &Opts, db: &str, measure: Duration, script: &[&str]) -> anyhow::Result<f64> {
    let output = pgbench(opts)
        .args(["-c", "8", "-j", "2", "-M", "prepared"])
        .args(script)
        .args(["-T", &measure.as_secs().to_string(), db])
        .output()
        .context("run pgbench")?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find(|line| line.starts_with("tps = "))
        .and_then(|line| {
            line["tps = ".len()..]
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| anyhow!("no tps in {text}"))
}

/// pgbench, connecting as the services do: without TLS, unless the database URL asks for it
/// (`sslmode=...` in the URL wins over `PGSSLMODE`). libpq's default, `prefer`, encrypts every
/// connection to a server with TLS on (Debian's PostgreSQL is), and the services' connections
/// are plain: on this VM TLS cost pgbench a quarter of its tpcb-like transactions (2,750 against
/// 3,600 a second) and nearly half of its point reads (31,000 against 54,000).
fn pgbench(opts: &Opts) -> Command {
    let mut command = Command::new(&opts.pgbench);
    command.env("PGSSLMODE", "disable");
    command
}

/// The pgbench script of the leanest checkout (`sql/checkout_floor.sql`), written to a temporary
/// file, after loading `db` with billing's and catalog's PostgreSQL migrations (schemas
/// `billing` and `catalog`) and eight products with ample stock, one per pgbench client.
async fn checkout_floor(db: &str) -> anyhow::Result<PathBuf> {
    let (client, connection) = tokio_postgres::connect(db, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let services = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../services");
    for service in ["catalog", "billing"] {
        let dir = services.join(service).join("migrations/postgres");
        let mut migrations: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("read {}", dir.display()))?
            .map(|entry| entry.map(|e| e.path().join("up.sql")))
            .collect::<Result<_, _>>()?;
        migrations.sort();
        let mut sql = format!("CREATE SCHEMA {service}; SET search_path = {service};\n");
        for migration in migrations {
            sql.push_str(&std::fs::read_to_string(&migration)?);
            sql.push('\n');
        }
        client
            .batch_execute(&sql)
            .await
            .with_context(|| format!("{service}'s migrations"))?;
    }
    client
        .batch_execute(
            "SET search_path = public;
             INSERT INTO catalog.products
                 (id, sku, title, price_minor, currency_code, status, created_at, updated_at)
             SELECT 'p' || n, 'sku' || n, 'Product ' || n, 1999, 'EUR', 'ACTIVE', now(), now()
             FROM generate_series(1, 8) n;
             INSERT INTO catalog.stock (product_id, on_hand, reserved)
             SELECT 'p' || n, 1000000000000, 0 FROM generate_series(1, 8) n;",
        )
        .await?;
    drop(client);
    let _ = driver.await;
    let script = std::env::temp_dir().join(format!("checkout-floor-{}.sql", std::process::id()));
    std::fs::write(&script, include_str!("../sql/checkout_floor.sql"))?;
    Ok(script)
}

/// Eight customers each filling a cart with one item and checking out, over and over, for
/// `measure`; checkouts per second and their latency (add to cart plus checkout).
async fn checkout_rate(
    billing: SocketAddr,
    customers: &[String],
    products: &[catalog_pb::Product],
    measure: Duration,
) -> anyhow::Result<Measured> {
    let deadline = Instant::now() + measure;
    let mut tasks = Vec::new();
    for (token, product) in customers.iter().zip(products) {
        let (token, product_id) = (token.clone(), product.id.clone());
        let mut client = BillingServiceClient::new(channel(billing).await?);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                client
                    .add_cart_item(bearer(
                        billing_pb::AddCartItemRequest {
                            request_id: uuid::Uuid::now_v7().to_string(),
                            product_id: product_id.clone(),
                            quantity: 1,
                        },
                        &token,
                    )?)
                    .await?;
                let order = client
                    .checkout(bearer(
                        billing_pb::CheckoutRequest {
                            request_id: uuid::Uuid::now_v7().to_string(),
                            payment_method_token: "tok_visa".into(),
                            items: Vec::new(),
                        },
                        &token,
                    )?)
                    .await?
                    .into_inner()
                    .order
                    .ok_or_else(|| anyhow!("checkout without an order"))?;
                ensure!(
                    order.status == billing_pb::OrderStatus::Paid as i32,
                    "checkout not paid: {order:?}"
                );
                latencies.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            anyhow::Ok(latencies)
        }));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().max(measure);
    ensure!(!latencies.is_empty(), "no checkout finished");
    latencies.sort_unstable();
    #[allow(clippy::cast_precision_loss, reason = "a count")]
    let rps = latencies.len() as f64 / elapsed.as_secs_f64();
    Ok(Measured {
        rps,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    })
}

/// Password checks per second with auth's hashing pool and its default parameters, `cores` workers
/// kept busy for `measure`: what logins per second cannot exceed on this machine.
async fn password_checks_alone(cores: usize, measure: Duration) -> anyhow::Result<f64> {
    use backbone_auth::domain::password::{HashPool, OwaspParams, PasswordHasher};
    let hasher = PasswordHasher::new(
        HashPool::new(cores, cores)?,
        OwaspParams::default().params(),
    );
    let phc = hasher
        .hash(PASSWORD.to_owned())
        .await
        .map_err(|_| anyhow!("the hashing pool refused"))?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let checkers: Vec<_> = (0..cores)
        .map(|_| {
            let (hasher, phc, done) = (hasher.clone(), phc.clone(), done.clone());
            tokio::spawn(async move {
                while started.elapsed() < measure {
                    let checked = hasher
                        .check(PASSWORD.to_owned(), Some(phc.clone()))
                        .await
                        .map_err(|_| anyhow!("the hashing pool refused"))?;
                    ensure!(checked.matches, "the password did not match its own hash");
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for checker in checkers {
        checker.await??;
    }
    #[allow(clippy::cast_precision_loss, reason = "a count")]
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// An OTLP trace collector that counts the spans it receives and keeps nothing else.
struct SpanSink {
    endpoint: String,
    spans: Arc<AtomicU64>,
    _server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Counter(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Counter {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum::<u64>();
        self.0.fetch_add(spans, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl SpanSink {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let spans = Arc::new(AtomicU64::new(0));
        let service = TraceServiceServer::new(Counter(spans.clone()));
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        Ok(Self {
            endpoint,
            spans,
            _server: server,
        })
    }

    fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }
}

/// One round of the login section: logins and password checks alone per second, and GetProduct
/// beside a flood with its p99 over the same load's without.
#[derive(Clone, Copy)]
struct LoginRound {
    logins: f64,
    checks: f64,
    loaded: Measured,
    p99_ratio: f64,
}

/// Logins running in the background until stopped.
struct Flood {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// `concurrency` callers logging in over and over, each as its own account of `emails`.
fn login_flood(auth: SocketAddr, emails: &[String], concurrency: usize) -> Flood {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks = (0..concurrency)
        .map(|n| {
            let (stop, done) = (stop.clone(), done.clone());
            let email = emails[n % emails.len()].clone();
            tokio::spawn(async move {
                let mut client = AuthServiceClient::new(channel(auth).await?);
                while !stop.load(Ordering::Relaxed) {
                    login(&mut client, &email).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    Flood {
        stop,
        done,
        started: Instant::now(),
        tasks,
    }
}

impl Flood {
    /// Stops the flood; logins per second while it ran.
    async fn stop(self) -> anyhow::Result<f64> {
        self.stop.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        #[allow(clippy::cast_precision_loss, reason = "a count")]
        let rate = self.done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64();
        for task in self.tasks {
            task.await??;
        }
        if rate == 0.0 {
            bail!("no login finished");
        }
        Ok(rate)
    }
}
