use which::which;

/// Building this crate depends on the `bpf-linker` binary, which cargo cannot
/// see; rebuild whenever the linker found on PATH changes.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!(
            "cargo:warning=bpf-linker not found on PATH; run `cargo xtask setup` to install it"
        ),
    }
}
