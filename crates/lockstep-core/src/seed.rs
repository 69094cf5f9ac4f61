//! Named seed streams: the only source of randomness in lockstep.
//!
//! Derivation (pinned by golden tests; changing it is a breaking change of every run):
//!
//! ```text
//! key    = SHA-256("lockstep-seed-v1" || 0x00 || seed as u64 little-endian || name as UTF-8)
//! stream = ChaCha8 (rand_chacha::ChaCha8Rng::from_seed(key)), stream id 0, word position 0
//! ```
//!
//! `name` says what the numbers are for: `init/l1.weight`, `shuffle/epoch-3`,
//! `dropout/l1/step-1200`, `split/digits`. Word `i` of a stream is word `i % 16` of ChaCha block
//! `i / 16` with key `key` and nonce 0, so a GPU kernel that has `key` can produce word `i`
//! without producing the words before it.
//!
//! Conversions (all exact on every platform, no floating-point rounding choices):
//! - `uniform_f32`: `(next_u32() >> 8) as f32 * 2^-24`, a multiple of 2^-24 in `[0, 1)`.
//! - `below(n)`: rejection sampling on `next_u32()`: accept `x < n * floor(2^32 / n)`, return
//!   `x % n` (no modulo bias).
//! - `shuffle`: Fisher-Yates from the last index down: for `i = n-1 ..= 1`, swap `i` with
//!   `below(i + 1)`.
//!
//! Never `thread_rng`, `StdRng`, hash-map order, thread ids, clocks, or burn's global seed.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

const DOMAIN: &[u8] = b"lockstep-seed-v1\0";

/// The ChaCha key of the stream `name` under `seed`.
pub fn stream_key(seed: u64, name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(seed.to_le_bytes());
    h.update(name.as_bytes());
    h.finalize().into()
}

/// One named ChaCha8 stream derived from the config seed.
#[derive(Clone, Debug)]
pub struct SeedStream {
    name: String,
    rng: ChaCha8Rng,
}

impl SeedStream {
    pub fn new(seed: u64, name: impl Into<String>) -> Self {
        let name = name.into();
        let rng = ChaCha8Rng::from_seed(stream_key(seed, &name));
        SeedStream { name, rng }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many 32-bit words have been drawn (what a checkpoint records to continue the stream).
    pub fn word_pos(&self) -> u128 {
        self.rng.get_word_pos()
    }

    pub fn set_word_pos(&mut self, pos: u128) {
        self.rng.set_word_pos(pos);
    }

    pub fn next_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }

    /// A multiple of 2^-24 in `[0, 1)`.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
    }

    /// Uniform in `[lo, hi)`: `lo + (hi - lo) * u` in f32 with the `u` above.
    pub fn uniform_range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform_f32()
    }

    /// Uniform integer in `0..n` without modulo bias. Panics if `n == 0` (a caller bug).
    pub fn below(&mut self, n: u32) -> u32 {
        assert!(n > 0, "SeedStream::below(0)");
        let limit = (u32::MAX / n) * n;
        loop {
            let x = self.next_u32();
            if x < limit {
                return x % n;
            }
        }
    }

    /// Fisher-Yates shuffle of `items` in place (order documented in the module doc).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u32 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// The permutation of `0..n` this stream's shuffle produces.
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        self.shuffle(&mut p);
        p
    }
}
