# remedy's image: a static-ish Rust binary on distroless, non-root, no shell.
# Build: docker build --build-arg REMEDY_REVISION=$(git rev-parse --short=12 HEAD) -t remedy .
# (.git stays out of the context, so build.rs takes the revision from REMEDY_REVISION.)

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Dependencies first, against placeholder sources, so code changes reuse this layer. Both
# builds go through scripts/build: release, optimised with the execution profile in pgo/.
COPY Cargo.toml Cargo.lock build.rs ./
COPY scripts/build ./scripts/build
COPY pgo ./pgo
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for b in record route render; do echo 'fn main() {}' > "benches/$b.rs"; done \
    && scripts/build \
    && rm -rf src benches
COPY src ./src
COPY benches ./benches
COPY config ./config
ARG REMEDY_REVISION=unknown
ENV REMEDY_REVISION=${REMEDY_REVISION}
# The same command scripts/test runs, so the tested binary is the shipped one.
RUN touch src/main.rs src/lib.rs && scripts/build

FROM gcr.io/distroless/cc-debian12:nonroot
ARG REMEDY_REVISION=unknown
LABEL org.opencontainers.image.title="remedy" \
      org.opencontainers.image.description="Prometheus exporter sidecar that counts a data connector's API responses by source, status and the FAQ's remediation key" \
      org.opencontainers.image.source="https://github.com/remedy-sidecar/remedy" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${REMEDY_REVISION}"
COPY --from=build /src/target/release/remedy /usr/local/bin/remedy
COPY config/remedy.yaml /etc/remedy/remedy.yaml
USER 65532:65532
# 8780: the connector's proxy listener; 9780: /metrics and the admin endpoints.
EXPOSE 8780 9780
ENTRYPOINT ["remedy"]
CMD ["run", "--config", "/etc/remedy/remedy.yaml"]
