//! Initial weights: recomputed independently from the documented formula, and pinned by a
//! recorded hash of every initial tensor of the shipped digits job.

use crate::harness::config;
use lockstep_core::{load_config, sha256_hex};
use lockstep_train::model::Model;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

fn digits_model() -> (Model, u64) {
    let cfg = load_config(&config("digits_mlp.toml")).expect("shipped config");
    (
        Model::new(
            &cfg.model,
            cfg.train.kernels,
            cfg.data.image_shape,
            cfg.data.classes,
        ),
        cfg.seed,
    )
}

#[test]
fn first_layer_matches_the_documented_kaiming_formula() {
    let (model, seed) = digits_model();
    let params = model.init_params(seed);
    assert_eq!(model.specs[0].name, "l0.weight");
    // key = SHA-256("lockstep-seed-v1\0" || seed LE || "init/l0.weight"); ChaCha8; u = (w >> 8) * 2^-24;
    // value = -b + (b - -b) * u with b = sqrt(6 / fan_in) (fan_in 64), all in f32 but the sqrt.
    let mut h = Sha256::new();
    h.update(b"lockstep-seed-v1\0");
    h.update(seed.to_le_bytes());
    h.update(b"init/l0.weight");
    let mut rng = ChaCha8Rng::from_seed(h.finalize().into());
    let b = (6.0f64 / 64.0).sqrt() as f32;
    for (i, &got) in params[0].iter().enumerate().take(500) {
        let u = (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0);
        let want = -b + (b - -b) * u;
        assert_eq!(got.to_bits(), want.to_bits(), "l0.weight[{i}]");
    }
    assert!(params[1].iter().all(|&v| v == 0.0), "biases start at zero");
}

/// Recorded from the first implementation (sha256 over every initial tensor's f32 LE bytes in
/// spec order). Changing init or its streams changes every run: make that deliberate.
#[test]
fn golden_initial_weights_hash() {
    let (model, seed) = digits_model();
    let bytes: Vec<u8> = model
        .init_params(seed)
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(sha256_hex(&bytes), GOLDEN_INIT_HASH);
}

const GOLDEN_INIT_HASH: &str = "7be3b5b56357229faaab37c6e0b540f6184d8c55ab83e0ef775b77ce1c5565e4";
