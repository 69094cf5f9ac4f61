//! GPU ChaCha8 dropout-mask kernel (CubeCL), integer arithmetic only.

// CubeCL has no rotate intrinsic: rotations are written as two shifts and an or.
#![allow(clippy::manual_rotate)]

use cubecl::prelude::*;

/// 2^-24 exactly.
pub const INV_2_24: f32 = f32::from_bits(0x3380_0000);

/// Key words and the 64-bit block counter of element 0, as runtime values (one compiled
/// kernel serves every seed and step).
#[derive(CubeLaunch, CubeType)]
pub struct ChaChaKey {
    pub k0: u32,
    pub k1: u32,
    pub k2: u32,
    pub k3: u32,
    pub k4: u32,
    pub k5: u32,
    pub k6: u32,
    pub k7: u32,
    pub counter_lo: u32,
    pub counter_hi: u32,
}

#[cube]
fn quarter_round(a: u32, b: u32, c: u32, d: u32) -> (u32, u32, u32, u32) {
    let a = a + b;
    let d = d ^ a;
    let d = (d << 16u32) | (d >> 16u32);
    let c = c + d;
    let b = b ^ c;
    let b = (b << 12u32) | (b >> 20u32);
    let a = a + b;
    let d = d ^ a;
    let d = (d << 8u32) | (d >> 24u32);
    let c = c + d;
    let b = b ^ c;
    let b = (b << 7u32) | (b >> 25u32);
    (a, b, c, d)
}

#[cube]
fn mask_value(word: u32, p: f32, scale: f32) -> f32 {
    let u = f32::cast_from(word >> 8u32) * INV_2_24;
    select(u >= p, scale, 0.0f32)
}

/// Word `at` of the thread's run of words (counted from word `skip` of block `counter`) goes to
/// `out[at - skip]` when that is inside `out`.
#[cube]
fn put(out: &mut Tensor<f32>, at: usize, skip: usize, word: u32, p: f32, scale: f32) {
    if at >= skip && at - skip < out.len() {
        out[at - skip] = mask_value(word, p, scale);
    }
}

/// Thread `t` computes block `counter + t` and writes its 16 words to `out[16t - skip ..
/// 16t + 16 - skip]` (the part inside `out`): element `i` is word `16 * counter + skip + i`.
#[cube(launch)]
pub fn chacha8_mask_kernel(out: &mut Tensor<f32>, key: ChaChaKey, skip: u32, p: f32, scale: f32) {
    let blk = ABSOLUTE_POS;
    let base = blk * 16;
    let skip = skip as usize;
    if base >= out.len() + skip {
        terminate!();
    }
    let ctr_lo = key.counter_lo + (blk as u32);
    let mut carry = 0u32;
    if ctr_lo < key.counter_lo {
        carry = 1u32;
    }
    let ctr_hi = key.counter_hi + carry;
    let mut x0 = 0x6170_7865u32;
    let mut x1 = 0x3320_646eu32;
    let mut x2 = 0x7962_2d32u32;
    let mut x3 = 0x6b20_6574u32;
    let mut x4 = key.k0;
    let mut x5 = key.k1;
    let mut x6 = key.k2;
    let mut x7 = key.k3;
    let mut x8 = key.k4;
    let mut x9 = key.k5;
    let mut x10 = key.k6;
    let mut x11 = key.k7;
    let mut x12 = ctr_lo;
    let mut x13 = ctr_hi;
    let mut x14 = 0u32;
    let mut x15 = 0u32;
    for _ in 0..4u32 {
        let (a, b, c, d) = quarter_round(x0, x4, x8, x12);
        x0 = a;
        x4 = b;
        x8 = c;
        x12 = d;
        let (a, b, c, d) = quarter_round(x1, x5, x9, x13);
        x1 = a;
        x5 = b;
        x9 = c;
        x13 = d;
        let (a, b, c, d) = quarter_round(x2, x6, x10, x14);
        x2 = a;
        x6 = b;
        x10 = c;
        x14 = d;
        let (a, b, c, d) = quarter_round(x3, x7, x11, x15);
        x3 = a;
        x7 = b;
        x11 = c;
        x15 = d;
        let (a, b, c, d) = quarter_round(x0, x5, x10, x15);
        x0 = a;
        x5 = b;
        x10 = c;
        x15 = d;
        let (a, b, c, d) = quarter_round(x1, x6, x11, x12);
        x1 = a;
        x6 = b;
        x11 = c;
        x12 = d;
        let (a, b, c, d) = quarter_round(x2, x7, x8, x13);
        x2 = a;
        x7 = b;
        x8 = c;
        x13 = d;
        let (a, b, c, d) = quarter_round(x3, x4, x9, x14);
        x3 = a;
        x4 = b;
        x9 = c;
        x14 = d;
    }
    put(out, base, skip, x0 + 0x6170_7865u32, p, scale);
    put(out, base + 1, skip, x1 + 0x3320_646eu32, p, scale);
    put(out, base + 2, skip, x2 + 0x7962_2d32u32, p, scale);
    put(out, base + 3, skip, x3 + 0x6b20_6574u32, p, scale);
    put(out, base + 4, skip, x4 + key.k0, p, scale);
    put(out, base + 5, skip, x5 + key.k1, p, scale);
    put(out, base + 6, skip, x6 + key.k2, p, scale);
    put(out, base + 7, skip, x7 + key.k3, p, scale);
    put(out, base + 8, skip, x8 + key.k4, p, scale);
    put(out, base + 9, skip, x9 + key.k5, p, scale);
    put(out, base + 10, skip, x10 + key.k6, p, scale);
    put(out, base + 11, skip, x11 + key.k7, p, scale);
    put(out, base + 12, skip, x12 + ctr_lo, p, scale);
    put(out, base + 13, skip, x13 + ctr_hi, p, scale);
    put(out, base + 14, skip, x14, p, scale);
    put(out, base + 15, skip, x15, p, scale);
}
