//! Seed-stream derivation, pinned two ways: an independent reimplementation of the documented
//! derivation (sha2 + rand_chacha directly) and recorded golden values.

use lockstep_core::SeedStream;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// The derivation as documented in lockstep-core's seed module, written out independently.
fn documented(seed: u64, name: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(b"lockstep-seed-v1\0");
    h.update(seed.to_le_bytes());
    h.update(name.as_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

#[test]
fn streams_follow_the_documented_derivation() {
    for (seed, name) in [
        (42, "init/l0.weight"),
        (0, "shuffle/epoch-3"),
        (u64::MAX, "dropout/l1/step-1200"),
        (7, ""),
    ] {
        let mut ours = SeedStream::new(seed, name);
        let mut reference = documented(seed, name);
        for i in 0..1000 {
            assert_eq!(
                ours.next_u32(),
                reference.next_u32(),
                "stream {name:?} seed {seed} word {i}"
            );
        }
    }
}

/// Golden first words. Produced once by:
/// `for (s,n) in ..: SeedStream::new(s, n).next_u32() x4` (printed in hex). A change here means
/// every recorded run changes: that must be a deliberate, versioned decision.
#[test]
fn golden_first_words() {
    let cases: [(u64, &str, [u32; 4]); 3] = [
        (42, "init/l0.weight", GOLDEN_INIT),
        (42, "shuffle/epoch-0", GOLDEN_SHUFFLE),
        (42, "dropout/l0/step-0", GOLDEN_DROPOUT),
    ];
    for (seed, name, want) in cases {
        let mut s = SeedStream::new(seed, name);
        let got = [s.next_u32(), s.next_u32(), s.next_u32(), s.next_u32()];
        assert_eq!(got, want, "stream {name:?}: got {got:08x?}");
    }
}

const GOLDEN_INIT: [u32; 4] = [0xc72ea10c, 0x85dbd56f, 0xa91902f8, 0x2f28eb72];
const GOLDEN_SHUFFLE: [u32; 4] = [0xd98cab7f, 0x891524d3, 0xd3879f6a, 0xecf64157];
const GOLDEN_DROPOUT: [u32; 4] = [0x9d4ecf53, 0xdc466934, 0xac388b9e, 0xd9893276];

#[test]
fn golden_permutation_and_uniforms() {
    let mut s = SeedStream::new(42, "shuffle/epoch-0");
    assert_eq!(s.permutation(10), GOLDEN_PERM_10.to_vec());
    let mut u = SeedStream::new(1, "u");
    let got: Vec<u32> = (0..4).map(|_| u.uniform_f32().to_bits()).collect();
    assert_eq!(got, GOLDEN_UNIFORM_BITS.to_vec(), "uniform bits {got:08x?}");
}

const GOLDEN_PERM_10: [u32; 10] = [1, 9, 3, 6, 7, 8, 4, 2, 0, 5];
const GOLDEN_UNIFORM_BITS: [u32; 4] = [0x3eef7414, 0x3f3c8934, 0x3f3200c8, 0x3f3aa13f];

#[test]
fn streams_with_different_names_or_seeds_differ() {
    let a = SeedStream::new(42, "a").next_u32();
    assert_ne!(a, SeedStream::new(42, "b").next_u32());
    assert_ne!(a, SeedStream::new(43, "a").next_u32());
}

#[test]
fn below_is_unbiased_on_a_small_range() {
    let mut s = SeedStream::new(9, "below");
    let mut counts = [0u32; 3];
    for _ in 0..30_000 {
        counts[s.below(3) as usize] += 1;
    }
    for c in counts {
        assert!((9_500..10_500).contains(&c), "{counts:?}");
    }
}
