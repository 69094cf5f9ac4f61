//! Bad input through the real CLI: a clear message naming the input, a non-zero exit, no
//! panic, and nothing on disk modified.

use crate::harness::{
    assert_same_files, config, lockstep, short_digits, stderr, tree, write_config,
};

fn assert_clean_failure(o: &std::process::Output, must_name: &str) {
    let e = stderr(o);
    assert!(!o.status.success());
    assert!(!e.contains("panicked"), "panic instead of an error:\n{e}");
    assert!(
        e.contains(must_name),
        "error does not name {must_name:?}:\n{e}"
    );
}

#[test]
fn unknown_key_and_wrong_type_fail_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = write_config(
        dir.path(),
        "bad.toml",
        &short_digits("").replace("[model]\n", "[model]\nwidth = 3\n"),
    );
    let o = lockstep(
        &[
            "train",
            p.to_str().unwrap(),
            "--out",
            dir.path().join("r").to_str().unwrap(),
        ],
        false,
    );
    assert_clean_failure(&o, "width");
    assert!(
        !dir.path().join("r").exists(),
        "a failed config must not create the run directory"
    );
    let p = write_config(
        dir.path(),
        "bad2.toml",
        &short_digits("").replace("batch_size = 32", "batch_size = 3.5"),
    );
    let o = lockstep(
        &[
            "train",
            p.to_str().unwrap(),
            "--out",
            dir.path().join("r").to_str().unwrap(),
        ],
        false,
    );
    assert_clean_failure(&o, "bad2.toml");
}

#[test]
fn missing_config_and_missing_data_fail_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = lockstep(&["train", "/nonexistent/job.toml"], false);
    assert_clean_failure(&o, "/nonexistent/job.toml");
    let text = std::fs::read_to_string(config("fashion_mlp.toml"))
        .unwrap()
        .replace("/usr/share/datasets/fashion-mnist", "/nonexistent/fmnist");
    let p = write_config(dir.path(), "f.toml", &text);
    let o = lockstep(
        &[
            "train",
            p.to_str().unwrap(),
            "--out",
            dir.path().join("r").to_str().unwrap(),
        ],
        false,
    );
    assert_clean_failure(&o, "/nonexistent/fmnist");
    assert!(!dir.path().join("r").exists());
}

#[test]
fn bad_flags_fail_cleanly() {
    let o = lockstep(
        &[
            "train",
            config("digits_mlp.toml").to_str().unwrap(),
            "--backend",
            "tpu",
        ],
        false,
    );
    assert_clean_failure(&o, "tpu");
    let o = lockstep(
        &[
            "train",
            config("digits_mlp.toml").to_str().unwrap(),
            "--threads",
            "many",
        ],
        false,
    );
    assert_clean_failure(&o, "many");
}

#[test]
fn existing_run_directory_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = write_config(dir.path(), "j.toml", &short_digits(""));
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    lockstep(
        &[
            "train",
            p.to_str().unwrap(),
            "--out",
            run_s,
            "--max-steps",
            "30",
        ],
        true,
    );
    let before = tree(&run, &[]);
    let o = crate::harness::train_fails(&p, &run, &[]);
    assert_clean_failure(&o, run_s);
    assert_eq!(
        before,
        tree(&run, &[]),
        "a refused train modified the run directory"
    );
    // A plain file in the way is not clobbered either.
    let f = dir.path().join("file");
    std::fs::write(&f, b"keep").unwrap();
    let o = crate::harness::train_fails(&p, &f, &[]);
    assert_clean_failure(&o, "file");
    assert_eq!(std::fs::read(&f).unwrap(), b"keep");
    // A directory holding someone's own config.toml (no lockstep .lock) is not a dead start.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("config.toml"), b"mine").unwrap();
    let o = crate::harness::train_fails(&p, &foreign, &[]);
    assert_clean_failure(&o, "foreign");
    assert_eq!(std::fs::read(foreign.join("config.toml")).unwrap(), b"mine");
}

