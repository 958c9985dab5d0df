//! Link settings that depend on how the binary is built.
//!
//! The image's binary links glibc in (`crt-static`, see the Dockerfile): there its relative
//! relocations are packed (RELR, `-z pack-relative-relocs`), which takes 0.6 MB off the binary
//! and off its resident memory at start (docs/performance.md). A dynamically linked binary keeps
//! the classic format: with RELR it would need glibc 2.36 or later to load.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let cfg = |key: &str| std::env::var(key).unwrap_or_default();
    let static_glibc = cfg("CARGO_CFG_TARGET_OS") == "linux"
        && cfg("CARGO_CFG_TARGET_ENV") == "gnu"
        && cfg("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|feature| feature == "crt-static");
    if static_glibc {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
