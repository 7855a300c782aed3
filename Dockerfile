# syntax=docker/dockerfile:1
#
# mailpipe container image: the three workers, the bounce intake and the
# operator CLI in one image. Kubernetes picks the binary with `command:`
# (deploy/base/*.yaml):
#
#   /usr/local/bin/mailpipe-expander
#   /usr/local/bin/mailpipe-sender
#   /usr/local/bin/mailpipe-retrier
#   /usr/local/bin/mailpipe-intake     (bounces and complaints: SMTP and IMAP)
#   /usr/local/bin/mailpipe            (operator CLI, the default entrypoint)
#
# Build:  docker build -t ghcr.io/mailpipe/mailpipe:dev \
#           --build-arg MAILPIPE_COMMIT="$(git rev-parse --short HEAD)" .
# (the build context has no .git: without the argument the metric
# mailpipe_build_info says commit="unknown")
# The runtime image has no shell: run the CLI in a pod with
#   kubectl exec deploy/mailpipe-sender -- /usr/local/bin/mailpipe status ID

# ---- build -----------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ARG MAILPIPE_COMMIT=unknown
ENV MAILPIPE_COMMIT=$MAILPIPE_COMMIT
# Cache mounts keep the registry and the target directory between builds
# (BuildKit); the binaries are copied out of the cached target in the same
# step. Release builds keep line tables (profile.release debug = 1) for
# readable backtraces; the debug sections are compressed, not stripped.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && for bin in mailpipe mailpipe-expander mailpipe-sender mailpipe-retrier mailpipe-intake; do \
      objcopy --compress-debug-sections=zlib "target/release/$bin" "/out/$bin"; \
    done

# ---- runtime ---------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates and tzdata; no shell, no
# package manager. The :nonroot variant's user is 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="mailpipe" \
      org.opencontainers.image.description="Sends email at volume: RabbitMQ -> expander -> sender (SMTP) -> retrier; intake for bounces and complaints" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
# Every key with its default; Kubernetes mounts the ConfigMap generated from
# the same file (plus $MAILPIPE_ENV.yaml) over this directory.
COPY deploy/config/base.yaml /etc/mailpipe/base.yaml
ENV MAILPIPE_CONFIG_DIR=/etc/mailpipe
# Health and metrics ports: expander, sender, retrier, intake; and the
# intake's SMTP listener for the bounce domain (bounces.smtp_listen, an
# unprivileged port: the Service maps 25 to it).
EXPOSE 9101 9102 9103 9104 2526
# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mailpipe"]
CMD ["--help"]
