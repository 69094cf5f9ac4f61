//! Every random stream lockstep draws from, by name: the one registry, so a stream's name (and
//! with it every random number) is defined in exactly one place. A stream is
//! `SeedStream::new(seed, name)`: ChaCha8 keyed by SHA-256 of the seed and the name
//! (`crate::seed`). Names depend on purpose, parameter path, step, epoch or sample — never on
//! threads, ranks, devices, clocks or iteration order.

/// Initial values of parameter `path` (element `i` of the row-major tensor = draw `i`).
pub fn init(path: &str) -> String {
    format!("init/{path}")
}

/// The dropout mask of layer `name` at optimizer step `step`.
pub fn dropout(name: &str, step: u64) -> String {
    format!("dropout/{name}/step-{step}")
}

/// The order of the training samples in epoch `epoch`.
pub fn shuffle(epoch: u64) -> String {
    format!("shuffle/epoch-{epoch}")
}

/// Which samples of a single-file data set form the test split.
pub const SPLIT_TEST: &str = "split/test";

/// Which training samples form the validation split.
pub const SPLIT_VALIDATION: &str = "split/validation";

/// Inputs of conformance case `name`.
pub fn conformance(name: &str) -> String {
    format!("conformance/{name}")
}

/// The start-up arithmetic probe's inputs.
pub const PROFILE_PROBE: &str = "profile/probe";

/// The inputs of the start-up probe of the `fma` profile (`arith.lockstep_fma`).
pub const PROFILE_FMA_PROBE: &str = "profile/fma-probe";

/// The start offsets of the training windows of optimizer step `step` (language models).
pub fn batch(step: u64) -> String {
    format!("batch/step-{step}")
}

/// The start offsets of the validation windows a language model is scored on (the same at every
/// evaluation).
pub const EVAL_WINDOWS: &str = "eval/validation-windows";

/// The draw that picks generated token `i` of `lockstep sample --seed seed`.
pub fn sample(seed: u64, i: u64) -> String {
    format!("sample/{seed}/{i}")
}
