#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]
// This file exists so that the agent can name this crate as a build
// dependency: cargo then rebuilds the agent (and, through aya-build, the eBPF
// object) whenever the program changes. Its dependencies are the binary's.
use aya_ebpf as _;
use parallelrun_common as _;
