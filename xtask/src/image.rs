//! `cargo xtask image`: the agent as an OCI image, built with buildah
//! `FROM scratch`.
//!
//! What the image holds, and nothing else (no shell, no package manager):
//! - the agent at [`BINARY`], the image's entrypoint;
//! - the shared libraries `ldd` lists for it, each copied (dereferenced) at
//!   the path the dynamic loader looks for it;
//! - `/etc/passwd` and `/etc/group` naming the unprivileged user [`USER`]
//!   the agent runs as;
//! - [`WORKDIR`], owned by that user: where relative output paths (the
//!   default mismatch log) land. With a read-only root it must be a volume
//!   (a tmpfs under podman, an emptyDir in Kubernetes).
//!
//! The runtime grants CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (podman
//! `--cap-add`, Kubernetes `securityContext.capabilities.add`). Podman hands
//! them to a non-root user as ambient capabilities, containerd and CRI-O do
//! not: so the binary also carries them as permitted file capabilities
//! ([`FILE_CAPS`], no effective bit, so that a runtime granting fewer does
//! not make the exec fail), and the agent raises them to effective itself
//! (`parallelrun_agent::capabilities`). Either way it holds no more than
//! the runtime's bounding set allows.
//! The working container is removed whatever happens.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, output, status};

/// Where the agent is in the image.
pub const BINARY: &str = "/usr/bin/parallelrun";
/// The unprivileged user and group the agent runs as (distroless' "nonroot").
pub const USER: &str = "65532:65532";
/// The agent's working directory, owned by [`USER`].
pub const WORKDIR: &str = "/var/lib/parallelrun";
/// The binary's file capabilities (`setcap` syntax): permitted only.
pub const FILE_CAPS: &str = "cap_bpf,cap_perfmon,cap_net_admin=p";
/// The tag `cargo xtask image` gives by default.
pub fn default_tag() -> String {
    format!("localhost/parallelrun:{}", env!("CARGO_PKG_VERSION"))
}

/// Builds the image of `binary` as `tag`; with `archive`, also writes it
/// there as an OCI archive (`podman load -i`, `skopeo copy oci-archive:`).
pub fn build(binary: &Path, tag: &str, archive: Option<&Path>) -> Result<()> {
    let libs = shared_libraries(binary)?;
    let staging = util::target_dir()?.join("image");
    let rootfs = stage(&staging, binary, &libs)?;
    let container = WorkingContainer::new()?;
    container.copy(&rootfs, "/", None)?;
    container.copy(&staging.join("workdir"), WORKDIR, Some(USER))?;
    container.config(&labels())?;
    status(Command::new("buildah").args(["commit", "--quiet", &container.name, tag]))?;
    eprintln!("xtask: image {tag} built ({} libraries)", libs.len());
    if let Some(path) = archive {
        let dest = format!("oci-archive:{}:{tag}", path.display());
        status(Command::new("buildah").args(["push", "--quiet", tag, &dest]))?;
        eprintln!("xtask: image written to {}", path.display());
    }
    Ok(())
}

/// The libraries the dynamic loader maps for `binary`, loader included, as
/// absolute paths (`ldd`).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let text = output(Command::new("ldd").arg(binary)).with_context(|| {
        format!(
            "`ldd {}` failed: is it a dynamically linked binary of this machine?",
            binary.display()
        )
    })?;
    let libs = parse_ldd(&text).map_err(|lib| {
        anyhow::anyhow!(
            "`ldd {}` cannot find {lib}: install it, or the image would not start",
            binary.display()
        )
    })?;
    if libs.is_empty() {
        bail!(
            "`ldd {}` listed no libraries; expected at least libc and the loader",
            binary.display()
        );
    }
    Ok(libs)
}

