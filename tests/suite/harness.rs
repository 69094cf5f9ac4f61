//! Running the real `lockstep` binary in temporary directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockstep"));
    c.env("LOCKSTEP_LOG", "warn");
    c
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn config(name: &str) -> PathBuf {
    repo().join("configs").join(name)
}

/// Run `lockstep` with `args`, returning the output; panics with both streams if `ok` mismatches.
pub fn lockstep(args: &[&str], ok: bool) -> Output {
    let out = bin().args(args).output().expect("the lockstep binary runs");
    if out.status.success() != ok {
        panic!(
            "lockstep {args:?}: expected success={ok}, got {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Write `text` as a config file in `dir` and return its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

/// A fast variant of the shipped digits job (few steps) as TOML text.
pub fn short_digits(extra_train: &str) -> String {
    let base = std::fs::read_to_string(config("digits_mlp.toml")).expect("shipped config");
    let base = base
        .replace("epochs = 20", "epochs = 2")
        .replace("eval_every = 100", "eval_every = 20")
        .replace("checkpoint_every = 100", "checkpoint_every = 25");
    format!("{base}\n{extra_train}").replace("[train]\n", "[train]\n")
}

/// Every file in `dir` (recursively) with its bytes, relative names sorted; skips `skip` names.
pub fn tree(dir: &Path, skip: &[&str]) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, d: &Path, skip: &[&str], out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(d)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p
                .strip_prefix(base)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            if skip.iter().any(|s| name == *s || name.ends_with(s)) {
                continue;
            }
            if p.is_dir() {
                walk(base, &p, skip, out);
            } else {
                out.push((name, std::fs::read(&p).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, skip, &mut out);
    out
}

/// `short_digits` with burn's stock kernels instead of the default lockstep set.
pub fn stock_digits() -> String {
    let t = short_digits("").replace("kernels = \"lockstep\"", "kernels = \"burn\"");
    assert!(t.contains("kernels = \"burn\""));
    t
}
