//! Shared by the integration tests: building the C test module, scratch directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh scratch directory for test `tag`.
pub(crate) fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ovrs-plugin-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Compiles C source `src` into a shared object `name` in `dir` with the system `gcc`;
/// `None` (with the reason printed) when there is no `gcc`.
pub(crate) fn build_so(src: &Path, dir: &Path, name: &str) -> Option<PathBuf> {
    let out = dir.join(name);
    let st = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
        .arg(&out)
        .arg(src)
        .status();
    match st {
        Ok(s) if s.success() => Some(out),
        Ok(s) => panic!("gcc failed on {}: {s}", src.display()),
        Err(e) => {
            eprintln!("SKIP: no gcc to build the test module ({e})");
            None
        }
    }
}

/// The C test module (tests/test_plugin.c) built into `dir`.
pub(crate) fn test_module(dir: &Path) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/test_plugin.c");
    build_so(&src, dir, "ovrs-test-plugin.so")
}

/// Waits up to `secs` for `path` to hold a non-empty text, and returns it.
pub(crate) fn wait_for_text(path: &Path, secs: u64) -> Option<String> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Ok(t) = std::fs::read_to_string(path) {
            if !t.trim().is_empty() {
                return Some(t);
            }
        }
        if std::time::Instant::now() >= end {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