/// A start killed before its manifest was written (the crash harness lands there) leaves `.lock`,
/// an empty `checkpoints/`, `config.toml`, an empty `metrics.jsonl` and temp files: `train` must
/// start over in it rather than refuse, and the result equals a run into a fresh directory.
#[test]
fn a_start_killed_before_its_manifest_can_be_restarted() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = write_config(dir.path(), "j.toml", &short_digits(""));
    let fresh = dir.path().join("fresh");
    let dead = dir.path().join("dead");
    std::fs::create_dir_all(dead.join("checkpoints")).unwrap();
    std::fs::write(dead.join(".lock"), b"").unwrap();
    std::fs::write(dead.join("config.toml"), b"half").unwrap();
    std::fs::write(dead.join("metrics.jsonl"), b"").unwrap();
    std::fs::write(dead.join(".manifest.json.tmp-12345"), b"{\"trunc").unwrap();
    for out in [&fresh, &dead] {
        crate::harness::train(&p, out, &[]);
    }
    assert_eq!(
        std::fs::read(fresh.join("final.safetensors")).unwrap(),
        std::fs::read(dead.join("final.safetensors")).unwrap()
    );
    assert!(!dead.join(".manifest.json.tmp-12345").exists());
}

#[test]
fn corrupt_and_foreign_checkpoints_are_refused_on_resume() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = write_config(dir.path(), "j.toml", &short_digits(""));
    let run = dir.path().join("run");
    lockstep(
        &[
            "train",
            p.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--max-steps",
            "50",
        ],
        true,
    );
    let ck = run.join("checkpoints/step-0000050.safetensors");
    let good = std::fs::read(&ck).unwrap();
    // (a) one flipped bit in the data section
    let mut flipped = good.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x10;
    std::fs::write(&ck, &flipped).unwrap();
    let snapshot = tree(&run, &[]);
    let o = lockstep(&["resume", run.to_str().unwrap()], false);
    assert_clean_failure(&o, "step-0000050.safetensors");
    assert!(stderr(&o).contains("checksum"), "{}", stderr(&o));
    assert_eq!(
        snapshot,
        tree(&run, &[]),
        "a refused resume modified the run directory"
    );
    // (b) truncated
    std::fs::write(&ck, &good[..good.len() / 2]).unwrap();
    let o = lockstep(&["resume", run.to_str().unwrap()], false);
    assert_clean_failure(&o, "step-0000050.safetensors");
    // (c) inspect names the file too
    let o = lockstep(&["inspect", ck.to_str().unwrap()], false);
    assert_clean_failure(&o, "step-0000050.safetensors");
    std::fs::write(&ck, &good).unwrap();
    lockstep(&["inspect", ck.to_str().unwrap()], true);
}

#[test]
fn checkpoint_of_a_different_model_shape_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let small = write_config(
        dir.path(),
        "small.toml",
        &short_digits("").replace("hidden = [128, 64]", "hidden = [16]"),
    );
    let big = write_config(dir.path(), "big.toml", &short_digits(""));
    let (ra, rb) = (dir.path().join("a"), dir.path().join("b"));
    lockstep(
        &[
            "train",
            small.to_str().unwrap(),
            "--out",
            ra.to_str().unwrap(),
            "--max-steps",
            "25",
        ],
        true,
    );
    lockstep(
        &[
            "train",
            big.to_str().unwrap(),
            "--out",
            rb.to_str().unwrap(),
            "--max-steps",
            "25",
        ],
        true,
    );
    // Put run a's checkpoint into run b: its identity and shapes differ.
    let foreign = std::fs::read(ra.join("checkpoints/step-0000025.safetensors")).unwrap();
    let target = rb.join("checkpoints/step-0000025.safetensors");
    std::fs::write(&target, foreign).unwrap();
    let o = lockstep(&["resume", rb.to_str().unwrap()], false);
    assert_clean_failure(&o, "step-0000025.safetensors");
}

