//! The two arithmetic profiles (`train.arith`): `unfused` (two roundings per multiply-add, the
//! default) and `fma` (IEEE's fused multiply-add in every dot product). Each is bitwise across
//! backends and thread counts and resumes exactly; a device whose `fma` does not round once is
//! refused for an `fma` job, naming the key, the probe result and the fix.
//!
//! On this project's CI machine wgpu is lavapipe, whose `fma` is a multiply then an add (probe:
//! `arith.lockstep_fma = "unfused"`): there the wgpu half of each check is the refusal, and the
//! `fma` bits are checked on ndarray and flex against the suite's own `mul_add` loops. On a GPU
//! whose `fma` fuses, the same tests compare its bits instead.

use crate::harness::{
    assert_same_files as same, config, lockstep, stderr, train, train_fails, write_config,
};
use crate::kernels_bitwise::{assert_bitwise, devices, host, seeded, t2};
use crate::reference::{bmm_fma_loop, matmul_fma_loop, matmul_loop, transpose, transpose3};
use burn::tensor::{Device, Tensor, TensorData};
use lockstep_kernels::ops as det;
use std::path::Path;

/// The probe's verdict on `d`'s `fma` (`arith.lockstep_fma`); the CPU backends must fuse.
fn fma_fact(name: &str, d: &Device) -> &'static str {
    let fact = lockstep_kernels::profile::probe(d).lockstep_fma;
    if name != "wgpu" {
        assert_eq!(fact, "fused", "{name}: the CPU's mul_add must round once");
    } else if fact != "fused" {
        eprintln!(
            "note: wgpu's fma is not single-rounding here (arith.lockstep_fma = {fact:?}): its fma runs are checked to be refused instead"
        );
    }
    fact
}

fn t3(v: &[f32], shape: [usize; 3], d: &Device) -> Tensor<3> {
    Tensor::<3>::from_data(TensorData::new(v.to_vec(), shape), d)
}

#[test]
fn fma_matmul_and_bmm_forward_and_backward_match_the_mul_add_loop() {
    let shapes = [
        (1, 1, 1),
        (1, 7, 33),
        (7, 33, 127),
        (33, 1000, 7),
        (127, 100, 300),
        (3, 513, 5),
    ];
    let mut differs = false;
    for (name, d) in devices() {
        if fma_fact(name, &d) != "fused" {
            continue;
        }
        for &(m, k, n) in &shapes {
            let a = seeded(m * k, &format!("fa{m}-{k}-{n}"), -2.0, 2.0);
            let b = seeded(k * n, &format!("fb{m}-{k}-{n}"), -2.0, 2.0);
            let g = seeded(m * n, &format!("fg{m}-{k}-{n}"), -1.0, 1.0);
            let want = matmul_fma_loop(&a, &b, m, k, n);
            differs |= want != matmul_loop(&a, &b, m, k, n);
            let da = matmul_fma_loop(&g, &transpose(&b, k, n), m, n, k);
            let db = matmul_fma_loop(&transpose(&a, m, k), &g, k, m, n);
            let ad = d.clone().autodiff();
            let (ta, tb) = (
                t2(&a, [m, k], &ad).require_grad(),
                t2(&b, [k, n], &ad).require_grad(),
            );
            let out = det::matmul_in(ta.clone(), tb.clone(), true);
            let what = format!("fma matmul {m}x{k}x{n} on {name}");
            assert_bitwise(&what, &want, &host(out.clone()));
            let grads = (out * t2(&g, [m, n], &ad)).sum().backward();
            assert_bitwise(&format!("{what} dA"), &da, &host(ta.grad(&grads).unwrap()));
            assert_bitwise(&format!("{what} dB"), &db, &host(tb.grad(&grads).unwrap()));
        }
        // k = 100,352 (past lavapipe's loop cap and many CPU k blocks), forward.
        let (m, k, n) = (2, 100_352, 3);
        let a = seeded(m * k, "fa-long", -1.0, 1.0);
        let b = seeded(k * n, "fb-long", -1.0, 1.0);
        let got = host(det::matmul_in(t2(&a, [m, k], &d), t2(&b, [k, n], &d), true));
        assert_bitwise(
            &format!("fma matmul 2x100352x3 on {name}"),
            &matmul_fma_loop(&a, &b, m, k, n),
            &got,
        );
        for (bt, m, k, n) in [(1, 1, 1, 1), (3, 7, 33, 5), (48, 64, 32, 64)] {
            let a = seeded(bt * m * k, &format!("fba{bt}-{m}"), -2.0, 2.0);
            let b = seeded(bt * k * n, &format!("fbb{bt}-{m}"), -2.0, 2.0);
            let g = seeded(bt * m * n, &format!("fbg{bt}-{m}"), -1.0, 1.0);
            let ad = d.clone().autodiff();
            let (ta, tb) = (
                t3(&a, [bt, m, k], &ad).require_grad(),
                t3(&b, [bt, k, n], &ad).require_grad(),
            );
            let out = det::bmm_in(ta.clone(), tb.clone(), true);
            let what = format!("fma bmm {bt}x{m}x{k}x{n} on {name}");
            assert_bitwise(
                &what,
                &bmm_fma_loop(&a, &b, bt, m, k, n),
                &host(out.clone()),
            );
            let grads = (out * t3(&g, [bt, m, n], &ad)).sum().backward();
            let da = bmm_fma_loop(&g, &transpose3(&b, bt, k, n), bt, m, n, k);
            let db = bmm_fma_loop(&transpose3(&a, bt, m, k), &g, bt, k, m, n);
            assert_bitwise(&format!("{what} dA"), &da, &host(ta.grad(&grads).unwrap()));
            assert_bitwise(&format!("{what} dB"), &db, &host(tb.grad(&grads).unwrap()));
        }
    }
    assert!(
        differs,
        "the fused and unfused loops never differed: a vacuous check"
    );
}

