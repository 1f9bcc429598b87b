# One image, two entry points (api-service and ws-gateway): they share every dependency, so one
# build caches once and one image is scanned and promoted; the command chooses the service.
# syntax=docker/dockerfile:1
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p api-service -p ws-gateway \
 && mkdir -p /out && cp target/release/api-service target/release/ws-gateway /out/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/api-service /out/ws-gateway /usr/local/bin/
USER nonroot:nonroot
ENV LOG_FORMAT=json
EXPOSE 8082 8085
ENTRYPOINT ["/usr/local/bin/api-service"]
