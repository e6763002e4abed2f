//! The Kubernetes manifests agree with the binaries: every overlay renders with `kubectl
//! kustomize`; every environment variable a Backbone container gets (inline or from its
//! ConfigMap) is a flag that binary reads (or a standard `OTEL_*` variable); liveness asks for
//! `""`, readiness for the service's own health name, both on the plaintext admin port; the
//! container ports are the gRPC and admin ports the binary listens on and every Service targets a
//! port of its pods; every file a `*_FILE` variable names is in a serving container's volume mount; every pod
//! template meets the "restricted"
//! Pod Security Standard with a read-only root filesystem. A deliberately broken copy of the
//! manifests shows each check failing.

#![allow(
    clippy::expect_used,
    reason = "end-to-end tests: a failed expectation is a failed test, with its message"
)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// The repository's `deploy/` folder.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The overlays operators apply.
const OVERLAYS: [&str; 2] = ["dev", "prod"];

/// `kubectl kustomize` of `dir`, as JSON values (one per object).
fn render(dir: &Path) -> Vec<Value> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl is installed (it ships kustomize)");
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 manifests");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).expect("a YAML document"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// What a Backbone binary reads: its flags' variables, its default port, its health name.
struct Binary {
    env: BTreeSet<String>,
    prefix: &'static str,
    default_port: u16,
    health_name: &'static str,
}

fn binary(name: &str) -> Option<Binary> {
    use backbone_common::config::command;
    let (cli, prefix, health_name) = match name {
        "backbone-auth" => (
            command::<backbone_auth::config::Cli>("AUTH"),
            "AUTH",
            backbone_auth::SERVICE_NAME,
        ),
        "backbone-catalog" => (
            command::<backbone_catalog::config::Cli>("CATALOG"),
            "CATALOG",
            backbone_catalog::SERVICE_NAME,
        ),
        "backbone-billing" => (
            command::<backbone_billing::config::Cli>("BILLING"),
            "BILLING",
            backbone_billing::SERVICE_NAME,
        ),
        _ => return None,
    };
    let env = cli
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    let default_port = cli
        .get_arguments()
        .find(|arg| arg.get_id() == "listen_addr")
        .and_then(|arg| arg.get_default_values().first())
        .and_then(|value| value.to_str())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .expect("a default --listen-addr");
    Some(Binary {
        env,
        prefix,
        default_port,
        health_name,
    })
}

