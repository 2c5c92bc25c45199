# syntax=docker/dockerfile:1
# The operator's image: `switchyard run`, as the Helm chart (charts/switchyard) runs it.
#
#   docker build -t ghcr.io/switchyard-dev/switchyard:0.1.0 .
#
# Stage 1 builds a release binary; stage 2 is distroless (glibc and CA certificates, no
# shell, no package manager) and runs it as the nonroot user (uid 65532), which is what
# the chart's securityContext expects.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The whole workspace: Cargo needs every member (testenv) and declared target (benches)
# to read the manifest, even though only the switchyard binary is built.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchyard \
    && install -D -m 0755 target/release/switchyard /out/switchyard

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="switchyard" \
      org.opencontainers.image.description="Kubernetes operator for phased migrations from a legacy system, one cohort at a time"
COPY --from=build /out/switchyard /usr/local/bin/switchyard
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["run"]
