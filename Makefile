# ReTiCh Messaging. `make dev` runs the whole stack from nothing; `make test` runs every test.
.PHONY: dev dev-stop services test lint fmt build migrate token validate-deploy bench

CARGO ?= cargo

dev: ## set everything up and run api-service + ws-gateway, print a development token
	scripts/dev.sh

dev-stop: ## stop what `make dev` started
	scripts/dev-stop.sh

services: ## make sure PostgreSQL, Redis and NATS answer (installs/starts them)
	scripts/ensure-services.sh

test: services ## the whole test suite against the real PostgreSQL, Redis and NATS
	$(CARGO) test --workspace --locked

lint: ## formatting and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace --release --locked

migrate: ## apply pending migrations to DATABASE_URL
	$(CARGO) run -q -p api-service -- migrate up

token: ## print a development token (JWT_SECRET must match the running services)
	@$(CARGO) run -q -p api-service -- token

validate-deploy: ## validate Dockerfile, compose, k8s manifests, dashboards (no cluster/engine needed)
	scripts/validate-deploy.sh

bench: ## short run of every retich-bench scenario on services it starts and stops; bench/results/latest.json
	scripts/bench.sh