/// Variables read by libraries rather than flags (the OpenTelemetry SDK's standard ones).
fn read_by_a_library(name: &str) -> bool {
    name.starts_with("OTEL_") || name == "RUST_LOG"
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

fn items<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Every object that carries a pod template: (kind/name, pod spec).
fn pod_specs(objects: &[Value]) -> Vec<(String, &Value)> {
    objects
        .iter()
        .filter_map(|o| {
            let kind = str_at(o, &["kind"])?;
            let name = str_at(o, &["metadata", "name"])?;
            let spec = match kind {
                "Pod" => o.get("spec")?,
                "CronJob" => o.pointer("/spec/jobTemplate/spec/template/spec")?,
                _ => o.pointer("/spec/template/spec")?,
            };
            Some((format!("{kind}/{name}"), spec))
        })
        .collect()
}

/// The problems found in one rendered overlay (empty when it agrees with the binaries).
fn check(objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let config_map = |name: &str| {
        objects.iter().find(|o| {
            str_at(o, &["kind"]) == Some("ConfigMap")
                && str_at(o, &["metadata", "name"]) == Some(name)
        })
    };
    for (owner, spec) in pod_specs(objects) {
        problems.extend(restricted(&owner, spec));
        for container in items(spec, "containers") {
            let Some(command) = items(container, "command").next().and_then(Value::as_str) else {
                continue;
            };
            let program = command.rsplit('/').next().unwrap_or(command);
            let Some(binary) = binary(program) else {
                continue;
            };
            let where_ = format!("{owner} ({program})");
            // Variables: inline, and every key of the ConfigMaps it takes whole.
            let mut env: Vec<(String, Option<String>)> = items(container, "env")
                .filter_map(|e| {
                    Some((
                        str_at(e, &["name"])?.to_owned(),
                        str_at(e, &["value"]).map(str::to_owned),
                    ))
                })
                .collect();
            for source in items(container, "envFrom") {
                let Some(name) = str_at(source, &["configMapRef", "name"]) else {
                    continue;
                };
                match config_map(name)
                    .and_then(|m| m.get("data"))
                    .and_then(Value::as_object)
                {
                    Some(data) => env.extend(
                        data.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned))),
                    ),
                    None => {
                        problems.push(format!("{where_}: ConfigMap {name} is not in the overlay"))
                    }
                }
            }
            for (name, _) in &env {
                if !binary.env.contains(name) && !read_by_a_library(name) {
                    problems.push(format!(
                        "{where_}: {name} is not a variable {program} reads"
                    ));
                }
            }
            // The ports it listens on: gRPC, and the admin port the probes and scrapers use.
            let literal_port = |flag: &str, default: Option<u16>| {
                let name = format!("{}_{flag}", binary.prefix);
                match env.iter().find(|(n, _)| *n == name) {
                    Some((_, Some(addr))) => addr
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or(format!("{name} is not a literal host:port")),
                    Some((_, None)) => Err(format!("{name} is not a literal host:port")),
                    None => default.ok_or(format!("no {name}: the probes need the admin port")),
                }
            };
            let serves = items(container, "args")
                .next()
                .and_then(Value::as_str)
                .is_none_or(|a| a == "serve");
            if !serves {
                // `migrate` opens only the database.
                continue;
            }
            problems.extend(files_are_mounted(&where_, container, &env));
            problems.extend(peers_are_services(&where_, binary.prefix, &env, objects));
            let (port, admin) = match (
                literal_port("LISTEN_ADDR", Some(binary.default_port)),
                literal_port("ADMIN_ADDR", None),
            ) {
                (Ok(port), Ok(admin)) => (port, admin),
                (port, admin) => {
                    problems.extend(
                        [port.err(), admin.err()]
                            .into_iter()
                            .flatten()
                            .map(|p| format!("{where_}: {p}")),
                    );
                    continue;
                }
            };
            let mut declared: Vec<u64> = items(container, "ports")
                .filter_map(|p| p.get("containerPort")?.as_u64())
                .collect();
            declared.sort_unstable();
            let mut listening = [u64::from(port), u64::from(admin)];
            listening.sort_unstable();
            if declared != listening {
                problems.push(format!(
                    "{where_}: container ports {declared:?}, but it listens on {port} (gRPC) and {admin} (admin)"
                ));
            }
            for (probe, wanted) in [
                ("startupProbe", Some("")),
                ("livenessProbe", Some("")),
                ("readinessProbe", Some(binary.health_name)),
            ] {
                let Some(grpc) = container.get(probe).and_then(|p| p.get("grpc")) else {
                    problems.push(format!("{where_}: no gRPC {probe}"));
                    continue;
                };
                // Kubelet's gRPC probes cannot speak TLS: they use the plaintext admin port.
                if grpc.get("port").and_then(Value::as_u64) != Some(u64::from(admin)) {
                    problems.push(format!(
                        "{where_}: {probe} port {:?}, but its admin port is {admin}",
                        grpc.get("port")
                    ));
                }
                let service = str_at(grpc, &["service"]).unwrap_or("");
                if Some(service) != wanted {
                    problems.push(format!(
                        "{where_}: {probe} asks for health service {service:?}; {program} registers \"\" and {:?}, and this probe wants {wanted:?}",
                        binary.health_name
                    ));
                }
            }
        }
    }
    problems.extend(services_target_their_pods(objects));
    problems
}

/// Every file a `*_FILE` variable names (TLS certificates, keys, secrets) lies in one of the
/// serving container's volume mounts; otherwise the binary would fail to start on a missing file.
fn files_are_mounted(
    where_: &str,
    container: &Value,
    env: &[(String, Option<String>)],
) -> Vec<String> {
    let mounts: Vec<&str> = items(container, "volumeMounts")
        .filter_map(|m| str_at(m, &["mountPath"]))
        .collect();
    env.iter()
        .filter(|(name, _)| name.ends_with("_FILE"))
        .filter_map(|(name, value)| {
            let path = value.as_deref()?;
            let mounted = mounts.iter().any(|mount| {
                path.strip_prefix(mount)
                    .is_some_and(|rest| rest.starts_with('/'))
            });
            (!mounted)
                .then(|| format!("{where_}: {name} names {path}, which no volume mount holds"))
        })
        .collect()
}

