//! A trained model is a self-contained artifact: `predict`, `export` and `verify` work with no
//! training data present (the normalisation statistics and input description travel in the
//! checkpoint), predict reads frozen inputs from `.npy`/`.safetensors`, and bad inputs get an
//! error naming the file and the expected and found shape.

use crate::harness::{FASHION_DIR, csv_rows, lockstep, require_fashion, stderr, write_config};
use crate::kernels_bitwise::assert_bitwise;
use lockstep_core::TensorFile;
use lockstep_core::tensorfile::{DType, TensorEntry};
use std::path::Path;

fn recorded_logits(run: &Path) -> Vec<f32> {
    TensorFile::read(&run.join("eval/test.safetensors"))
        .unwrap()
        .tensors["logits"]
        .to_f32()
        .unwrap()
}

/// `lockstep predict SOURCE INPUTS` (must succeed): the logits of every line, in order.
fn predict(source: &Path, inputs: &Path) -> Vec<f32> {
    crate::harness::predict_logits(&[source.to_str().unwrap(), inputs.to_str().unwrap()])
}

/// The scenario: train fashion_mlp (50 steps) with the data in a temporary folder,
/// delete the folder, then predict, export and verify (given only the test files).
#[test]
fn a_trained_fashion_model_needs_no_training_data() {
    if !require_fashion("the self-contained artifact check") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let (data, keep) = (dir.path().join("data"), dir.path().join("test-files"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&keep).unwrap();
    for f in std::fs::read_dir(FASHION_DIR).unwrap().flatten() {
        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
        if f.file_name().to_string_lossy().starts_with("t10k") {
            std::fs::copy(f.path(), keep.join(f.file_name())).unwrap();
        }
    }
    let text = std::fs::read_to_string(crate::harness::config("fashion_mlp.toml"))
        .unwrap()
        .replace(FASHION_DIR, data.to_str().unwrap())
        .replace("[train]\n", "[train]\nmax_steps = 50\n");
    let cfg = write_config(dir.path(), "fm.toml", &text);
    let run = dir.path().join("run");
    crate::harness::train(&cfg, &run, &[]);
    std::fs::remove_dir_all(&data).unwrap();

    let images = keep.join("t10k-images-idx3-ubyte.gz");
    let want = recorded_logits(&run);
    assert_eq!(want.len(), 10_000 * 10);
    assert_bitwise(
        "predict without training data",
        &want,
        &predict(&run, &images),
    );
    let o = lockstep(
        &["predict", run.to_str().unwrap(), images.to_str().unwrap()],
        true,
    );
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert!(
        first["label"].is_string(),
        "class names travel too: {first}"
    );

    let f16 = dir.path().join("model-f16.safetensors");
    lockstep(
        &[
            "export",
            run.to_str().unwrap(),
            "--dtype",
            "f16",
            "--out",
            f16.to_str().unwrap(),
        ],
        true,
    );
    // The export is self-contained too: it carries the same statistics as F64 tensors.
    let exported = TensorFile::read(&f16).unwrap();
    let final_ck = TensorFile::read(&run.join("final.safetensors")).unwrap();
    for n in ["input.pixel_scale", "input.mean", "input.std"] {
        assert_eq!(exported.tensors[n], final_ck.tensors[n], "{n}");
        assert_eq!(exported.tensors[n].dtype, DType::F64);
    }
    assert_eq!(predict(&f16, &images).len(), want.len());

    // verify needs only what it re-scores: without the data it names the missing test file...
    let o = lockstep(&["verify", run.to_str().unwrap()], false);
    let e = stderr(&o);
    assert!(
        e.contains("t10k-images-idx3-ubyte") && e.contains("--data"),
        "verify without data must name the file it needs:\n{e}"
    );
    // ... and with only the test files it passes.
    let o = lockstep(
        &[
            "verify",
            run.to_str().unwrap(),
            "--data",
            keep.to_str().unwrap(),
        ],
        true,
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("PASS"));
}

/// The harness's CSV job with its training file removed: (run dir, test CSV, its inputs as f32
/// rows).
fn csv_run(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<f32>) {
    let job = crate::harness::csv_job(dir);
    std::fs::remove_file(&job.train).unwrap();
    let x: Vec<f32> = csv_rows(23, 4, 5, 11)
        .iter()
        .flat_map(|r| {
            r.split(',')
                .take(16)
                .map(|v| v.parse::<f32>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    (job.run, job.test, x)
}

/// A `.npy` file (format 1.0, C order) written here, independently of lockstep's reader.
pub fn npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn predict_reads_frozen_npy_and_safetensors_inputs_bitwise() {
    let dir = tempfile::tempdir().expect("tmp");
    let (run, test, x) = csv_run(dir.path());
    let want = recorded_logits(&run);
    assert_bitwise("csv", &want, &predict(&run, &test));
    let n = x.len() / 16;
    let cases: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = vec![
        ("f32-flat.npy", "<f4", vec![n, 16], f32_bytes(&x)),
        ("f32-nchw.npy", "<f4", vec![n, 1, 4, 4], f32_bytes(&x)),
        (
            "f64-nhw.npy",
            "<f8",
            vec![n, 4, 4],
            x.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect(),
        ),
        (
            "u8.npy",
            "|u1",
            vec![n, 16],
            x.iter().map(|&v| v as u8).collect(),
        ),
    ];
    for (name, descr, shape, data) in cases {
        let p = dir.path().join(name);
        npy(&p, descr, &shape, &data);
        assert_bitwise(name, &want, &predict(&run, &p));
    }
    let st = dir.path().join("frozen.safetensors");
    let mut f = TensorFile::default();
    f.tensors
        .insert("x".into(), TensorEntry::from_f32(vec![n, 1, 4, 4], &x));
    std::fs::write(&st, f.to_bytes()).unwrap();
    assert_bitwise("safetensors", &want, &predict(&run, &st));
}

/// Wrong shape, wrong dtype, a NaN: a clear error naming the file and what was expected and
/// found, a non-zero exit, never a panic.
#[test]
fn predict_rejects_inputs_of_the_wrong_shape_dtype_or_value() {
    let dir = tempfile::tempdir().expect("tmp");
    let (run, _, x) = csv_run(dir.path());
    let mut nan = x.clone();
    nan[17] = f32::NAN;
    // (file name, npy descr, shape, data, what the error must mention)
    type Case<'a> = (&'a str, &'a str, Vec<usize>, Vec<u8>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "short.npy",
            "<f4",
            vec![23, 15],
            f32_bytes(&x[..23 * 15]),
            vec!["[23, 15]", "[n, 16]", "[1, 4, 4]"],
        ),
        (
            "rgb.npy",
            "<f4",
            vec![1, 3, 4, 4],
            f32_bytes(&x[..48]),
            vec!["[1, 3, 4, 4]", "[n, 1, 4, 4]"],
        ),
        (
            "ints.npy",
            "<i4",
            vec![23, 16],
            vec![0; 23 * 16 * 4],
            vec!["<i4", "float32"],
        ),
        (
            "nan.npy",
            "<f4",
            vec![23, 16],
            f32_bytes(&nan),
            vec!["non-finite", "input 1", "element 1"],
        ),
    ];
    for (name, descr, shape, data, needles) in cases {
        let p = dir.path().join(name);
        npy(&p, descr, &shape, &data);
        let o = lockstep(
            &["predict", run.to_str().unwrap(), p.to_str().unwrap()],
            false,
        );
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {e}");
        assert!(!e.contains("panicked"), "{name}: {e}");
        assert!(e.contains(name), "{name}: error must name the file:\n{e}");
        for n in needles {
            assert!(e.contains(n), "{name}: error must mention {n:?}:\n{e}");
        }
    }
    // A safetensors file whose "x" has the wrong dtype.
    let p = dir.path().join("i32.safetensors");
    let mut f = TensorFile::default();
    f.tensors.insert(
        "x".into(),
        TensorEntry {
            dtype: DType::I32,
            shape: vec![1, 16],
            data: vec![0; 64],
        },
    );
    std::fs::write(&p, f.to_bytes()).unwrap();
    let e = stderr(&lockstep(
        &["predict", run.to_str().unwrap(), p.to_str().unwrap()],
        false,
    ));
    assert!(e.contains("i32.safetensors") && e.contains("I32"), "{e}");
}

/// A checkpoint written before the inference fields (format v1) still loads: with the training
/// data present predict refits the statistics (same logits); without it, a message says the
/// statistics can only be recomputed from the training data.
#[test]
fn format_v1_checkpoints_still_load_and_say_what_they_lack() {
    let dir = tempfile::tempdir().expect("tmp");
    let crate::harness::CsvJob { train, test, run } = crate::harness::csv_job(dir.path());
    // Rewrite final.safetensors as the v1 format wrote it: no input.* tensors, no inference
    // metadata.
    let ck = run.join("final.safetensors");
    let mut f = TensorFile::read(&ck).unwrap();
    assert_eq!(f.metadata["lockstep.format"], "lockstep-checkpoint-v2");
    f.tensors.retain(|k, _| !k.starts_with("input."));
    f.metadata.remove("lockstep.inference");
    f.metadata
        .insert("lockstep.format".into(), "lockstep-checkpoint-v1".into());
    std::fs::write(&ck, f.to_bytes_with_checksum()).unwrap();
    let want = recorded_logits(&run);
    assert_bitwise("v1 with training data", &want, &predict(&run, &test));
    std::fs::remove_file(&train).unwrap();
    let e = stderr(&lockstep(
        &["predict", run.to_str().unwrap(), test.to_str().unwrap()],
        false,
    ));
    assert!(
        e.contains("format v1") && e.contains("train.csv") && !e.contains("panicked"),
        "{e}"
    );
}
