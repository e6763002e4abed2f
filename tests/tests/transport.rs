//! The transport kit as a platform team meets it, with real processes: TLS on the gRPC port,
//! certificates rotated in place without a restart (and a broken rotation ignored), mutual TLS
//! from catalog to auth, and the plaintext admin port: gRPC health for kubelet probes and
//! Prometheus metrics (RED per RPC, pool and worker gauges), which also go out over OTLP; and
//! per-request balancing over every address of a name, resolved through a real DNS server.

#![allow(
    clippy::expect_used,
    reason = "end-to-end tests: a failed expectation is a failed test, with its message"
)]

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use backbone_common::{
    app::PeerChannels,
    client::{self, Channel as KitChannel},
    config::{PeerArgs, PeerBalancing, TlsArgs},
    tls::ClientTls,
};
use backbone_proto::{auth as auth_pb, catalog as pb};
use backbone_tests::{
    Backend, Process, Svc, TestDb,
    auth_support::{PASSWORD, bearer, customer},
    catalog_support::{eur, product},
    channel,
    dns_support::DnsServer,
    free_port,
    otlp_support::OtlpReceiver,
    pki_support::{Ca, write},
    run_grpcurl, wait_ready,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A kit client for `https://localhost:<port>` trusting `ca`, presenting `identity` if given.
fn tls_channel(port: u16, ca: &Path, identity: Option<(&Path, &Path)>) -> KitChannel {
    let identity = TlsArgs {
        tls_cert_file: identity.map(|(cert, _)| cert.to_owned()),
        tls_key_file: identity.map(|(_, key)| key.to_owned()),
        tls_reload_interval: Duration::ZERO,
        ..TlsArgs::default()
    };
    let peers = PeerArgs {
        tls_ca_file: Some(ca.to_owned()),
        ..PeerArgs::default()
    };
    let tls = ClientTls::from_args(&identity, &peers)
        .expect("client TLS files load")
        .expect("a CA file means TLS");
    client::channel(&format!("https://localhost:{port}"), Some(&tls)).expect("https channel")
}

/// The health of `service` over `channel`.
async fn health_of(channel: KitChannel, service: &str) -> Result<ServingStatus, tonic::Status> {
    Ok(HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?
        .into_inner()
        .status())
}

/// Polls until `check` holds on a fresh connection each time (panics after 20 s).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match check().await {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not within 20 s; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn admin_flag(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_rotation_and_mutual_tls_between_catalog_and_auth() {
    let pki = tempfile::tempdir().expect("temp dir");
    let dir = pki.path();
    let (first_ca, next_ca) = (Ca::new("Backbone test CA 1"), Ca::new("Backbone test CA 2"));
    // What each pod trusts during a CA rotation: both authorities.
    let bundle = write(
        dir,
        "bundle.pem",
        &format!("{}{}", first_ca.pem, next_ca.pem),
    );
    let first_only = write(dir, "first-ca.pem", &first_ca.pem);
    let next_only = write(dir, "next-ca.pem", &next_ca.pem);
    let auth_leaf = first_ca.leaf("auth");
    let auth_cert = write(dir, "auth.crt", &auth_leaf.cert);
    let auth_key = write(dir, "auth.key", &auth_leaf.key);
    let catalog_leaf = first_ca.leaf("catalog");
    let catalog_cert = write(dir, "catalog.crt", &catalog_leaf.cert);
    let catalog_key = write(dir, "catalog.key", &catalog_leaf.key);
    let client_leaf = first_ca.leaf("test client");
    let client_cert = write(dir, "client.crt", &client_leaf.cert);
    let client_key = write(dir, "client.key", &client_leaf.key);
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();

    let (auth_db, catalog_db) = (
        TestDb::new(Backend::Sqlite).await,
        TestDb::new(Backend::Sqlite).await,
    );
    let auth_admin = free_port();
    let auth = Process::start(
        Svc::Auth,
        &auth_db.url,
        &[
            "--tls-cert-file",
            &path(&auth_cert),
            "--tls-key-file",
            &path(&auth_key),
            "--tls-client-ca-file",
            &path(&bundle),
            "--tls-reload-interval",
            "200ms",
            "--admin-addr",
            &admin_flag(auth_admin),
        ],
    );
    let auth_port = auth.addr.port();
    let catalog = Process::start(
        Svc::Catalog,
        &catalog_db.url,
        &[
            "--tls-cert-file",
            &path(&catalog_cert),
            "--tls-key-file",
            &path(&catalog_key),
            "--tls-ca-file",
            &path(&bundle),
            "--auth-url",
            &format!("https://localhost:{auth_port}"),
        ],
    );
    let catalog_port = catalog.addr.port();

    // Kubelet probes the admin port in plaintext while the gRPC port speaks only TLS.
    let admin = channel(format!("127.0.0.1:{auth_admin}").parse().expect("addr")).await;
    wait_ready(&admin, Svc::Auth.grpc_name()).await;
    let mut auth_client = auth_pb::auth_service_client::AuthServiceClient::new(tls_channel(
        auth_port,
        &first_only,
        Some((&client_cert, &client_key)),
    ));
    auth_client
        .sign_up(auth_pb::SignUpRequest {
            email: "tls@example.com".into(),
            password: PASSWORD.into(),
            display_name: "TLS".into(),
        })
        .await
        .expect("sign up over mutual TLS");
    let token = auth_client
        .login(auth_pb::LoginRequest {
            email: "tls@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login over mutual TLS")
        .into_inner()
        .tokens
        .expect("tokens")
        .access_token;

    // grpcurl, as a developer would: TLS with the CA and a client certificate works; without a
    // client certificate, or in plaintext, auth refuses the connection.
    let target = format!("localhost:{auth_port}");
    let (ok, said) = run_grpcurl(&[
        "-cacert",
        &path(&first_only),
        "-cert",
        &path(&client_cert),
        "-key",
        &path(&client_key),
        &target,
        "list",
    ]);
    assert!(
        ok && said.contains("backbone.auth.v1.AuthService"),
        "{said}"
    );
    let (ok, said) = run_grpcurl(&["-cacert", &path(&first_only), &target, "list"]);
    assert!(
        !ok,
        "mutual TLS lets a client without a certificate in: {said}"
    );
    let (ok, said) = run_grpcurl(&["-plaintext", &target, "list"]);
    assert!(!ok, "plaintext reached a TLS port: {said}");
    let stranger = Ca::new("Somebody else").leaf("stranger");
    let (stranger_cert, stranger_key) = (
        write(dir, "stranger.crt", &stranger.cert),
        write(dir, "stranger.key", &stranger.key),
    );
    let refused = health_of(
        tls_channel(
            auth_port,
            &first_only,
            Some((&stranger_cert, &stranger_key)),
        ),
        "",
    )
    .await;
    // Refused in the handshake; TLS 1.3 clients see it as the connection closing.
    assert!(refused.is_err(), "a certificate from another CA got in");

    // Catalog verifies the customer's token with keys it fetched from auth over mutual TLS:
    // PERMISSION_DENIED (not UNAUTHENTICATED or UNAVAILABLE) means it read and checked it.
    let mut catalog_client = pb::catalog_service_client::CatalogServiceClient::new(tls_channel(
        catalog_port,
        &first_only,
        None,
    ));
    eventually("catalog ready over TLS", || {
        let channel = tls_channel(catalog_port, &first_only, None);
        async move {
            match health_of(channel, Svc::Catalog.grpc_name()).await {
                Ok(ServingStatus::Serving) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let denied = catalog_client
        .create_product(bearer(
            pb::CreateProductRequest {
                product: Some(product("TLS-1", "Over TLS", eur(100))),
            },
            &token,
        ))
        .await
        .expect_err("a customer cannot create products");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let forged = catalog_client
        .list_products(bearer(pb::ListProductsRequest::default(), "not.a.token"))
        .await
        .expect_err("forged token");
    assert_eq!(forged.code(), Code::Unauthenticated, "{forged:?}");

    // A broken rotation (a key that does not match the certificate) is ignored: new
    // connections still get the last good certificate.
    let unrelated = next_ca.leaf("unrelated");
    std::fs::write(&auth_key, &unrelated.key).expect("write the wrong key");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let still = health_of(
        tls_channel(auth_port, &first_only, Some((&client_cert, &client_key))),
        "",
    )
    .await
    .expect("the last good certificate still serves");
    assert_eq!(still, ServingStatus::Serving);
    assert!(
        auth.logs().contains("keeping the last good ones"),
        "the broken rotation is logged"
    );

    // The real rotation: a certificate from the next CA. Without a restart, new connections
    // verify against the next CA, and no longer against the first alone.
    let rotated = next_ca.leaf("auth rotated");
    std::fs::write(&auth_cert, &rotated.cert).expect("write the new certificate");
    std::fs::write(&auth_key, &rotated.key).expect("write the new key");
    eventually("the rotated certificate is served", || {
        let channel = tls_channel(auth_port, &next_only, Some((&client_cert, &client_key)));
        async move {
            health_of(channel, "")
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        }
    })
    .await;
    let old_trust = health_of(
        tls_channel(auth_port, &first_only, Some((&client_cert, &client_key))),
        "",
    )
    .await
    .expect_err("the old certificate is gone");
    assert_eq!(old_trust.code(), Code::Unavailable, "{old_trust:?}");
    // Catalog trusts both authorities, so it keeps verifying tokens across the rotation.
    let again = catalog_client
        .create_product(bearer(
            pb::CreateProductRequest {
                product: Some(product("TLS-2", "After rotation", eur(100))),
            },
            &token,
        ))
        .await
        .expect_err("still a customer");
    assert_eq!(again.code(), Code::PermissionDenied, "{again:?}");
    let logs = auth.logs();
    assert!(
        !logs.contains("PRIVATE KEY"),
        "key material reached the log"
    );
}

/// Fetches `path` from the admin port over HTTP/1.1, as Prometheus scrapes.
async fn scrape(admin: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{admin}{path}"))
        .await
        .expect("admin port answers HTTP/1.1");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// The value of the first sample of `family` whose labels include every one of `labels`.
fn sample(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| {
            series
                .strip_prefix(family)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                && labels.iter().all(|label| series.contains(label))
        })
        .and_then(|(_, value)| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_serves_red_metrics_gauges_and_health_and_otlp_gets_them_too() {
    let receiver = OtlpReceiver::start().await;
    let otlp = receiver.env();
    let env: Vec<(&str, &str)> = otlp.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (auth_db, catalog_db) = (
        TestDb::new(Backend::Sqlite).await,
        TestDb::new(Backend::Sqlite).await,
    );
    let (auth_admin, catalog_admin) = (free_port(), free_port());
    let auth = Process::start_with_env(
        Svc::Auth,
        &auth_db.url,
        &["--admin-addr", &admin_flag(auth_admin)],
        &env,
    );
    let auth_url = format!("http://{}", auth.addr);
    let catalog = Process::start_with_env(
        Svc::Catalog,
        &catalog_db.url,
        &[
            "--admin-addr",
            &admin_flag(catalog_admin),
            "--auth-url",
            &auth_url,
            "--db-pool-size",
            "7",
            "--reservation-sweep-interval",
            "100ms",
        ],
        &env,
    );
    let catalog_admin: SocketAddr = admin_flag(catalog_admin).parse().expect("addr");
    let auth_admin: SocketAddr = admin_flag(auth_admin).parse().expect("addr");
    // Health on the admin port is the same as on the gRPC port.
    let admin_channel = channel(catalog_admin).await;
    wait_ready(&admin_channel, Svc::Catalog.grpc_name()).await;
    wait_ready(&channel(catalog.addr).await, Svc::Catalog.grpc_name()).await;

    let mut client =
        pb::catalog_service_client::CatalogServiceClient::new(channel(catalog.addr).await);
    for _ in 0..2 {
        let missing = client
            .get_product(pb::GetProductRequest {
                product_id: "no-such-product".into(),
            })
            .await
            .expect_err("missing");
        assert_eq!(missing.code(), Code::NotFound);
    }
    client
        .list_products(pb::ListProductsRequest::default())
        .await
        .expect("list");
    // A made-up method: answered UNIMPLEMENTED, counted under one `_OTHER` label.
    let mut raw = tonic::client::Grpc::new(channel(catalog.addr).await);
    raw.ready().await.expect("ready");
    let invented = raw
        .unary::<(), (), _>(
            tonic::Request::new(()),
            "/made.up.Service/Nope".parse().expect("path"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(invented.code(), Code::Unimplemented);
    // So is an invented method of a real service.
    raw.ready().await.expect("ready");
    let invented = raw
        .unary::<(), (), _>(
            tonic::Request::new(()),
            "/backbone.catalog.v1.CatalogService/Invented"
                .parse()
                .expect("path"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(invented.code(), Code::Unimplemented);

    let duration = "rpc_server_call_duration_seconds_count";
    let catalog_service = "rpc_service=\"backbone.catalog.v1.CatalogService\"";
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // The sweeper's gauge appears after its first pass.
    while sample(&text, "backbone_worker_passes_total", &[]).is_none() {
        assert!(Instant::now() < deadline, "no worker metrics: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = scrape(catalog_admin, "/metrics").await.1;
    }
    assert_eq!(
        sample(
            &text,
            duration,
            &[
                catalog_service,
                "rpc_method=\"GetProduct\"",
                "rpc_grpc_status_code=\"5\""
            ]
        ),
        Some(2.0),
        "two NOT_FOUND GetProduct calls:\n{text}"
    );
    assert_eq!(
        sample(
            &text,
            duration,
            &[
                catalog_service,
                "rpc_method=\"ListProducts\"",
                "rpc_grpc_status_code=\"0\""
            ]
        ),
        Some(1.0),
        "one OK ListProducts:\n{text}"
    );
    assert!(
        sample(
            &text,
            "rpc_server_call_duration_seconds_bucket",
            &[
                catalog_service,
                "rpc_method=\"ListProducts\"",
                "le=\"+Inf\""
            ]
        ) == Some(1.0),
        "a latency histogram with buckets:\n{text}"
    );
    assert_eq!(
        sample(
            &text,
            duration,
            &[
                "rpc_service=\"_OTHER\"",
                "rpc_method=\"_OTHER\"",
                "rpc_grpc_status_code=\"12\""
            ]
        ),
        Some(2.0),
        "the invented service and method under _OTHER:\n{text}"
    );
    assert!(
        !text.contains("made.up") && !text.contains("Invented"),
        "a client-chosen name became a label"
    );
    assert_eq!(
        sample(
            &text,
            "db_client_connection_max",
            &["db_client_connection_pool_name=\"backbone.catalog.v1.CatalogService\""]
        ),
        Some(7.0),
        "the pool's size:\n{text}"
    );
    assert!(
        sample(
            &text,
            "db_client_connection_count",
            &["db_client_connection_state=\"idle\""]
        )
        .is_some(),
        "pool connections by state:\n{text}"
    );
    assert!(
        sample(
            &text,
            "backbone_worker_passes_total",
            &[
                "backbone_worker=\"catalog.reservation_sweeper\"",
                "backbone_worker_outcome=\"ok\""
            ]
        )
        .is_some_and(|passes| passes >= 1.0),
        "the sweeper's passes:\n{text}"
    );
    let last = sample(&text, "backbone_worker_last_success_seconds", &[]).expect("last success");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!((now - last).abs() < 60.0, "last success {last}, now {now}");
    assert!(
        sample(&text, "process_resident_memory_bytes", &[]).is_some_and(|rss| rss > 0.0),
        "process memory:\n{text}"
    );
    assert_eq!(scrape(catalog_admin, "/nope").await.0, 404);

    // Auth's password-hashing pool is a worker too.
    let auth_text = scrape(auth_admin, "/metrics").await.1;
    assert!(
        sample(&auth_text, "backbone_password_hash_running", &[]).is_some()
            && sample(&auth_text, "backbone_password_hash_queued", &[]).is_some(),
        "password hashing gauges:\n{auth_text}"
    );

    // The same instruments reach the OTLP collector, with each service's name.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let received = receiver.metrics();
        let has =
            |service: &str, name: &str| received.iter().any(|(s, n)| s == service && n == name);
        if has("backbone-catalog", "rpc.server.call.duration")
            && has("backbone-catalog", "db.client.connection.count")
            && has("backbone-catalog", "backbone.worker.passes")
            && has("backbone-auth", "backbone.password_hash.queued")
        {
            break;
        }
        assert!(Instant::now() < deadline, "OTLP got only {received:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((auth, catalog));
}

/// OK calls of `method` that the catalog behind `admin` has answered.
async fn answered(admin: SocketAddr, method: &str) -> f64 {
    let text = scrape(admin, "/metrics").await.1;
    let method = format!("rpc_method=\"{method}\"");
    sample(
        &text,
        "rpc_server_call_duration_seconds_count",
        &[&method, "rpc_grpc_status_code=\"0\""],
    )
    .unwrap_or(0.0)
}

/// Waits until `dns` has answered two more queries: the client then has seen (and passed on to
/// its balancer) an answer given after the last change.
async fn re_resolved(dns: &DnsServer) {
    let seen = dns.queries();
    eventually("the client resolves the name again", || {
        let now = dns.queries();
        async move {
            if now >= seen + 2 {
                Ok(())
            } else {
                Err(format!("{} queries since", now - seen))
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_balancing_spreads_calls_over_every_address_of_a_name_and_follows_it() {
    // A headless Service as DNS serves it: one name, the address of every ready replica.
    let (first, second) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
    let (catalog_name, auth_name) = ("catalog.backbone.test", "auth.backbone.test");
    let dns = DnsServer::start(&[
        (&format!("{catalog_name}."), &[first, second]),
        (&format!("{auth_name}."), &[first]),
    ])
    .await;
    let dns_flag = dns.addr().to_string();

    // Two catalog replicas on one PostgreSQL database and one port, at two addresses, serving
    // TLS with a certificate for the name only (no IP address in it), and calling auth by a
    // name that only this DNS server knows, balanced per request.
    let pki = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("Backbone test CA");
    let ca_file = write(pki.path(), "ca.pem", &ca.pem);
    let leaf = ca.leaf_for("catalog", &[catalog_name]);
    let cert = write(pki.path(), "catalog.crt", &leaf.cert);
    let key = write(pki.path(), "catalog.key", &leaf.key);
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let (auth_db, catalog_db) = (
        TestDb::new(Backend::Sqlite).await,
        TestDb::new(Backend::Postgres).await,
    );
    let auth = Process::start(Svc::Auth, &auth_db.url, &[]);
    let auth_url = format!("http://{auth_name}:{}", auth.addr.port());
    let port = free_port();
    let admins: Vec<SocketAddr> = [free_port(), free_port()]
        .into_iter()
        .map(|admin| admin_flag(admin).parse().expect("addr"))
        .collect();
    let mut replicas = Vec::new();
    for (ip, admin) in [first, second].into_iter().zip(admins.iter().copied()) {
        let admin_addr = admin.to_string();
        replicas.push(Process::start_on(
            Svc::Catalog,
            SocketAddr::new(ip.into(), port),
            &catalog_db.url,
            &[
                "--admin-addr",
                &admin_addr,
                "--tls-cert-file",
                &path(&cert),
                "--tls-key-file",
                &path(&key),
                "--auth-url",
                &auth_url,
            ],
            &[
                ("CATALOG_PEER_BALANCING", "per-request"),
                ("CATALOG_PEER_DNS_SERVER", &dns_flag),
            ],
        ));
        // One at a time: the second finds the schema migrated.
        wait_ready(&channel(admin).await, Svc::Catalog.grpc_name()).await;
    }

    // The kit's own client, balanced per request over the name.
    let peers = PeerArgs {
        tls_ca_file: Some(ca_file.clone()),
        peer_balancing: PeerBalancing::PerRequest,
        peer_resolve_interval: Duration::from_millis(200),
        peer_dns_server: Some(dns.addr()),
    };
    let channels = PeerChannels::new(&TlsArgs::default(), &peers).expect("peer channels");
    let url = format!("https://{catalog_name}:{port}");
    let mut client = pb::catalog_service_client::CatalogServiceClient::new(
        channels
            .channel(&url, "--catalog-url")
            .expect("balanced channel"),
    );
    let list = pb::ListProductsRequest::default();
    for call in 0..40 {
        client
            .list_products(list.clone())
            .await
            .unwrap_or_else(|err| panic!("call {call} through the balanced channel: {err:?}"));
    }
    let counts = [
        answered(admins[0], "ListProducts").await,
        answered(admins[1], "ListProducts").await,
    ];
    assert_eq!(counts[0] + counts[1], 40.0, "{counts:?}");
    // Each pick is a fair coin between two idle replicas: fewer than 5 of 40 on one side has a
    // probability below 1e-6.
    assert!(
        counts.iter().all(|count| *count >= 5.0),
        "calls did not spread: {counts:?}"
    );

    // A replica leaves the name (its pod is no longer ready): no more calls reach it.
    dns.set(&format!("{catalog_name}."), &[second]);
    re_resolved(&dns).await;
    for _ in 0..20 {
        client
            .list_products(list.clone())
            .await
            .expect("one replica left");
    }
    assert_eq!(answered(admins[0], "ListProducts").await, counts[0]);
    assert_eq!(answered(admins[1], "ListProducts").await, counts[1] + 20.0);

    // It comes back (a new pod): calls spread again without a new channel.
    dns.set(&format!("{catalog_name}."), &[first, second]);
    re_resolved(&dns).await;
    for _ in 0..40 {
        client
            .list_products(list.clone())
            .await
            .expect("both again");
    }
    let back = answered(admins[0], "ListProducts").await - counts[0];
    assert!(back >= 5.0, "the returning replica got {back} of 40 calls");

    // Each replica reached auth through the name only the DNS server knows: a customer's token
    // is read and refused (PERMISSION_DENIED), so both fetched auth's signing keys.
    let mut auth_client =
        auth_pb::auth_service_client::AuthServiceClient::new(channel(auth.addr).await);
    wait_ready(&channel(auth.addr).await, Svc::Auth.grpc_name()).await;
    let token = customer(&mut auth_client, "balanced@example.com").await;
    for _ in 0..20 {
        let denied = client
            .create_product(bearer(
                pb::CreateProductRequest {
                    product: Some(product("DNS-1", "Balanced", eur(100))),
                },
                &token,
            ))
            .await
            .expect_err("a customer cannot create products");
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    }
    for admin in &admins {
        let text = scrape(*admin, "/metrics").await.1;
        let denied = sample(
            &text,
            "rpc_server_call_duration_seconds_count",
            &["rpc_method=\"CreateProduct\"", "rpc_grpc_status_code=\"7\""],
        );
        // 20 fair coins all on one side: probability 2e-6.
        assert!(denied.is_some_and(|n| n >= 1.0), "{admin} checked no token");
    }
    let resolved = replicas.iter().all(|replica| {
        replica
            .logs()
            .contains("balancing calls over the peer's addresses")
    });
    assert!(resolved, "a replica did not resolve auth's name");
}
