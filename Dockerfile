# One image for every Serin component: `serin` (controller, control plane, injector, CLI) and
# `serin-proxy` (the sidecar), plus iptables for `serin-proxy init`'s traffic capture.
# Build: docker build -t REGISTRY/serin:VERSION .   (then: serin install --registry REGISTRY)

FROM rust:1.95-trixie AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin serin --bin serin-proxy

FROM debian:trixie-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/serin /src/target/release/serin-proxy /usr/local/bin/
# Non-root by default (the manifests run as 65532 too); the proxy's init container asks for
# root and NET_ADMIN/NET_RAW itself.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/serin"]
