//! Shared by the build scripts of every component with kernel-side code
//! (`dataplane`, `flowmark`, `tracer`): builds `<component>/ebpf` for
//! bpfel-unknown-none with the nightly pinned in `./ebpf-toolchain` and
//! bpf-linker, through aya-build, so `cargo build` alone yields a userspace
//! binary with its eBPF object embedded (`OUT_DIR/<bin name>`).
use std::{fs, path::Path};

/// `manifest_dir` is the calling crate's CARGO_MANIFEST_DIR (the component
/// folder, directly under the workspace root); `package` the eBPF crate's
/// name. Rebuilds when the eBPF crate, the component's `common` crate or
/// the pinned nightly change.
pub fn build(manifest_dir: &str, package: &str) -> anyhow::Result<()> {
    let component = Path::new(manifest_dir);
    let root = component
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{manifest_dir} has no parent"))?;
    let pin = root.join("ebpf-toolchain");
    let nightly =
        fs::read_to_string(&pin).map_err(|e| anyhow::anyhow!("reading {}: {e}", pin.display()))?;
    println!("cargo::rerun-if-changed={}", pin.display());
    println!(
        "cargo::rerun-if-changed={}",
        component.join("common/src").display()
    );
    let ebpf_dir = component.join("ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: package,
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(nightly.trim()),
    )
}
