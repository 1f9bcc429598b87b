# ReTiCh Messaging. `make dev` runs the whole stack from nothing; `make test` runs every test.
.PHONY: dev dev-stop dev-cluster dev-cluster-stop test-cluster services test test-rust test-clients validate-asyncapi lint fmt build migrate token validate-deploy bench sqlx-prepare sqlx-check

CARGO ?= cargo

dev: ## set everything up and run api-service + ws-gateway, print a development token
	scripts/dev.sh

dev-stop: ## stop what `make dev` started
	scripts/dev-stop.sh

dev-cluster: ## 3 NATS nodes, a 6-node Redis Cluster, 2 api-services and 3 gateways; prints the addresses
	scripts/dev-cluster.sh

dev-cluster-stop: ## stop what `make dev-cluster` started
	scripts/dev-cluster-stop.sh

services: ## make sure PostgreSQL, Redis and NATS answer (installs/starts them)
	scripts/ensure-services.sh

test: services ## the whole test suite against the real PostgreSQL, Redis and NATS
	$(CARGO) test --workspace --locked
	$(CARGO) build --locked -p api-service -p ws-gateway
	scripts/test-clients.sh
	scripts/test-cluster.sh

test-rust: services ## the Rust tests only
	$(CARGO) test --workspace --locked

test-clients: services ## the AsyncAPI check, the TypeScript client's tests and the demo's browser test
	$(CARGO) build --locked -p api-service -p ws-gateway
	scripts/test-clients.sh

test-cluster: services ## the cluster suite on the `make dev-cluster` topology (debug builds), failover included
	$(CARGO) build --locked -p api-service -p ws-gateway
	scripts/test-cluster.sh

lint: ## formatting, clippy (warnings are errors), no import cycle between modules, the SQL offline data up to date
	$(CARGO) fmt --all -- --check
	python3 scripts/module-cycles.py
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(MAKE) sqlx-check

sqlx-prepare: services ## after changing a query or a migration: rewrite .sqlx/ (then commit it)
	scripts/sqlx-data.sh prepare

sqlx-check: services ## fail when .sqlx/ does not match the queries and migrations/ (scratch database)
	scripts/sqlx-data.sh check

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace --release --locked

migrate: ## apply pending migrations to DATABASE_URL
	$(CARGO) run -q -p api-service -- migrate up

token: ## print a development token: `make token [ID=<user uuid>] [HOURS=24]` (default: make dev's first user)
	@TOKEN_USER="$(ID)" TOKEN_HOURS="$(HOURS)" scripts/token.sh

validate-asyncapi: ## docs/asyncapi.yaml through the AsyncAPI parser; its and docs/websocket.md's examples against its schemas
	scripts/validate-asyncapi.sh

validate-deploy: ## validate Dockerfile, compose, k8s manifests, dashboards (no cluster/engine needed)
	scripts/validate-deploy.sh

bench: ## short run of every retich-bench scenario on services it starts and stops; bench/results/latest.json
	scripts/bench.sh
