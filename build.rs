//! Link settings that depend on how the binary is built.
//!
//! The image's binary links glibc in (`crt-static`, see the Dockerfile): there its relative
//! relocations are packed (RELR, `-z pack-relative-relocs`), which takes 0.6 MB off the binary
//! and off its resident memory at start (docs/performance.md). Only when asked for with
//! `KVINJECT_PACK_RELOCS=1`, as the Dockerfile, `scripts/check-packaging` and `bench/load` do: a
//! static glibc older than 2.36 ignores the packed relocations and the binary would crash at
//! start, and a dynamically linked one with them needs glibc 2.36 to load.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=KVINJECT_PACK_RELOCS");
    let var = |key: &str| std::env::var(key).unwrap_or_default();
    let static_glibc = var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && var("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|feature| feature == "crt-static");
    if static_glibc && var("KVINJECT_PACK_RELOCS") == "1" {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
