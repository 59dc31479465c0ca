# syntax=docker/dockerfile:1

# --- build ------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

# The whole tree (minus .dockerignore) goes in: Cargo checks every target the
# manifest declares, benches included, even for a release build of the binary.
COPY . .

# Cache mounts keep the crate registry and incremental artefacts between builds
# (BuildKit, the default builder). target/ lives only in the cache, so the
# binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/refract /usr/local/bin/refract

# --- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: the system roots that rediss:// connections and https:// services and hooks
# trust, unless redis.tls_ca_file or a service's tls_ca_file names others.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 refract \
    && useradd --system --uid 10001 --gid refract --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin refract

COPY --from=builder /usr/local/bin/refract /usr/local/bin/refract
COPY routes.example.toml /etc/refract/routes.toml

# Numeric, so orchestrators can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080

# No HEALTHCHECK: the slim image has no curl or wget, and adding one only for
# that grows the attack surface. Probe GET /healthz (liveness) and GET /readyz
# (readiness) from the orchestrator instead.
#
# Exec form, so refract is PID 1 and receives SIGTERM itself for its graceful
# shutdown (close clients with 1001, tell services `disconnect`).
ENTRYPOINT ["refract"]
CMD ["--config", "/etc/refract/routes.toml"]