/// Every peer URL (`*_URL` with an http(s) scheme) names a Service of the overlay and one of its
/// ports; with `--peer-balancing per-request` that Service must be headless, or the name would
/// resolve to one virtual IP and nothing would be balanced.
fn peers_are_services(
    where_: &str,
    prefix: &str,
    env: &[(String, Option<String>)],
    objects: &[Value],
) -> Vec<String> {
    let per_request = env.iter().any(|(name, value)| {
        *name == format!("{prefix}_PEER_BALANCING") && value.as_deref() == Some("per-request")
    });
    let mut problems = Vec::new();
    for (name, value) in env {
        let Some(url) = value.as_deref().filter(|_| name.ends_with("_URL")) else {
            continue;
        };
        let Some(authority) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
        else {
            continue;
        };
        let (host, port) = authority.split_once(':').unwrap_or((authority, "80"));
        // `catalog`, `catalog.backbone` and `catalog.backbone.svc...` all name Service catalog.
        let service_name = host.split('.').next().unwrap_or(host);
        let service = objects.iter().find(|o| {
            str_at(o, &["kind"]) == Some("Service")
                && str_at(o, &["metadata", "name"]) == Some(service_name)
        });
        let Some(service) = service else {
            problems.push(format!(
                "{where_}: {name} calls {host}, which is no Service here"
            ));
            continue;
        };
        let has_port = service
            .get("spec")
            .into_iter()
            .flat_map(|spec| items(spec, "ports"))
            .any(|p| {
                p.get("port")
                    .and_then(Value::as_u64)
                    .map(|n| n.to_string())
                    .as_deref()
                    == Some(port)
            });
        if !has_port {
            problems.push(format!("{where_}: {name} calls port {port} of Service/{service_name}, which has no such port"));
        }
        let headless = str_at(service, &["spec", "clusterIP"]) == Some("None");
        if per_request && !headless {
            problems.push(format!(
                "{where_}: {name} balances per request over Service/{service_name}, which is not headless (one virtual IP, nothing to balance)"
            ));
        }
    }
    problems
}

/// Each Service's target port is a named or numbered port of the pods it selects.
fn services_target_their_pods(objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for service in objects
        .iter()
        .filter(|o| str_at(o, &["kind"]) == Some("Service"))
    {
        let name = str_at(service, &["metadata", "name"]).unwrap_or("?");
        let Some(selector) = service.pointer("/spec/selector").and_then(Value::as_object) else {
            continue;
        };
        let pods: Vec<&Value> = pod_specs(objects)
            .into_iter()
            .filter(|(owner, _)| !owner.starts_with("Job/"))
            .filter_map(|(owner, spec)| {
                let template = objects.iter().find(|o| {
                    format!(
                        "{}/{}",
                        str_at(o, &["kind"]).unwrap_or(""),
                        str_at(o, &["metadata", "name"]).unwrap_or("")
                    ) == owner
                })?;
                let labels = template
                    .pointer("/spec/template/metadata/labels")?
                    .as_object()?;
                selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
                    .then_some(spec)
            })
            .collect();
        for port in service
            .get("spec")
            .into_iter()
            .flat_map(|spec| items(spec, "ports"))
        {
            let target = port.get("targetPort").or_else(|| port.get("port"));
            let matched = pods.iter().any(|spec| {
                items(spec, "containers")
                    .flat_map(|c| items(c, "ports"))
                    .any(|p| match target {
                        Some(Value::String(named)) => str_at(p, &["name"]) == Some(named),
                        Some(number) => p.get("containerPort") == Some(number),
                        None => false,
                    })
            });
            if !matched {
                problems.push(format!(
                    "Service/{name}: target port {target:?} is no port of its pods"
                ));
            }
        }
    }
    problems
}

