# ferry's container image: built with the Rust image, run on distroless as a non-root user.
#   docker build -t registry.example.com/ferry:0.1.0 .
# The chart runs it with runAsUser 65532, a read-only root filesystem and no capabilities;
# ferry listens on unprivileged ports (8080 HTTP, 8443 TLS, 9180 admin).

FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin ferry \
 && install -D -m 0755 target/release/ferry /out/ferry

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ferry /ferry
USER 65532:65532
EXPOSE 8080 8443 9180
ENTRYPOINT ["/ferry"]
