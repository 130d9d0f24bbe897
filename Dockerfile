# syntax=docker/dockerfile:1
# wardgate's container image: built with the locked dependencies, run from a distroless base
# (glibc, CA certificates, no shell) as the non-root UID 65532.
#
#   docker build -t registry.example.com/clinic/wardgate:0.1.0 .
#
# The Helm chart (helm/wardgate) mounts the config at /etc/wardgate/config/wardgate.yaml and
# passes it with --config; the default CMD below serves /etc/wardgate/wardgate.yaml.

FROM rust:1-bookworm AS build
WORKDIR /src
# Only what the build reads: the demo embeds the shipped policies/, and Cargo.toml's [[bench]]
# targets must exist for the manifest to load. .dockerignore keeps the context to these; the
# chart tests check that cargo accepts a context made of exactly these copies.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY policies ./policies
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/wardgate /out/wardgate

# cc: glibc and libgcc for the Rust binary, plus /etc/ssl/certs for jwks_url and HTTPS sinks.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/wardgate /wardgate
USER 65532:65532
# Proxy and admin ports (the chart's defaults).
EXPOSE 8080 9901
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: the image has no shell or HTTP client to run one; Kubernetes probes /healthz and /readyz on the admin port instead
ENTRYPOINT ["/wardgate"]
CMD ["run", "--config", "/etc/wardgate/wardgate.yaml"]
