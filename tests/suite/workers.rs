//! Data parallelism (`train.shards`, `mpirun -n N lockstep train`): the same bits without MPI and
//! on 1, 2 and 4 MPI workers (digits MLP with dropout, the Fashion CNN, the GPT), a stop under one
//! worker count resumed under another, a killed worker, and bad launches — all through the real
//! binary and Open MPI's `mpirun` (`--oversubscribe`: 4 ranks on a 2-core machine).
//!
//! The shard decomposition itself is checked against an independent reference: the first step's
//! loss of a sharded run equals the unsharded run's to a few ULP (the masks and samples are
//! those of the whole batch; only the order of the final sums differs).

use crate::harness::{
    assert_same_files, bin, config, repo, require, require_fashion, stderr, write_config,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `mpirun` with the flags this machine needs: ranks past the core count, and root in CI
/// containers (Open MPI refuses root without it).
fn mpirun(n: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-n", &n.to_string()]);
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env("LOCKSTEP_LOG", "warn");
    c
}

fn have_mpi(what: &str) -> bool {
    let ok = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    require(
        ok,
        what,
        "Open MPI is not installed: scripts/setup.sh installs openmpi-bin and libopenmpi-dev",
    ) && require(
        cfg!(feature = "mpi"),
        what,
        "the binary was built without the `mpi` feature: run the tests through scripts/test.sh (cargo test --release --workspace --features lockstep/mpi)",
    )
}

fn lockstep_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lockstep")
}

/// `mpirun -n N lockstep ARGS... --threads 1`, or plain `lockstep` when `n` is 0.
fn launch(n: usize, args: &[&str]) -> Output {
    let mut c = if n == 0 {
        bin()
    } else {
        let mut c = mpirun(n);
        c.arg(lockstep_bin());
        c
    };
    c.args(args).args(["--threads", "1"]);
    c.output().expect("the launch runs")
}

/// An MPMD job, one rank per entry: `exe train CFG --out OUT --threads 1 EXTRA...` (the
/// `mpirun -n 1 A : -n 1 B` form, where each rank may get its own binary and arguments).
fn mpmd(ranks: &[(&str, &Path, &[&str])], out: &Path) -> Output {
    let mut c = mpirun(1);
    for (i, (exe, cfg, extra)) in ranks.iter().enumerate() {
        if i > 0 {
            c.args([":", "-n", "1"]);
        }
        c.args([exe, "train", s(cfg), "--out", s(out), "--threads", "1"])
            .args(*extra);
    }
    c.output().expect("mpirun runs")
}

