//! Faults: SIGKILL at many points, hostile bytes into every parser, NaN losses, a full disk, two
//! processes on one run directory. Nothing is lost, nothing corrupt is ever accepted.

use crate::harness::{bin, lockstep, short_digits, stderr, write_config};
use lockstep_core::SeedStream;
use lockstep_train::checkpoint::Checkpoint;
use std::path::Path;
use std::time::Duration;

fn long_job(dir: &Path) -> std::path::PathBuf {
    // ~1800 steps with a checkpoint every 10: kills land in steps, in checkpoint writes and between.
    let text = short_digits("")
        .replace("epochs = 2", "epochs = 40")
        .replace("checkpoint_every = 25", "checkpoint_every = 10");
    write_config(dir, "long.toml", &text)
}

/// Every `.safetensors` under `run` must load and verify.
fn assert_all_checkpoints_readable(run: &Path) -> usize {
    let mut n = 0;
    for d in [run.join("checkpoints"), run.to_path_buf()] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".safetensors") && !name.starts_with('.') {
                Checkpoint::read(&p)
                    .unwrap_or_else(|e| panic!("partial or corrupt checkpoint after a kill: {e}"));
                n += 1;
            }
        }
    }
    n
}

#[test]
fn sigkill_at_many_points_then_resume_gives_the_uninterrupted_bytes() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = long_job(dir.path());
    let reference = dir.path().join("reference");
    crate::harness::train(&cfg, &reference, &[]);
    let want = std::fs::read(reference.join("final.safetensors")).unwrap();
    let want_metrics = std::fs::read(reference.join("metrics.jsonl")).unwrap();
    let mut rng = SeedStream::new(99, "kill-points");
    let mut kills = 0;
    for trial in 0..6 {
        let run = dir.path().join(format!("killed-{trial}"));
        let mut started = false;
        for _attempt in 0..20 {
            let mut cmd = bin();
            if !started {
                cmd.args([
                    "train",
                    cfg.to_str().unwrap(),
                    "--out",
                    run.to_str().unwrap(),
                ]);
            } else {
                cmd.args(["resume", run.to_str().unwrap()]);
            }
            let mut child = cmd
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn");
            let delay = 20 + rng.below(350) as u64;
            std::thread::sleep(Duration::from_millis(delay));
            let finished = child.try_wait().expect("wait").is_some();
            if !finished {
                child.kill().expect("SIGKILL");
                kills += 1;
            }
            let _ = child.wait();
            started = run.join("manifest.json").exists();
            assert_all_checkpoints_readable(&run);
            if run.join("final.safetensors").exists() {
                break;
            }
        }
        if !run.join("final.safetensors").exists() {
            let args: Vec<&str> = if started {
                vec!["resume", run.to_str().unwrap()]
            } else {
                vec![
                    "train",
                    cfg.to_str().unwrap(),
                    "--out",
                    run.to_str().unwrap(),
                ]
            };
            lockstep(&args, true);
        }
        assert!(
            std::fs::read(run.join("final.safetensors")).unwrap() == want,
            "trial {trial}: resumed final differs from the uninterrupted run"
        );
        assert!(
            std::fs::read(run.join("metrics.jsonl")).unwrap() == want_metrics,
            "trial {trial}: metrics differ"
        );
    }
    eprintln!(
        "crash harness: {kills} SIGKILLs survived, every checkpoint readable, finals byte-identical"
    );
    assert!(
        kills >= 10,
        "only {kills} kills landed; the job finished too fast to test"
    );
}

