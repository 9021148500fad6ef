//! Builds the eBPF program (`parallelrun-ebpf`) for the bpf target and drops
//! the object into OUT_DIR, where `capture` embeds it with
//! `include_bytes_aligned!`. With `AYA_BUILD_SKIP=1` (clippy, docs, fuzzing)
//! an empty object is embedded instead and attaching says so.
use aya_build::{Package, Toolchain};
// Not linked: a build dependency only so that cargo reruns this script when
// the eBPF crate changes.
use parallelrun_ebpf as _;

fn main() -> anyhow::Result<()> {
    let ebpf = Package {
        name: "parallelrun-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../parallelrun-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], Toolchain::default())?;
    let skipped = std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true");
    if skipped {
        let out = std::path::Path::new(&std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
            .join("parallelrun");
        std::fs::write(out, [])?;
    }
    Ok(())
}