/// The shipped digits job for `epochs` epochs, as TOML text.
fn digits(epochs: u32) -> String {
    std::fs::read_to_string(config("digits_mlp.toml"))
        .unwrap()
        .replace("epochs = 20", &format!("epochs = {epochs}"))
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The first training step's loss in `run`'s metrics.
fn first_loss(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    v["loss"].as_f64().unwrap()
}

/// Trains `cfg` without MPI and on 1, 2 and 4 workers; every run must give the bytes of the
/// first. Returns the run directories.
fn same_on_every_worker_count(dir: &Path, cfg: &Path, counts: &[usize]) -> Vec<PathBuf> {
    let runs: Vec<PathBuf> = counts
        .iter()
        .map(|&n| {
            let out = dir.join(format!("n{n}"));
            let o = launch(n, &["train", s(cfg), "--out", s(&out)]);
            ok(&o, &format!("{} on {n} workers", cfg.display()));
            out
        })
        .collect();
    for r in &runs[1..] {
        assert_same_files(
            &runs[0],
            r,
            &["final.safetensors", "metrics.jsonl", "scores.json"],
        );
    }
    runs
}

fn with_shards(text: &str, shards: usize) -> String {
    text.replace("[train]\n", &format!("[train]\nshards = {shards}\n"))
}

#[test]
fn digits_mlp_with_dropout_gives_the_same_bits_without_mpi_and_on_1_2_and_4_workers() {
    if !have_mpi("the digits MLP on 1, 2 and 4 MPI workers") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = digits(3);
    assert!(text.contains("dropout = 0.1") && text.contains("batch_size = 32"));
    let cfg = write_config(dir.path(), "s4.toml", &with_shards(&text, 4));
    let runs = same_on_every_worker_count(dir.path(), &cfg, &[0, 1, 2, 4]);
    // Blocks that are not a power of two (6 shards on 2 workers: 3 each, the whole tree on the
    // host) and that are (on 3: 2 each, reduced on each worker's device first): the same bits.
    let s6 = write_config(
        dir.path(),
        "s6.toml",
        &with_shards(&text.replace("batch_size = 32", "batch_size = 48"), 6),
    );
    let d6 = dir.path().join("s6");
    std::fs::create_dir(&d6).unwrap();
    same_on_every_worker_count(&d6, &s6, &[0, 2, 3]);
    // Placement is recorded, not hashed.
    let m = std::fs::read_to_string(runs[3].join("manifest.json")).unwrap();
    assert!(m.contains("\"workers\": 4"), "{m}");
    // Against the unsharded run: the same samples and dropout masks, so the first loss differs
    // only by the order of the last sums (a different mask would move it by ~1e-2).
    let plain = write_config(dir.path(), "s1.toml", &text);
    let one = dir.path().join("s1");
    ok(
        &launch(0, &["train", s(&plain), "--out", s(&one)]),
        "unsharded",
    );
    let (a, b) = (first_loss(&one), first_loss(&runs[0]));
    assert!(
        (a - b).abs() <= 4e-6 * a.abs(),
        "unsharded {a}, 4 shards {b}"
    );
    // The sharded job is another computation (its gradient sums differ): not the same bits.
    assert_ne!(
        std::fs::read(one.join("final.safetensors")).unwrap(),
        std::fs::read(runs[0].join("final.safetensors")).unwrap()
    );
}

#[test]
fn the_fashion_cnn_and_the_gpt_give_the_same_bits_on_1_2_and_4_workers() {
    if !have_mpi("the CNN and GPT on MPI workers") || !require_fashion("the CNN on MPI workers") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cnn = std::fs::read_to_string(config("fashion_cnn.toml"))
        .unwrap()
        .replace("[train]\n", "[train]\nmax_steps = 4\n");
    let cnn = write_config(dir.path(), "cnn.toml", &with_shards(&cnn, 4));
    let d = dir.path().join("cnn");
    std::fs::create_dir(&d).unwrap();
    same_on_every_worker_count(&d, &cnn, &[0, 1, 2, 4]);
    // The GPT: batch 4 in 4 shards of one sequence each, dropout on.
    let gpt = crate::gpt::short_gpt(&repo().join("README.md"), "")
        .replace("max_steps = 30", "max_steps = 6")
        .replace("checkpoint_every = 10", "checkpoint_every = 3");
    let gpt = write_config(dir.path(), "gpt.toml", &with_shards(&gpt, 4));
    let d = dir.path().join("gpt");
    std::fs::create_dir(&d).unwrap();
    same_on_every_worker_count(&d, &gpt, &[0, 1, 2, 4]);
}

/// The digits job in 4 shards for `epochs`, checkpointing every `every` steps, and its
/// uninterrupted run in one process: (config, run directory).
fn digits_in_4_shards(dir: &Path, epochs: u32, every: u32) -> (PathBuf, PathBuf) {
    let text = digits(epochs).replace(
        "checkpoint_every = 100",
        &format!("checkpoint_every = {every}"),
    );
    let cfg = write_config(dir, "s4.toml", &with_shards(&text, 4));
    let whole = dir.join("whole");
    ok(&launch(0, &["train", s(&cfg), "--out", s(&whole)]), "whole");
    (cfg, whole)
}

#[test]
fn a_run_stopped_on_2_workers_resumes_on_4_and_the_reverse_with_the_uninterrupted_bytes() {
    if !have_mpi("stop and resume across worker counts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cfg, whole) = digits_in_4_shards(dir.path(), 2, 25);
    for (first, then, name) in [(2, 4, "2-then-4"), (4, 2, "4-then-2"), (2, 0, "2-then-1")] {
        let out = dir.path().join(name);
        let o = launch(
            first,
            &["train", s(&cfg), "--out", s(&out), "--max-steps", "40"],
        );
        ok(&o, name);
        assert!(!out.join("final.safetensors").exists());
        ok(&launch(then, &["resume", s(&out)]), name);
        assert_same_files(
            &whole,
            &out,
            &["final.safetensors", "metrics.jsonl", "scores.json"],
        );
    }
}

#[test]
fn a_killed_worker_ends_the_job_and_a_resume_on_any_count_reaches_the_uninterrupted_bytes() {
    if !have_mpi("a killed MPI worker") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cfg, whole) = digits_in_4_shards(dir.path(), 40, 50);
    let out = dir.path().join("killed");
    let job = mpirun(2)
        .arg(lockstep_bin())
        .args(["train", s(&cfg), "--out", s(&out), "--threads", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for a checkpoint, then SIGKILL rank 1 (the rank that does not write).
    let t0 = std::time::Instant::now();
    let ckpts = out.join("checkpoints");
    while std::fs::read_dir(&ckpts).map_or(0, |d| d.count()) < 2 {
        assert!(t0.elapsed().as_secs() < 120, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let rank1 = rank_pid(&out, 1).expect("rank 1 is running");
    let killed = Command::new("kill")
        .args(["-KILL", &rank1.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = job.wait_with_output().unwrap();
    assert!(!o.status.success(), "the job must fail when a worker dies");
    let e = stderr(&o);
    assert!(
        e.contains("signal 9") || e.contains("Killed") || e.contains("killed"),
        "no clear message about the killed worker:\n{e}"
    );
    assert!(!out.join("final.safetensors").exists());
    // The newest checkpoint is whole, and any worker count dividing 4 finishes the run.
    ok(
        &launch(4, &["resume", s(&out)]),
        "resume on 4 after the kill",
    );
    assert_same_files(
        &whole,
        &out,
        &["final.safetensors", "metrics.jsonl", "scores.json"],
    );
}

/// The pid of the lockstep process that is rank `rank` of the job writing `out` (from /proc:
/// its command line names `out`, its environment `OMPI_COMM_WORLD_RANK=rank`).
fn rank_pid(out: &Path, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if !cmd.starts_with(lockstep_bin()) || !cmd.contains(s(out)) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn bad_launches_are_refused_on_every_rank_before_anything_is_written() {
    if !have_mpi("bad MPI launches") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = digits(20);
    // Shards that do not divide the batch: a config error, with or without MPI.
    let bad = write_config(dir.path(), "s5.toml", &with_shards(&text, 5));
    let out = dir.path().join("r");
    for n in [0, 2] {
        let o = launch(n, &["train", s(&bad), "--out", s(&out)]);
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(e.contains("train.shards") && e.contains("32"), "{e}");
        assert!(!e.contains("panicked"), "{e}");
        assert!(!out.exists());
    }
    // A worker count that does not divide the shards: every rank says so, nothing is written.
    let s4 = write_config(dir.path(), "s4.toml", &with_shards(&text, 4));
    let o = launch(3, &["train", s(&s4), "--out", s(&out)]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert_eq!(
        e.matches("3 workers cannot share train.shards = 4").count(),
        3,
        "every rank names the values:\n{e}"
    );
    assert!(
        e.contains("fix: launch a worker count dividing 4 (1, 2, 4)"),
        "{e}"
    );
    assert!(!out.exists());
    // Ranks given different configs (MPMD launch): every rank refuses, nothing is written.
    let other = write_config(
        dir.path(),
        "other.toml",
        &with_shards(&text.replace("seed = 42", "seed = 43"), 4),
    );
    assert_ne!(std::fs::read(&other).unwrap(), std::fs::read(&s4).unwrap());
    let bin = lockstep_bin();
    let o = mpmd(&[(bin, &s4, &[]), (bin, &other, &[])], &out);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert_eq!(
        e.matches("workers disagree on the config file").count(),
        2,
        "every rank names the disagreement:\n{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    assert!(!out.exists());
    // Ranks running different binaries (a copy with one byte appended still runs): refused.
    let copy = dir.path().join("lockstep-copy");
    let mut bytes = std::fs::read(lockstep_bin()).unwrap();
    bytes.push(0);
    std::fs::write(&copy, bytes).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = mpmd(&[(bin, &s4, &[]), (s(&copy), &s4, &[])], &out);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert_eq!(
        e.matches("workers disagree on the lockstep build").count(),
        2,
        "every rank names the disagreement:\n{e}"
    );
    assert!(!out.exists());
    // Resuming a sharded run on a worker count that does not divide its shards.
    let run = dir.path().join("run");
    ok(
        &launch(0, &["train", s(&s4), "--out", s(&run), "--max-steps", "5"]),
        "short run",
    );
    let before = crate::harness::tree(&run, &[]);
    let o = launch(3, &["resume", s(&run)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("3 workers cannot share"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        before,
        crate::harness::tree(&run, &[]),
        "resume changed the run"
    );
}

#[test]
fn a_cpu_rank_and_a_gpu_rank_give_the_bits_of_one_process() {
    if !have_mpi("a CPU rank beside a GPU rank")
        || !crate::harness::require_wgpu("a CPU rank beside a GPU rank")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = digits(1);
    let cfg = write_config(dir.path(), "s4.toml", &with_shards(&text, 4));
    let one = dir.path().join("one");
    ok(
        &launch(0, &["train", s(&cfg), "--out", s(&one)]),
        "one process",
    );
    // MPMD: rank 0 on ndarray, rank 1 on wgpu (lavapipe here; one GPU per rank with --device).
    let out = dir.path().join("mixed");
    let (bin, nd, gp): (_, &[&str], &[&str]) = (
        lockstep_bin(),
        &["--backend", "ndarray"],
        &["--backend", "wgpu"],
    );
    let o = mpmd(&[(bin, &cfg, nd), (bin, &cfg, gp)], &out);
    ok(&o, "ndarray rank + wgpu rank");
    assert_same_files(
        &one,
        &out,
        &["final.safetensors", "metrics.jsonl", "scores.json"],
    );
}
