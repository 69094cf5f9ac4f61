//! Build-time facts for the run manifest: the compiler version and the source's git commit with
//! its dirty flag, taken when the binary is built (not when it runs, and not from wherever the
//! binary happens to be started). Cargo reruns this whenever a source file, the manifests or the
//! git HEAD/index change, so the recorded flag describes the sources this binary was built from.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LOCKSTEP_RUSTC_VERSION={version}");
    // Empty when the sources are not a git checkout (a tarball): the manifest then says unknown.
    let sha = git(&["rev-parse", "HEAD"]).unwrap_or_default();
    let dirty = match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !sha.is_empty() => {
            if s.is_empty() {
                "false"
            } else {
                "true"
            }
        }
        _ => "",
    };
    println!("cargo:rustc-env=LOCKSTEP_GIT_SHA={sha}");
    println!("cargo:rustc-env=LOCKSTEP_GIT_DIRTY={dirty}");
    println!("cargo:rerun-if-changed=build.rs");
    for p in [
        "src",
        "crates",
        "kernels",
        "configs",
        "data",
        "benches",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        for f in ["HEAD", "index", "refs"] {
            println!("cargo:rerun-if-changed={dir}/{f}");
        }
        if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
            println!("cargo:rerun-if-changed={common}/refs");
            println!("cargo:rerun-if-changed={common}/packed-refs");
        }
    }
}
