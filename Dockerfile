# syntax=docker/dockerfile:1
# kvinject's image: one static binary on a distroless base. No shell, no package manager, runs as
# a non-root user and writes nothing to its root filesystem (the chart mounts it read-only).
# Base images are named by tag: their digests cannot be resolved where this project's CI runs;
# docs/security.md says how a release pins them by digest.

# Build stage: glibc is linked in (crt-static), so the binary needs no shared library at run time;
# build.rs packs its relocations (KVINJECT_PACK_RELOCS=1: glibc 2.36 or later, as bookworm's).
# --target keeps RUSTFLAGS off build scripts and proc-macros, which must stay dynamic.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS="-C target-feature=+crt-static" KVINJECT_PACK_RELOCS=1 \
    cargo build --release --locked --target x86_64-unknown-linux-gnu \
    && cp target/x86_64-unknown-linux-gnu/release/kvinject /kvinject

# Run stage: CA certificates, /etc/passwd with the nonroot user, nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="kvinject" \
      org.opencontainers.image.description="Admission webhook that injects Azure Key Vault objects into pods through the Secrets Store CSI driver" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /kvinject /kvinject
USER 65532:65532
# mimalloc commits memory as it is used, not whole arenas up front, and returns what is freed
# after 10 ms rather than 1 s (the same RSS as glibc's malloc; see docs/performance.md).
ENV MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=10
# HTTPS admission (8443) and plain-HTTP health and metrics (8080).
EXPOSE 8443 8080
ENTRYPOINT ["/kvinject"]