/// `text` without its `key = ...` lines.
fn without_key(text: &str, key: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with(&format!("{key} =")))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `text` (a shipped config) in the `fma` profile, shortened to `steps` steps.
fn fma_job(dir: &Path, name: &str, text: &str, steps: u64) -> std::path::PathBuf {
    let t = without_key(text, "max_steps").replacen(
        "[train]\n",
        &format!("[train]\narith = \"fma\"\nmax_steps = {steps}\n"),
        1,
    );
    assert!(t.contains("arith = \"fma\""), "{name}: no [train] table");
    write_config(dir, &format!("{name}.toml"), &t)
}

/// Every shipped config in the `fma` profile: ndarray, flex on 1 and 2 threads (and wgpu where
/// its fma fuses) write byte-identical checkpoints and metrics; where it does not, wgpu refuses
/// the job and writes nothing. The unfused run of the same job gives other bytes.
#[test]
fn every_shipped_config_in_the_fma_profile_is_bitwise_across_backends_and_threads() {
    let wgpu = devices().into_iter().find(|(n, _)| *n == "wgpu");
    let wgpu_fuses = wgpu.as_ref().map(|(n, d)| fma_fact(n, d) == "fused");
    let dir = tempfile::tempdir().unwrap();
    let mut shipped = 0;
    for entry in std::fs::read_dir(config("")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("fashion-mnist")
            && !crate::harness::require_fashion(&format!("{name} in the fma profile"))
        {
            continue;
        }
        shipped += 1;
        let steps = if name.starts_with("gpt") { 3 } else { 12 };
        let cfg = fma_job(dir.path(), &name, &text, steps);
        let run = |tag: &str, extra: &[&str]| {
            let out = dir.path().join(format!("{name}-{tag}"));
            train(&cfg, &out, extra);
            out
        };
        let nd = run("ndarray", &["--backend", "ndarray"]);
        let f1 = run("flex1", &["--backend", "flex", "--threads", "1"]);
        let f2 = run("flex2", &["--backend", "flex", "--threads", "2"]);
        let files = ["final.safetensors", "metrics.jsonl"];
        same(&nd, &f1, &files);
        same(&nd, &f2, &files);
        match wgpu_fuses {
            Some(true) => same(&nd, &run("wgpu", &["--backend", "wgpu"]), &files),
            Some(false) => {
                let out = dir.path().join(format!("{name}-wgpu"));
                let o = train_fails(&cfg, &out, &["--backend", "wgpu"]);
                let e = stderr(&o);
                assert!(
                    e.contains("train.arith = \"fma\"")
                        && e.contains("arith.lockstep_fma")
                        && e.contains("train.arith = \"unfused\""),
                    "{name}: {e}"
                );
                assert!(!out.exists(), "{name}: a refused run wrote {out:?}");
            }
            None => {}
        }
        // The profile decides the bits: the unfused job differs.
        let unfused = write_config(
            dir.path(),
            &format!("{name}-unfused.toml"),
            &std::fs::read_to_string(&cfg)
                .unwrap()
                .replace("arith = \"fma\"\n", ""),
        );
        let un = dir.path().join(format!("{name}-unfused"));
        train(&unfused, &un, &["--backend", "flex"]);
        assert_ne!(
            std::fs::read(nd.join("final.safetensors")).unwrap(),
            std::fs::read(un.join("final.safetensors")).unwrap(),
            "{name}: the fma and unfused profiles gave the same checkpoint"
        );
    }
    assert!(shipped >= 5, "only {shipped} shipped configs ran");
}

