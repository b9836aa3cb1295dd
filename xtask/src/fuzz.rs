//! `cargo xtask fuzz-smoke [--seconds N] [--seed N] [--target NAME]`: the fuzz targets on
//! stable Rust.
//!
//! cargo-fuzz needs nightly; this runs the same target bodies (`fuzz/targets`, the
//! `openvpn-fuzz-targets` crate, no libfuzzer) over their seeds and fixed-seed mutants for a
//! bounded time (default 20 s) with the `fuzz-smoke` binary of the fuzz workspace. Crashing
//! inputs are saved under `fuzz/artifacts/<target>/`.

use std::process::Command;

use anyhow::Result;

use crate::{cargo, run_checked, workspace_root};

/// Builds and runs `fuzz-smoke`, passing `args` through.
pub(crate) fn smoke(args: &[String]) -> Result<()> {
    let root = workspace_root()?;
    let mut cmd = Command::new(cargo());
    cmd.args([
        "run",
        "--quiet",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--package",
        "openvpn-fuzz-targets",
        "--bin",
        "fuzz-smoke",
        "--",
    ])
    .args(args)
    .current_dir(&root);
    run_checked(&mut cmd)
}