/// The absolute paths in `ldd` output: `name => /path (addr)` or
/// `/path (addr)` (the loader); the vDSO (no path) is skipped. A library
/// `ldd` cannot find (`name => not found`) is the error, by name.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        let path = match line.split_once("=>") {
            Some((name, rest)) if rest.trim() == "not found" => return Err(name.trim().to_owned()),
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        if let Some(path) = path
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Lays out the image's files under `staging/rootfs` (the agent, its
/// libraries, passwd and group) and an empty `staging/workdir`.
fn stage(staging: &Path, binary: &Path, libs: &[PathBuf]) -> Result<PathBuf> {
    if staging.exists() {
        fs::remove_dir_all(staging)
            .with_context(|| format!("removing the old staging dir {}", staging.display()))?;
    }
    let rootfs = staging.join("rootfs");
    let place = |from: &Path, to: &str| -> Result<()> {
        let dest = rootfs.join(to.trim_start_matches('/'));
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir)?;
        }
        // fs::copy follows symlinks: the file itself lands at the path.
        fs::copy(from, &dest)
            .with_context(|| format!("copying {} into the image", from.display()))?;
        Ok(())
    };
    place(binary, BINARY)?;
    let staged = rootfs.join(BINARY.trim_start_matches('/'));
    status(Command::new("setcap").arg(FILE_CAPS).arg(&staged)).context(
        "setcap failed: build the image as root, with libcap2-bin installed (`cargo xtask setup`)",
    )?;
    for lib in libs {
        place(lib, &lib.display().to_string())?;
    }
    let (uid, gid) = USER.split_once(':').unwrap_or((USER, USER));
    let etc = rootfs.join("etc");
    fs::create_dir_all(&etc)?;
    fs::write(
        etc.join("passwd"),
        format!("parallelrun:x:{uid}:{gid}:parallelrun:{WORKDIR}:/sbin/nologin\n"),
    )?;
    fs::write(etc.join("group"), format!("parallelrun:x:{gid}:\n"))?;
    fs::create_dir_all(staging.join("workdir"))?;
    Ok(rootfs)
}

/// `org.opencontainers.image.*` annotations of the image.
fn labels() -> Vec<(&'static str, String)> {
    let mut labels = vec![
        ("title", "parallelrun".to_owned()),
        (
            "description",
            "Traffic shadowing with eBPF: replays a service's live requests to its new version and compares the responses".to_owned(),
        ),
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("licenses", "MIT OR Apache-2.0".to_owned()),
    ];
    let revision = output(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(util::workspace_root()),
    );
    if let Some(rev) = revision {
        labels.push(("revision", rev.trim().to_owned()));
    }
    labels
}

/// A buildah working container from scratch, removed on drop.
struct WorkingContainer {
    name: String,
}

impl WorkingContainer {
    fn new() -> Result<Self> {
        let name = format!("parallelrun-image-{}", std::process::id());
        status(Command::new("buildah").args(["from", "--quiet", "--name", &name, "scratch"]))
            .context("buildah could not start a container from scratch: run `cargo xtask setup` (it installs buildah)")?;
        Ok(Self { name })
    }

    /// Copies the contents of `from` to `to` in the container, owned by
    /// `chown` (root when None).
    fn copy(&self, from: &Path, to: &str, chown: Option<&str>) -> Result<()> {
        let mut cmd = Command::new("buildah");
        cmd.args(["copy", "--quiet"]);
        if let Some(owner) = chown {
            cmd.args(["--chown", owner]);
        }
        cmd.arg(&self.name).arg(from).arg(to);
        status(&mut cmd)
    }

    fn config(&self, labels: &[(&str, String)]) -> Result<()> {
        let mut cmd = Command::new("buildah");
        cmd.arg("config")
            .args(["--user", USER])
            .args(["--workingdir", WORKDIR])
            .args(["--entrypoint", &format!("[\"{BINARY}\"]")])
            .arg("--cmd=[\"--help\"]")
            .args(["--port", "9464/tcp"])
            .args(["--env", "RUST_LOG=info"]);
        for (key, value) in labels {
            cmd.arg("--label")
                .arg(format!("org.opencontainers.image.{key}={value}"));
        }
        cmd.arg(&self.name);
        status(&mut cmd)
    }
}

impl Drop for WorkingContainer {
    fn drop(&mut self) {
        let removed = Command::new("buildah")
            .args(["rm", &self.name])
            .output()
            .is_ok_and(|o| o.status.success());
        if !removed {
            eprintln!(
                "xtask: could not remove the working container {}; `buildah rm {}` does",
                self.name, self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_with_the_loader_and_without_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0d)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f0f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_library_ldd_cannot_find_is_named() {
        let text =
            "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n\tlibfoo.so.2 => not found\n";
        assert_eq!(parse_ldd(text), Err("libfoo.so.2".to_owned()));
    }
}