/// The "restricted" Pod Security Standard, plus a read-only root filesystem.
fn restricted(owner: &str, spec: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let pod = spec.get("securityContext").cloned().unwrap_or(Value::Null);
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec.get(host) == Some(&Value::Bool(true)) {
            problems.push(format!("{owner}: {host}"));
        }
    }
    if items(spec, "volumes").any(|v| v.get("hostPath").is_some()) {
        problems.push(format!("{owner}: a hostPath volume"));
    }
    let all = items(spec, "initContainers").chain(items(spec, "containers"));
    for container in all {
        let name = str_at(container, &["name"]).unwrap_or("?");
        let own = container
            .get("securityContext")
            .cloned()
            .unwrap_or(Value::Null);
        let either = |key: &str| own.get(key).or_else(|| pod.get(key));
        if either("runAsNonRoot") != Some(&Value::Bool(true)) {
            problems.push(format!("{owner}/{name}: runAsNonRoot is not true"));
        }
        if either("runAsUser").and_then(Value::as_u64) == Some(0) {
            problems.push(format!("{owner}/{name}: runs as user 0"));
        }
        let seccomp = either("seccompProfile").and_then(|p| str_at(p, &["type"]));
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            problems.push(format!(
                "{owner}/{name}: seccompProfile is not RuntimeDefault"
            ));
        }
        if own.get("allowPrivilegeEscalation") != Some(&Value::Bool(false)) {
            problems.push(format!(
                "{owner}/{name}: allowPrivilegeEscalation is not false"
            ));
        }
        if own.get("privileged") == Some(&Value::Bool(true)) {
            problems.push(format!("{owner}/{name}: privileged"));
        }
        let caps = own.get("capabilities").cloned().unwrap_or(Value::Null);
        if !items(&caps, "drop").any(|c| c.as_str() == Some("ALL")) {
            problems.push(format!("{owner}/{name}: capabilities do not drop ALL"));
        }
        if items(&caps, "add").any(|c| c.as_str() != Some("NET_BIND_SERVICE")) {
            problems.push(format!("{owner}/{name}: adds capabilities"));
        }
        if own.get("readOnlyRootFilesystem") != Some(&Value::Bool(true)) {
            problems.push(format!("{owner}/{name}: the root filesystem is writable"));
        }
    }
    problems
}

#[test]
fn every_overlay_agrees_with_the_binaries_and_is_restricted() {
    for overlay in OVERLAYS {
        let objects = render(&deploy_dir().join("k8s/overlays").join(overlay));
        let deployments = objects
            .iter()
            .filter(|o| str_at(o, &["kind"]) == Some("Deployment"))
            .count();
        assert!(deployments >= 3, "{overlay} renders the three services");
        let problems = check(&objects);
        assert!(problems.is_empty(), "{overlay}:\n{}", problems.join("\n"));
    }
}