/// Rewrite tensor `name` of the checkpoint at `path` through `f` (a valid lockstep file again:
/// canonical layout and checksum).
fn edit_checkpoint(path: &std::path::Path, name: &str, f: impl Fn(&mut [f32])) {
    let mut file = lockstep_core::TensorFile::read(path).unwrap();
    let entry = file.tensors.get_mut(name).unwrap();
    let mut v = entry.to_f32().unwrap();
    f(&mut v);
    *entry = lockstep_core::tensorfile::TensorEntry::from_f32(entry.shape.clone(), &v);
    std::fs::write(path, file.to_bytes_with_checksum()).unwrap();
}

/// A checkpoint holding subnormals loads with them flushed to signed zero (the same run as from
/// the flushed file, and the file itself untouched); one holding NaN is refused with the tensor
/// named and nothing in the run directory changed.
#[test]
fn checkpoints_with_subnormals_load_flushed_and_with_nan_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = write_config(dir.path(), "j.toml", &short_digits(""));
    let base = dir.path().join("base");
    crate::harness::train(&p, &base, &["--max-steps", "50"]);
    let ck = "checkpoints/step-0000050.safetensors";
    let copy = |name: &str| {
        let d = dir.path().join(name);
        for (rel, bytes) in tree(&base, &[]) {
            let to = d.join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(to, bytes).unwrap();
        }
        d
    };
    let (sub, flushed, nan) = (copy("sub"), copy("flushed"), copy("nan"));
    let tiny = [
        f32::from_bits(3),
        -f32::from_bits(0x7f_0000),
        f32::MIN_POSITIVE,
    ];
    edit_checkpoint(&sub.join(ck), "model.l0.weight", |v| {
        v[..3].copy_from_slice(&tiny)
    });
    edit_checkpoint(&sub.join(ck), "optim.v.l1.weight", |v| {
        v[7] = f32::from_bits(1)
    });
    edit_checkpoint(&flushed.join(ck), "model.l0.weight", |v| {
        v[..3].copy_from_slice(&[0.0, -0.0, 0.0])
    });
    edit_checkpoint(&flushed.join(ck), "optim.v.l1.weight", |v| v[7] = 0.0);
    let sub_bytes = std::fs::read(sub.join(ck)).unwrap();
    for run in [&sub, &flushed] {
        lockstep(
            &["resume", run.to_str().unwrap(), "--max-steps", "60"],
            true,
        );
    }
    assert_eq!(
        std::fs::read(sub.join(ck)).unwrap(),
        sub_bytes,
        "loading rewrote the checkpoint"
    );
    assert_same_files(
        &sub,
        &flushed,
        &["checkpoints/step-0000060.safetensors", "metrics.jsonl"],
    );
    edit_checkpoint(&nan.join(ck), "model.l1.bias", |v| v[2] = f32::NAN);
    let snapshot = tree(&nan, &[]);
    let o = lockstep(&["resume", nan.to_str().unwrap()], false);
    assert_clean_failure(&o, "step-0000050.safetensors");
    assert!(stderr(&o).contains("model.l1.bias"), "{}", stderr(&o));
    assert_eq!(
        snapshot,
        tree(&nan, &[]),
        "a refused resume changed the run"
    );
}

/// A data file holding a subnormal value loads and trains: the value is flushed like every input
/// of lockstep's kernels, so the run's model equals the one trained on the same file with a 0
/// there; a NaN pixel is refused naming the file and the line.
#[test]
fn data_with_subnormals_loads_flushed_and_with_nan_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let rows = crate::harness::csv_rows(60, 1, 3, 7);
    let with = |cell: &str| {
        let mut r = rows.clone();
        r[5] = format!("{cell},{}", r[5].split_once(',').unwrap().1);
        r.join("\n")
    };
    let mut models = Vec::new();
    for (name, cell) in [("sub", "1e-40"), ("zero", "0"), ("nan", "nan")] {
        let data = dir.path().join(format!("{name}.csv"));
        std::fs::write(&data, with(cell)).unwrap();
        let cfg = write_config(
            dir.path(),
            &format!("{name}.toml"),
            &format!(
                "seed = 3\n[data]\ndataset = \"csv\"\ntrain_path = \"{}\"\nimage_shape = [1, 4, 4]\nclasses = 3\nnormalize = \"unit\"\n[model]\nkind = \"mlp\"\nhidden = [8]\n[optimizer]\nkind = \"adam\"\nlr = 0.01\n[train]\nbatch_size = 8\nepochs = 2\n",
                data.display()
            ),
        );
        let run = dir.path().join(name);
        if name == "nan" {
            let o = crate::harness::train_fails(&cfg, &run, &[]);
            assert_clean_failure(&o, "nan.csv");
            assert!(stderr(&o).contains("line 6"), "{}", stderr(&o));
            continue;
        }
        crate::harness::train(&cfg, &run, &[]);
        let f = lockstep_core::TensorFile::read(&run.join("final.safetensors")).unwrap();
        let model: Vec<_> = f
            .tensors
            .into_iter()
            .filter(|(k, _)| k.starts_with("model."))
            .collect();
        models.push(model);
    }
    assert_eq!(
        models[0], models[1],
        "the subnormal pixel was not read as 0"
    );
}

