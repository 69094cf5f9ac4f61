//! The deployment check: `lockstep verify` reproduces recorded scores on any backend and batch
//! size, and refuses or fails — non-zero, with a readable report — when anything changed.

use crate::harness::{
    config, csv_rows, lockstep, short_digits, stderr, stock_digits, write_config,
};
use crate::kernels_bitwise::{assert_bitwise, devices, host, seeded, t2};
use lockstep_kernels::ops as det;
use std::path::Path;

fn verify(run: &Path, extra: &[&str], ok: bool) -> String {
    let mut args = vec!["verify", run.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = lockstep(&args, ok);
    format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o))
}

fn backends() -> Vec<&'static str> {
    let mut b = vec!["ndarray"];
    if crate::harness::require_wgpu("wgpu in the verify tests") {
        b.push("wgpu");
    }
    b
}

/// Every shipped config (the Fashion-MNIST ones shortened to a few steps), verified on each
/// backend at batch sizes 1, 7 and 256.
#[test]
fn verify_passes_on_untouched_runs_for_every_shipped_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut jobs = vec![
        ("digits", short_digits("")),
        ("digits-stock", stock_digits()),
    ];
    if crate::harness::require_fashion("the Fashion-MNIST configs in verify") {
        for name in ["fashion_mlp.toml", "fashion_cnn.toml"] {
            let text = std::fs::read_to_string(config(name))
                .unwrap()
                .replace("[train]\n", "[train]\nmax_steps = 5\n");
            jobs.push((name, text));
        }
    }
    for (name, text) in jobs {
        let cfg = write_config(dir.path(), &format!("{name}.toml"), &text);
        let run = dir.path().join(name);
        crate::harness::train(&cfg, &run, &[]);
        for b in backends() {
            for bs in ["1", "7", "256"] {
                let out = verify(&run, &["--backend", b, "--batch-size", bs], true);
                assert!(out.contains("PASS"), "{name} on {b} batch {bs}:\n{out}");
            }
        }
    }
}

#[test]
fn verify_fails_on_a_flipped_weight_bit_changed_data_or_changed_profile() {
    let dir = tempfile::tempdir().expect("tmp");
    // A CSV job so one eval sample can be edited.
    let rows = csv_rows(200, 0, 7, 3);
    let csv = dir.path().join("data.csv");
    std::fs::write(&csv, rows.join("\n")).unwrap();
    let text = format!(
        "seed = 3\n[data]\ndataset = \"csv\"\ntrain_path = \"{}\"\nimage_shape = [1, 4, 4]\nclasses = 3\n[model]\nkind = \"mlp\"\nhidden = [8]\n[optimizer]\nkind = \"adam\"\nlr = 0.01\n[train]\nbatch_size = 16\nepochs = 2\nkernels = \"burn\"\n",
        csv.display()
    );
    let cfg = write_config(dir.path(), "csv.toml", &text);
    let run = dir.path().join("run");
    crate::harness::train(&cfg, &run, &[]);
    assert!(verify(&run, &[], true).contains("PASS"));

    // (1) one flipped bit in a weight of final.safetensors
    let fin = run.join("final.safetensors");
    let good = std::fs::read(&fin).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 5] ^= 0x01;
    std::fs::write(&fin, &bad).unwrap();
    let out = verify(&run, &[], false);
    assert!(
        out.contains("final.safetensors") && out.contains("SHA-256"),
        "{out}"
    );
    std::fs::write(&fin, &good).unwrap();

    // (2) one sample of the data changed
    let mut changed = rows.clone();
    changed[5] = changed[5].replacen('0', "9", 1);
    std::fs::write(&csv, changed.join("\n")).unwrap();
    let out = verify(&run, &[], false);
    assert!(out.contains("data differs"), "{out}");
    std::fs::write(&csv, rows.join("\n")).unwrap();

    // (3) the recorded arithmetic profile differs from this device's, stock kernels
    let mpath = run.join("manifest.json");
    let manifest = std::fs::read_to_string(&mpath).unwrap();
    std::fs::write(
        &mpath,
        manifest.replace(
            "\"arith.native_mad\": \"unfused\"",
            "\"arith.native_mad\": \"fused\"",
        ),
    )
    .unwrap();
    let out = verify(&run, &[], false);
    assert!(out.contains("arithmetic profile"), "{out}");
    std::fs::write(&mpath, manifest).unwrap();
    assert!(verify(&run, &[], true).contains("PASS"));
}

#[test]
fn exported_half_precision_checkpoints_verify_within_the_declared_tolerance() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), "j.toml", &short_digits(""));
    let run = dir.path().join("r");
    crate::harness::train(&cfg, &run, &[]);
    for dt in ["f16", "bf16"] {
        let out = dir.path().join(format!("model-{dt}.safetensors"));
        lockstep(
            &[
                "export",
                run.to_str().unwrap(),
                "--dtype",
                dt,
                "--out",
                out.to_str().unwrap(),
            ],
            true,
        );
        let rep = verify(&run, &["--checkpoint", out.to_str().unwrap()], true);
        assert!(
            rep.contains("PASS") && rep.contains("reduced-precision"),
            "{dt}: {rep}"
        );
        // Refuses to overwrite.
        lockstep(
            &[
                "export",
                run.to_str().unwrap(),
                "--dtype",
                dt,
                "--out",
                out.to_str().unwrap(),
            ],
            false,
        );
    }
}

