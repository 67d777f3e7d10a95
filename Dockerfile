# Berth container image: build the release binary, then run it on a slim Debian base.
#   docker build -t berth .
#   docker run -p 5000:5000 -v berth-data:/var/lib/berth berth
# scripts/container-image.sh builds and tries it where no base image can be pulled.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The benchmark client is a member of the workspace: cargo reads its manifest to resolve
# the workspace, though only the server is built.
COPY bench ./bench
COPY migrations ./migrations
COPY config ./config
# The binary is copied out of target/ so that a build may mount a cache there (buildah build
# --volume, as scripts/container-image.sh does) without the next stage losing it. Without the
# line tables the release profile keeps for profilers (and the standard library's debug
# info): 39 MB instead of 186, symbol names kept for backtraces.
RUN CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked -p berth --bin berth \
    && cp target/release/berth /usr/local/bin/berth

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/berth --create-home berth
COPY --from=build /usr/local/bin/berth /usr/local/bin/berth
COPY config/berth.toml /etc/berth/berth.toml
USER berth
WORKDIR /var/lib/berth
ENV BERTH_CONFIG=/etc/berth/berth.toml \
    BERTH_DATA_DIR=/var/lib/berth
VOLUME ["/var/lib/berth"]
EXPOSE 5000
STOPSIGNAL SIGTERM
ENTRYPOINT ["berth"]
CMD ["serve"]
