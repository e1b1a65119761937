# syntax=docker/dockerfile:1
# The one image every service runs: the container command is `shop serve SERVICE ...`
# (`shop export k8s|compose` write the manifests that use it).
#
#   docker build -t shop:0.1.0 .        # the tag `shop export` names by default (shop:VERSION)

# ---- Build: a release binary, with Cargo's downloads and target dir cached between builds ----
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin shop \
    && install -m 0755 target/release/shop /usr/local/bin/shop

# ---- Run: a slim base with the binary, curl for compose healthchecks, and a non-root user ----
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 shop \
    && useradd --system --uid 10001 --gid shop --home-dir /data --no-create-home --shell /usr/sbin/nologin shop \
    && mkdir -p /data /etc/shop/fixtures \
    && chown shop:shop /data
COPY --from=build /usr/local/bin/shop /usr/local/bin/shop
# Fixtures ship in the image too, for `docker run` by hand; the manifests mount their own.
COPY fixtures/ /usr/share/shop/fixtures/
# Numeric, so Kubernetes can check `runAsNonRoot`. /data is where each service keeps its
# SQLite file (a volume), and a fresh named volume takes this directory's owner.
USER 10001:10001
WORKDIR /data
EXPOSE 8080
# For `docker run` by hand, where nothing else probes the service: its liveness endpoint on
# SHOP_PORT (8080 unless set). The exports bring their own probes at the stack's timing.
HEALTHCHECK --interval=10s --timeout=2s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${SHOP_PORT:-8080}/healthz" || exit 1
ENTRYPOINT ["shop"]
CMD ["--help"]
