# syntax=docker/dockerfile:1
#
# ReTiCh Messaging: ONE image, TWO entry points.
#
#   api-service (default):  docker run IMAGE                      -> /usr/local/bin/api-service serve
#                           docker run IMAGE migrate up           -> apply the embedded migrations
#   ws-gateway:             docker run --entrypoint /usr/local/bin/ws-gateway IMAGE serve
#
# Why one image rather than one per service: both binaries come out of the same Cargo workspace
# and share almost every dependency (tokio, sqlx, async-nats, redis, rustls, prost, ...), so one
# `cargo build` compiles the shared crates once and fills one build cache; there is one image to
# scan, sign and promote per release, so api-service and ws-gateway can never run mismatched
# builds of shared-proto/shared-auth; and the second binary costs only its own size, since the
# base layers are shared anyway. Kubernetes and compose choose the entry point (`command`), and
# the two Deployments still scale independently. See docs/deployment.md.
#
# Runtime: distroless cc (glibc + libgcc + CA certificates, no shell, no package manager), run as
# the numeric non-root user 65532 so that Kubernetes can verify runAsNonRoot. Container health
# checks use the binaries' own `healthcheck` subcommand (GET /health on 127.0.0.1:$PORT), since
# the image has no wget or curl. No HEALTHCHECK instruction here: it would have to name one of
# the two binaries; compose sets one per service and Kubernetes uses HTTP probes.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
# Only what the build reads, so editing docs, manifests or scripts does not invalidate this
# layer. Every workspace member must be listed (scripts/validate-deploy.sh checks it).
COPY Cargo.toml Cargo.lock ./
# sqlx's query macros compile from the offline data in .sqlx/ (SQLX_OFFLINE in .cargo/config.toml):
# there is no database during the build.
COPY .cargo ./.cargo
COPY .sqlx ./.sqlx
COPY migrations ./migrations
COPY shared-proto ./shared-proto
COPY shared-auth ./shared-auth
COPY shared-redis ./shared-redis
COPY shared-ops ./shared-ops
COPY api-service ./api-service
COPY ws-gateway ./ws-gateway
# Every workspace member must be present for cargo to load the workspace, even with -p.
COPY bench ./bench
# Optional: `--build-arg GIT_REVISION=$(git rev-parse --short HEAD)` adds a `revision` label to
# the services' build_info metrics (read at compile time; empty means version only).
ARG GIT_REVISION=""
# The cargo registry and the target directory live in BuildKit cache mounts: a rebuild after a
# code change recompiles only the workspace crates, not the ~400 dependencies. The binaries are
# copied out of the cache mount, which is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p api-service -p ws-gateway \
 && mkdir -p /out/bin /out/data/uploads \
 && cp target/release/api-service target/release/ws-gateway /out/bin/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="retich-messaging" \
      org.opencontainers.image.description="ReTiCh Messaging: api-service and ws-gateway" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/bin/api-service /out/bin/ws-gateway /usr/local/bin/
# Local attachment store for development (STORAGE_BACKEND=local); owned by the runtime user so
# a fresh named volume mounted here is writable. Production uses S3 or Azure Blob instead.
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
USER 65532:65532
ENV LOG_FORMAT=json \
    UPLOAD_DIR=/data/uploads
EXPOSE 8082 8085
ENTRYPOINT ["/usr/local/bin/api-service"]
CMD ["serve"]
