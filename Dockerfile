# syntax=docker/dockerfile:1

# ---- build ----------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# cmake builds the bundled librdkafka when a feature asks for it; OpenSSL gives it TLS and SCRAM.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
# Build dependencies first so source edits reuse the cached layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs \
 && cargo build --release --locked \
 && rm -rf src target/release/portico target/release/deps/portico-* target/release/deps/libportico-* target/release/.fingerprint/portico-*
COPY src ./src
RUN cargo build --release --locked

# ---- runtime --------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin portico
COPY --from=builder /src/target/release/portico /usr/local/bin/portico
COPY bridges.yaml /etc/portico/bridges.yaml
# Inside a container the telemetry endpoint must listen beyond loopback.
ENV PORTICO_TELEMETRY_LISTEN=0.0.0.0:9464
USER portico
EXPOSE 9464
ENTRYPOINT ["portico"]
CMD ["run", "--config", "/etc/portico/bridges.yaml"]
