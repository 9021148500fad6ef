//! Builds the eBPF program (`parallelrun-ebpf`) for the bpf target and drops
//! the object into OUT_DIR, where `capture` embeds it with
//! `include_bytes_aligned!`. Set `AYA_BUILD_SKIP=1` to skip (clippy/doc runs).
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let ebpf = Package {
        name: "parallelrun-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../parallelrun-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], Toolchain::default())
}