/// A wgpu adapter selector the machine lacks: an error listing the adapters present and their
/// selectors (not a panic on cubecl's device thread), exit 1, no run directory.
#[test]
fn an_absent_wgpu_adapter_is_an_error_listing_the_adapters_present() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("r");
    let o = lockstep(
        &[
            "train",
            config("digits_mlp.toml").to_str().unwrap(),
            "--backend",
            "wgpu",
            "--device",
            "discrete:7",
            "--out",
            out.to_str().unwrap(),
        ],
        false,
    );
    assert_clean_failure(&o, "--device discrete:7");
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("adapters present"), "{e}");
    if lockstep_train::backend::wgpu_available() {
        // lavapipe (or the real GPU) is listed with the selector that picks it.
        assert!(e.contains("--device "), "{e}");
        assert!(e.matches("--device").count() >= 2, "{e}");
    }
    assert!(
        !out.exists(),
        "a failed start must not create the run directory"
    );
}

/// `--threads 100000` used to panic spawning threads and then spin forever; now it is refused
/// at once with the bound, and so is the config key.
#[test]
fn absurd_thread_counts_are_refused_with_the_bound() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("r");
    let started = std::time::Instant::now();
    let o = lockstep(
        &[
            "train",
            config("digits_mlp.toml").to_str().unwrap(),
            "--threads",
            "100000",
            "--out",
            out.to_str().unwrap(),
        ],
        false,
    );
    assert_clean_failure(&o, "100000");
    let e = stderr(&o);
    let most = lockstep_train::backend::max_threads(
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    assert!(e.contains(&format!("more than {most}")), "{e}");
    assert!(
        started.elapsed().as_secs() < 60,
        "refusal took {:?}",
        started.elapsed()
    );
    assert!(!out.exists());
    let p = write_config(
        dir.path(),
        "t.toml",
        &short_digits("").replace("threads = 0", "threads = 100000"),
    );
    let o = lockstep(
        &["train", p.to_str().unwrap(), "--out", out.to_str().unwrap()],
        false,
    );
    assert_clean_failure(&o, "train.threads");
    assert!(!out.exists());
    // Threads the OS cannot start: an error, not a hang or an abort. Under a 150 MB
    // address-space limit about 75 MB is left when the pool is sized, and 64 threads' stacks
    // need 144 MB, so the pre-flight check refuses before any thread exists. (Spawning into
    // the shortage instead raced: a thread the OS created but could not give a signal stack
    // aborted the process inside the standard library, seen once in CI at 180 MB.)
    let has_prlimit = std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if crate::harness::require(
        has_prlimit,
        "the thread start-up failure check",
        "prlimit (util-linux) is not installed",
    ) {
        let o = std::process::Command::new("prlimit")
            .arg(format!("--as={}", 150 << 20))
            .arg(env!("CARGO_BIN_EXE_lockstep"))
            .args([
                "train",
                config("digits_mlp.toml").to_str().unwrap(),
                "--threads",
                "64",
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_clean_failure(&o, "cannot start a pool of 64 threads");
        assert!(stderr(&o).contains("RLIMIT_AS"), "{}", stderr(&o));
        assert!(!out.exists());
    }
}