/// Mutation fuzzing (deterministic, bounded) of every parser of untrusted bytes: the checkpoint
/// loader, IDX images/labels, CSV, the config parser. Each must return Ok or Err, never panic.
#[test]
fn parsers_never_panic_on_mutated_input() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), "j.toml", &short_digits(""));
    let run = dir.path().join("r");
    lockstep(
        &[
            "train",
            cfg.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--max-steps",
            "3",
        ],
        true,
    );
    let ck = std::fs::read(run.join("checkpoints/step-0000003.safetensors")).unwrap();
    let config_text = std::fs::read(&cfg).unwrap();
    let mut idx_img = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3];
    idx_img.extend(0..18u8);
    let idx_lab = vec![0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 0];
    let csv = b"1,2,3,4,0\n5,6,7,8,1\n".to_vec();
    let p = Path::new("fuzz-input");
    type Target<'a> = (&'a str, Vec<u8>, Box<dyn Fn(&[u8])>);
    let targets: Vec<Target> = vec![
        (
            "checkpoint",
            ck,
            Box::new(|b: &[u8]| drop(Checkpoint::from_bytes(b, p))),
        ),
        (
            "idx-images",
            idx_img,
            Box::new(|b: &[u8]| drop(lockstep_train::data::parse_idx_images(b, p))),
        ),
        (
            "idx-labels",
            idx_lab,
            Box::new(|b: &[u8]| drop(lockstep_train::data::parse_idx_labels(b, p, 10))),
        ),
        (
            "csv",
            csv,
            Box::new(|b: &[u8]| drop(lockstep_train::data::parse_csv_checked(b, p, 4, 2))),
        ),
        (
            "gzip",
            vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3],
            Box::new(|b: &[u8]| drop(lockstep_train::data::maybe_gunzip(b, p))),
        ),
        (
            "config",
            config_text,
            Box::new(|b: &[u8]| drop(lockstep_core::parse_config(&String::from_utf8_lossy(b), p))),
        ),
    ];
    let mut total = 0;
    for (name, seed_input, f) in &targets {
        let mut rng = SeedStream::new(7, format!("fuzz/{name}"));
        let iters = if *name == "checkpoint" { 3000 } else { 20_000 };
        for i in 0..iters {
            let mut b = seed_input.clone();
            for _ in 0..1 + rng.below(4) {
                match rng.below(5) {
                    0 if !b.is_empty() => {
                        let at = rng.below(b.len() as u32) as usize;
                        b[at] ^= 1 << rng.below(8);
                    }
                    1 if !b.is_empty() => b.truncate(rng.below(b.len() as u32) as usize),
                    2 => {
                        let at = rng.below(b.len() as u32 + 1) as usize;
                        b.insert(at, rng.next_u32() as u8);
                    }
                    3 if b.len() >= 8 => {
                        let at = rng.below(b.len() as u32 - 7) as usize;
                        b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes()[..8]);
                    }
                    _ if !b.is_empty() => {
                        let at = rng.below(b.len() as u32) as usize;
                        b[at] = rng.next_u32() as u8;
                    }
                    _ => {}
                }
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&b)));
            assert!(
                r.is_ok(),
                "{name}: panic on mutated input #{i} ({} bytes)",
                b.len()
            );
            total += 1;
        }
    }
    eprintln!(
        "fuzz: {total} mutated inputs across {} parsers, no panic",
        targets.len()
    );
}

#[test]
fn a_diverging_run_stops_at_the_step_with_a_clear_error_and_keeps_its_checkpoints() {
    let dir = tempfile::tempdir().expect("tmp");
    let text = short_digits("")
        .replace("kind = \"adam\"", "kind = \"sgd\"\nmomentum = 0.99")
        .replace("lr = 1e-3", "lr = 10.0")
        .replace("betas = [0.9, 0.999]", "")
        .replace("eps = 1e-8", "")
        .replace("warmup_steps = 20", "warmup_steps = 0")
        .replace("checkpoint_every = 25", "checkpoint_every = 1");
    let cfg = write_config(dir.path(), "nan.toml", &text);
    let run = dir.path().join("r");
    let o = crate::harness::train_fails(&cfg, &run, &[]);
    let e = stderr(&o);
    assert!(
        e.contains("step ") && e.contains("not finite") && !e.contains("panicked"),
        "{e}"
    );
    assert!(!run.join("final.safetensors").exists());
    assert_all_checkpoints_readable(&run);
}

#[test]
fn a_full_disk_fails_cleanly_keeps_the_last_checkpoint_and_resumes() {
    let dir = tempfile::tempdir().expect("tmp");
    let mnt = dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=700k",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !crate::harness::require(
        ok,
        "the disk-full test",
        "cannot mount a small tmpfs here: run as root (CI does)",
    ) {
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let cfg = write_config(dir.path(), "j.toml", &short_digits(""));
    let reference = dir.path().join("reference");
    crate::harness::train(&cfg, &reference, &[]);
    let run = mnt.join("run");
    let o = crate::harness::train_fails(&cfg, &run, &[]);
    let e = stderr(&o);
    assert!(e.contains("I/O error") && !e.contains("panicked"), "{e}");
    assert!(
        assert_all_checkpoints_readable(&run) >= 1,
        "the last good checkpoint must survive"
    );
    // Space comes back: the run resumes and ends with the uninterrupted bytes.
    assert!(
        std::process::Command::new("mount")
            .args(["-o", "remount,size=20m", mnt.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    lockstep(&["resume", run.to_str().unwrap()], true);
    assert!(
        std::fs::read(run.join("final.safetensors")).unwrap()
            == std::fs::read(reference.join("final.safetensors")).unwrap()
    );
}

#[test]
fn a_second_process_on_the_same_run_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = long_job(dir.path());
    let run = dir.path().join("r");
    let mut first = bin()
        .args([
            "train",
            cfg.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !run.join("manifest.json").exists() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = bin()
        .args(["resume", run.to_str().unwrap()])
        .output()
        .unwrap();
    let still_running = first.try_wait().unwrap().is_none();
    assert!(first.wait().unwrap().success());
    if still_running {
        assert!(
            !o.status.success() && stderr(&o).contains("another lockstep process"),
            "{}",
            stderr(&o)
        );
    } else {
        eprintln!(
            "note: the first process finished before the second started; lock not exercised this time"
        );
    }
    assert!(run.join("final.safetensors").exists());
    Checkpoint::read(&run.join("final.safetensors")).unwrap();
}