/// A copy of `deploy/` with one text replaced in one file; returns the rendered prod overlay's
/// problems.
fn problems_after(file: &str, from: &str, to: &str) -> Vec<String> {
    let copy = tempfile::tempdir().expect("temp dir");
    copy_dir(&deploy_dir(), copy.path());
    let path = copy.path().join(file);
    let text = std::fs::read_to_string(&path).expect("manifest");
    assert!(text.contains(from), "{file} holds {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write the broken copy");
    check(&render(&copy.path().join("k8s/overlays/prod")))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn a_broken_copy_fails_the_check() {
    // (file, text, replaced by, the problem it must cause)
    let breakages = [
        // A variable no binary reads (a typo of AUTH_LOG_FILTER).
        (
            "k8s/base/auth/configmap.yaml",
            "AUTH_LOG_FILTER:",
            "AUTH_LOG_FILTRE:",
            "AUTH_LOG_FILTRE is not a variable backbone-auth reads",
        ),
        // A readiness probe asking for a health name catalog does not register.
        (
            "k8s/base/catalog/deployment.yaml",
            "service: backbone.catalog.v1.CatalogService",
            "service: backbone.catalog.v1.Catalog",
            "readinessProbe asks for health service \"backbone.catalog.v1.Catalog\"",
        ),
        // A container port that is not the one billing listens on.
        (
            "k8s/base/billing/deployment.yaml",
            "containerPort: 50053",
            "containerPort: 8080",
            "container ports [8080, 9090], but it listens on 50053 (gRPC) and 9090 (admin)",
        ),
        // The listen address moved without the container port.
        (
            "k8s/base/auth/configmap.yaml",
            "0.0.0.0:50051",
            "0.0.0.0:9000",
            "container ports [9090, 50051], but it listens on 9000 (gRPC)",
        ),
        // The admin address moved without the probes.
        (
            "k8s/base/catalog/configmap.yaml",
            "0.0.0.0:9090",
            "0.0.0.0:9191",
            "livenessProbe port Some(Number(9090)), but its admin port is 9191",
        ),
        // TLS files named where the certificate Secret is not mounted.
        (
            "k8s/overlays/prod/tls-patch.yaml",
            "mountPath: /var/run/secrets/backbone/tls",
            "mountPath: /var/run/secrets/backbone/certs",
            "AUTH_TLS_CERT_FILE names /var/run/secrets/backbone/tls/tls.crt, which no volume mount holds",
        ),
        // A Service port aimed at a port its pods do not have.
        (
            "k8s/base/catalog/service.yaml",
            "targetPort: admin",
            "targetPort: metrics",
            "Service/catalog: target port Some(String(\"metrics\")) is no port of its pods",
        ),
        // Per-request balancing over a ClusterIP Service: one address, nothing balanced.
        (
            "k8s/overlays/prod/tls-patch.yaml",
            "https://catalog-headless:50052",
            "https://catalog:50052",
            "BILLING_CATALOG_URL balances per request over Service/catalog, which is not headless",
        ),
        // A peer URL on a port its Service does not have.
        (
            "k8s/overlays/prod/tls-patch.yaml",
            "CATALOG_AUTH_URL: https://auth-headless:50051",
            "CATALOG_AUTH_URL: https://auth-headless:50052",
            "CATALOG_AUTH_URL calls port 50052 of Service/auth-headless, which has no such port",
        ),
        // A writable root filesystem, and a privilege escalation, break the pod security check.
        (
            "k8s/base/billing/deployment.yaml",
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
            "Deployment/billing/billing: the root filesystem is writable",
        ),
        (
            "k8s/base/auth/migrate-job.yaml",
            "allowPrivilegeEscalation: false",
            "allowPrivilegeEscalation: true",
            "Job/auth-migrate/migrate: allowPrivilegeEscalation is not false",
        ),
    ];
    for (file, from, to, expected) in breakages {
        let problems = problems_after(file, from, to);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{file}: {from:?} -> {to:?} should report {expected:?}; got {problems:#?}"
        );
    }
}

#[test]
fn the_image_builds_the_workspace_binaries_with_the_makefile_and_runs_as_non_root() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dockerfile =
        std::fs::read_to_string(root.join("deploy/docker/Dockerfile")).expect("Dockerfile");
    let makefile = std::fs::read_to_string(root.join("Makefile")).expect("Makefile");
    // The build step is the Makefile's, and that is the plain release build of every binary.
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim_start().starts_with("RUN make release")),
        "the image builds with `make release`"
    );
    let recipe: Vec<&str> = makefile
        .lines()
        .skip_while(|l| !l.starts_with("release:"))
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .collect();
    assert_eq!(
        recipe,
        ["\t$(CARGO) build --release --locked --workspace --bins"]
    );
    // It ships exactly the services' binaries (crates/bench's tools stay out).
    let metadata = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(&root)
        .output()
        .expect("cargo metadata");
    let metadata: Value = serde_json::from_slice(&metadata.stdout).expect("metadata JSON");
    let mut binaries: Vec<String> = items(&metadata, "packages")
        .filter(|p| str_at(p, &["manifest_path"]).is_some_and(|m| m.contains("/services/")))
        .flat_map(|p| items(p, "targets"))
        .filter(|t| items(t, "kind").any(|k| k.as_str() == Some("bin")))
        .filter_map(|t| str_at(t, &["name"]).map(str::to_owned))
        .collect();
    binaries.sort();
    let copy = dockerfile
        .lines()
        .find(|l| l.contains("cp target/release/"))
        .expect("the copy of the binaries");
    let mut shipped: Vec<String> = copy
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("target/release/"))
        .map(str::to_owned)
        .collect();
    shipped.sort();
    assert_eq!(shipped, binaries);
    // The runtime stage runs as a non-root user.
    let runtime = dockerfile
        .rsplit("\nFROM ")
        .next()
        .expect("a runtime stage");
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    let uid = user.split(':').next().expect("uid");
    assert!(uid != "0" && uid != "root", "runs as {user}");
    assert!(
        runtime.starts_with("gcr.io/distroless/cc-debian12:nonroot"),
        "{runtime}"
    );
}
