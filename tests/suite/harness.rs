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

/// `lockstep train CFG --out OUT EXTRA...`, which must succeed.
pub fn train(cfg: &Path, out: &Path, extra: &[&str]) -> Output {
    train_expecting(cfg, out, extra, true)
}

/// `lockstep train CFG --out OUT EXTRA...`, which must fail.
pub fn train_fails(cfg: &Path, out: &Path, extra: &[&str]) -> Output {
    train_expecting(cfg, out, extra, false)
}

fn train_expecting(cfg: &Path, out: &Path, extra: &[&str], ok: bool) -> Output {
    let mut args = vec![
        "train",
        cfg.to_str().expect("utf-8 path"),
        "--out",
        out.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    lockstep(&args, ok)
}

/// Panics naming the first of `names` whose bytes differ between run directories `a` and `b`.
pub fn assert_same_files(a: &Path, b: &Path, names: &[&str]) {
    for n in names {
        let (x, y) = (std::fs::read(a.join(n)), std::fs::read(b.join(n)));
        let (x, y) = (
            x.unwrap_or_else(|e| panic!("{}/{n}: {e}", a.display())),
            y.unwrap_or_else(|e| panic!("{}/{n}: {e}", b.display())),
        );
        assert!(
            x == y,
            "{n} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// `n` CSV rows of a 4x4, 3-class toy data set: pixel `j` of row `i` is `(i*a + j*b + salt) % 17`,
/// the label `(i + salt) % 3`.
pub fn csv_rows(n: usize, salt: usize, a: usize, b: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let px: Vec<String> = (0..16)
                .map(|j| ((i * a + j * b + salt) % 17).to_string())
                .collect();
            format!("{},{}", px.join(","), (i + salt) % 3)
        })
        .collect()
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

/// Whether this is a CI run (`CI` set to anything but "", "0" or "false"), where every check
/// must run: a missing dependency fails the test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Gate a check on something this machine may lack. Returns `available`; when it is false:
/// under CI the test panics naming `what` and `fix`; elsewhere the skip is printed and appended
/// to `$LOCKSTEP_SKIP_LOG`, which `scripts/test.sh` counts into its summary line
/// (`N passed, N failed, N skipped`).
pub fn require(available: bool, what: &str, fix: &str) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("CI=true and {what} cannot run: {fix}");
    }
    eprintln!("\n!!! SKIPPING {what} ({fix}) !!!\n");
    if let Some(log) = std::env::var_os("LOCKSTEP_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{what}");
        }
    }
    false
}

/// `require` for the wgpu backend (lavapipe on a machine without a GPU).
pub fn require_wgpu(what: &str) -> bool {
    require(
        lockstep_train::backend::wgpu_available(),
        what,
        "no Vulkan adapter: install mesa-vulkan-drivers (scripts/setup.sh does)",
    )
}

pub const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// `require` for Debian's Fashion-MNIST files.
pub fn require_fashion(what: &str) -> bool {
    require(
        Path::new(FASHION_DIR)
            .join("t10k-images-idx3-ubyte.gz")
            .exists(),
        what,
        "dataset-fashion-mnist is not installed (scripts/setup.sh installs it)",
    )
}

/// The Python interpreter for reference checks: `$LOCKSTEP_PYTHON` (scripts/test.sh points it at
/// its venv with numpy, safetensors and mlflow-skinny), else `python3`.
pub fn python() -> Command {
    Command::new(std::env::var_os("LOCKSTEP_PYTHON").unwrap_or_else(|| "python3".into()))
}

/// `require` for Python modules (`import <modules>` must succeed in `python()`).
pub fn require_python(modules: &str, what: &str) -> bool {
    let ok = python()
        .args(["-c", &format!("import {modules}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    require(
        ok,
        what,
        &format!(
            "{} cannot import {modules}: run the tests through scripts/test.sh (its venv has them) or set LOCKSTEP_PYTHON",
            std::env::var("LOCKSTEP_PYTHON").unwrap_or_else(|_| "python3".into())
        ),
    )
}

/// `lockstep predict ARGS...` (must succeed): the logits of every output line, in order.
pub fn predict_logits(args: &[&str]) -> Vec<f32> {
    let mut all = vec!["predict"];
    all.extend_from_slice(args);
    let o = lockstep(&all, true);
    String::from_utf8(o.stdout)
        .expect("utf-8 output")
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
            v["logits"]
                .as_array()
                .expect("a logits array")
                .iter()
                .map(|x| x.as_f64().expect("a number") as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A small trained CSV job (4x4 inputs, 3 classes, `standardize`, MLP [8], 3 epochs) in `dir`:
/// `dir/train.csv` (150 rows), `dir/test.csv` (23 rows), the run in `dir/run`.
pub struct CsvJob {
    pub train: PathBuf,
    pub test: PathBuf,
    pub run: PathBuf,
}

pub fn csv_job(dir: &Path) -> CsvJob {
    let rows = |n: usize, salt: usize| csv_rows(n, salt, 5, 11).join("\n");
    let (train, test) = (dir.join("train.csv"), dir.join("test.csv"));
    std::fs::write(&train, rows(150, 0)).expect("write train.csv");
    std::fs::write(&test, rows(23, 4)).expect("write test.csv");
    let text = format!(
        "seed = 5\n[data]\ndataset = \"csv\"\ntrain_path = \"{}\"\ntest_path = \"{}\"\nimage_shape = [1, 4, 4]\nclasses = 3\nnormalize = \"standardize\"\n[model]\nkind = \"mlp\"\nhidden = [8]\n[optimizer]\nkind = \"adam\"\nlr = 0.01\n[train]\nbatch_size = 16\nepochs = 3\n",
        train.display(),
        test.display()
    );
    let cfg = write_config(dir, "csv.toml", &text);
    let run = dir.join("run");
    crate::harness::train(&cfg, &run, &[]);
    CsvJob { train, test, run }
}