/// A sample's result must not depend on the batch it is computed in: every inference op of the
/// lockstep set, row i computed alone vs inside batches of 7 and 256.
#[test]
fn lockstep_inference_ops_are_batch_invariant() {
    let (k, n) = (64, 10);
    let x = seeded(256 * k, "bi-x", -2.0, 2.0);
    let w = seeded(k * n, "bi-w", -1.0, 1.0);
    let b = seeded(n, "bi-b", -1.0, 1.0);
    for (name, d) in devices() {
        let full = |rows: usize| {
            let h = det::add_bias(
                det::matmul(t2(&x[..rows * k], [rows, k], &d), t2(&w, [k, n], &d)),
                t2(&b, [1, n], &d),
            );
            let r = burn::tensor::activation::relu(h.clone());
            let targets = t2(&vec![0.1f32; rows * n], [rows, n], &d);
            (
                host(h),
                host(r),
                host(det::cross_entropy_nll(
                    burn::tensor::activation::relu(t2(&x[..rows * n], [rows, n], &d)),
                    targets,
                )),
            )
        };
        let (h256, r256, x256) = full(256);
        for rows in [1usize, 7] {
            let (h, r, xe) = full(rows);
            assert_bitwise(
                &format!("matmul+bias rows {rows} vs 256 on {name}"),
                &h256[..rows * n],
                &h,
            );
            assert_bitwise(
                &format!("relu rows {rows} vs 256 on {name}"),
                &r256[..rows * n],
                &r,
            );
            assert_bitwise(
                &format!("xent rows {rows} vs 256 on {name}"),
                &x256[..rows],
                &xe,
            );
        }
    }
}

/// `lockstep predict` on the test file reproduces the logits recorded at training time, bit for
/// bit (lockstep kernels), whatever backend serves them.
#[test]
fn predict_reproduces_the_recorded_test_logits() {
    let dir = tempfile::tempdir().expect("tmp");
    let crate::harness::CsvJob { run, test, .. } = crate::harness::csv_job(dir.path());
    let rec = lockstep_core::TensorFile::read(&run.join("eval/test.safetensors")).unwrap();
    let want = rec.tensors["logits"].to_f32().unwrap();
    let mut backends = vec!["ndarray", "flex"];
    if crate::harness::require_wgpu("wgpu in the predict check") {
        backends.push("wgpu");
    }
    for b in backends {
        let got = crate::harness::predict_logits(&[
            run.to_str().unwrap(),
            test.to_str().unwrap(),
            "--backend",
            b,
        ]);
        assert_bitwise(&format!("predict on {b}"), &want, &got);
    }
}

/// Python interop: Python's `safetensors` + numpy reproduce the recorded logits from the final
/// checkpoint using only the layout documented in README. Skips loudly without them.
#[test]
fn numpy_forward_pass_reproduces_the_recorded_scores() {
    if !crate::harness::require_python("numpy, safetensors", "the Python interop check") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let rows = |n: usize, salt: usize| csv_rows(n, salt, 3, 7).join("\n");
    let (train, test) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    std::fs::write(&train, rows(120, 0)).unwrap();
    std::fs::write(&test, rows(30, 2)).unwrap();
    let text = format!(
        "seed = 9\n[data]\ndataset = \"csv\"\ntrain_path = \"{}\"\ntest_path = \"{}\"\nimage_shape = [1, 4, 4]\nclasses = 3\nnormalize = \"unit\"\n[model]\nkind = \"mlp\"\nhidden = [8, 6]\n[optimizer]\nkind = \"adam\"\nlr = 0.01\n[train]\nbatch_size = 16\nepochs = 2\n",
        train.display(),
        test.display()
    );
    let cfg = write_config(dir.path(), "py.toml", &text);
    let run = dir.path().join("run");
    crate::harness::train(&cfg, &run, &[]);
    let script = format!(
        r#"
import numpy as np
from safetensors.numpy import load_file
f = load_file("{run}/final.safetensors")
te = np.loadtxt("{test}", delimiter=",")[:, :16]
# The normalisation travels in the checkpoint (F64 [1] tensors); "unit" means mean 0, std 1.
x = (((te / f["input.pixel_scale"][0]) - f["input.mean"][0]) / f["input.std"][0]).astype(np.float32)
n = len([k for k in f if k.startswith("model.") and k.endswith(".weight")])
for i in range(n):
    x = x @ f[f"model.l{{i}}.weight"] + f[f"model.l{{i}}.bias"]
    if i < n - 1:
        x = np.maximum(x, 0)
want = load_file("{run}/eval/test.safetensors")["logits"]
print(float(np.abs(x - want).max()))
"#,
        run = run.display(),
        test = test.display()
    );
    let o = crate::harness::python()
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let max: f64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert!(
        max < 1e-5,
        "numpy logits differ from the recorded ones by {max}"
    );
}