/// An `fma` run stopped at step 10 and resumed equals the uninterrupted run; the recorded
/// profile is part of the run's identity (manifest), so `resume` and `verify` run it in `fma`
/// and refuse a device whose fma does not fuse.
#[test]
fn an_fma_run_resumes_and_verifies_exactly_and_a_device_without_fma_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = crate::harness::short_digits("").replace("epochs = 2", "epochs = 1");
    let cfg = fma_job(dir.path(), "digits", &text, 30);
    let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
    train(&cfg, &whole, &["--backend", "flex"]);
    train(&cfg, &split, &["--backend", "flex", "--max-steps", "10"]);
    lockstep(&["resume", split.to_str().unwrap()], true);
    same(
        &whole,
        &split,
        &["final.safetensors", "metrics.jsonl", "scores.json"],
    );
    let manifest = std::fs::read_to_string(whole.join("manifest.json")).unwrap();
    assert!(
        manifest.contains("\"arith\": \"fma\"")
            && manifest.contains("\"arith.lockstep_fma\": \"fused\"")
    );
    lockstep(
        &[
            "verify",
            whole.to_str().unwrap(),
            "--backend",
            "ndarray",
            "--batch-size",
            "7",
        ],
        true,
    );
    let wgpu = devices().into_iter().find(|(n, _)| *n == "wgpu");
    if let Some((n, d)) = wgpu {
        let ok = fma_fact(n, &d) == "fused";
        let before = crate::harness::tree(&whole, &[]);
        let o = lockstep(
            &["verify", whole.to_str().unwrap(), "--backend", "wgpu"],
            ok,
        );
        if !ok {
            let e = stderr(&o);
            assert!(
                e.contains("arith.lockstep_fma") && e.contains("fix:"),
                "{e}"
            );
        }
        assert!(
            before == crate::harness::tree(&whole, &[]),
            "verify changed the run"
        );
    }
}

#[test]
fn bad_arith_values_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("arith = \"fast\"", "unknown arithmetic profile"),
        (
            "arith = \"fma\"\nkernels = \"burn\"",
            "train.kernels = \"burn\"",
        ),
    ] {
        let t = without_key(&crate::harness::short_digits(""), "kernels").replacen(
            "[train]\n",
            &format!("[train]\n{text}\n"),
            1,
        );
        let cfg = write_config(dir.path(), "bad.toml", &t);
        let out = dir.path().join("out");
        let e = stderr(&train_fails(&cfg, &out, &[]));
        assert!(
            e.contains("train.arith") && e.contains(needle) && e.contains("fix"),
            "{e}"
        );
        assert!(!out.exists());
    }
}
