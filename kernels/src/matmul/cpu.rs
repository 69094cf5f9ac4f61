//! CPU matmul in the fixed k order (see the module doc of `matmul`).
//!
//! Every output is `acc = flush(flush(a*b) + acc)` (the `fma` profile: `flush(fma(a, b, acc))`)
//! over flushed inputs (`arith`'s subnormal rule), k blocks and column panels as the module doc
//! of `matmul` describes. The flushes cost more than the multiply-add itself, so a register tile skips them
//! when they provably change nothing (`SafeTiles`): then the plain loop computes the same bits,
//! and no subnormal ever arises in it, so a CPU in FTZ mode computes them too.

use crate::arith::{MIN_POSITIVE_BITS, changed_by_flush, flush, flushed_if};
use rayon::prelude::*;

/// `a` `[m, k]` and `b` `[k, n]` row-major. `fused` selects the fused multiply-add profile.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, fused: bool) -> Vec<f32> {
    matmul_t((a, false), (b, false), m, k, n, fused)
}

/// `matmul` with either operand given as its transpose's row-major storage (`(data, true)`:
/// `a` stored `[k, m]`, `b` stored `[n, k]`, as a transposed view of the backward pass holds
/// them), read in place: the same bits as `matmul` of the row-major copies.
pub fn matmul_t(
    (a, a_t): (&[f32], bool),
    (b, b_t): (&[f32], bool),
    m: usize,
    k: usize,
    n: usize,
    fused: bool,
) -> Vec<f32> {
    assert_eq!(
        a.len(),
        m * k,
        "matmul: lhs has {} elements, expected {m}x{k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "matmul: rhs has {} elements, expected {k}x{n}",
        b.len()
    );
    let mut c = Vec::new();
    product(
        (a, a_t),
        (b, b_t),
        Out::Fresh(&mut c),
        (m, k, n),
        fused,
        true,
    );
    c
}

/// Where a product is written: into a given buffer, or a new one (`par_overwritten`: neither
/// zeroed nor read before k block 0 stores it). Either way the old contents are never read
/// (`tile`: k block 0 stores without loading).
enum Out<'a> {
    Given(&'a mut [f32]),
    Fresh(&'a mut Vec<f32>),
}

/// `matmul_t` written into `c` (`[m, n]`, any contents: every element is overwritten, none
/// read first), the same bits. `threads`: whether to
/// split the work over the thread pool (`bmm` runs its batch elements on the threads instead,
/// each product on one). Only speed depends on it.
pub(crate) fn matmul_into(
    (a, a_t): (&[f32], bool),
    (b, b_t): (&[f32], bool),
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    fused: bool,
    threads: bool,
) {
    assert_eq!(c.len(), m * n, "matmul_into: shapes");
    product((a, a_t), (b, b_t), Out::Given(c), (m, k, n), fused, threads)
}

/// The product into `c`: `a`'s exponent scan (a flushed copy only where a value needs it),
/// then `blocked` (which packs `b` flushed and scans it as it packs).
fn product(
    (a, a_t): (&[f32], bool),
    (b, b_t): (&[f32], bool),
    mut c: Out,
    (m, k, n): (usize, usize, usize),
    fused: bool,
    threads: bool,
) {
    assert!(a.len() == m * k && b.len() == k * n, "matmul: shapes");
    if n == 0 || m == 0 || k == 0 {
        // No k steps: every output is the empty sum, +0.0 (no tile runs to write it).
        match &mut c {
            Out::Fresh(c) => **c = vec![0f32; m * n],
            Out::Given(c) => c.fill(0.0),
        }
        return;
    }
    // b is flushed and its columns' exponents found as it is packed (`Panel::pack`).
    // a's rows are the columns of its transposed storage; the tiles' packing reads either.
    let (row_exp, a_dirty) = if a_t {
        col_exponents(a, m, threads)
    } else {
        row_exponents(a, m, k, threads)
    };
    let a = &*flushed_if(a_dirty, a);
    let job = Job {
        a,
        a_t,
        m,
        row_exp: &row_exp,
        k,
        n,
        b_t,
        threads,
        safe: SafeTiles {
            threshold: if fused { SAFE_FUSED } else { SAFE_UNFUSED },
        },
    };
    if fused {
        blocked::<true>(&job, b, c)
    } else {
        blocked::<false>(&job, b, c)
    }
}

/// Biased exponent bound below which a tile must flush: a tile is safe when the smallest
/// biased exponent of a nonzero value in its rows of `a`, plus that of its columns of `b`, is
/// at least this. Unfused: then every nonzero product has `|a*b| >= 2^-102`, so every rounded
/// product is a multiple of `2^-125`, so is every exact sum, and a sum below `2^-102` is exact:
/// no product or partial sum is ever nonzero with magnitude `<= 2^-125`, i.e. never tiny, and
/// `flush` is the identity on all of them. (Biased: `(ea - 127) + (eb - 127) >= -102`.)
const SAFE_UNFUSED: u32 = 152;
/// Fused (`a*b + acc` rounded once): the exact product must itself lie on the `2^-125` grid,
/// `ulp(a) * ulp(b) >= 2^-125`, i.e. `(ea - 127 - 23) + (eb - 127 - 23) >= -125`.
const SAFE_FUSED: u32 = 175;
/// The exponent recorded for a row/column holding no nonzero value (never forces a flush).
const NO_VALUE: u32 = 255;

/// The biased exponent `e` of `v` as the tile test sees it (`NO_VALUE` for what `flush` zeroes)
/// and whether `flush` changes `v`.
#[inline(always)]
fn exponent(v: f32) -> (u32, bool) {
    let mag = v.to_bits() & 0x7fff_ffff;
    let e = if mag <= MIN_POSITIVE_BITS {
        NO_VALUE
    } else {
        mag >> 23
    };
    (e, changed_by_flush(v))
}

/// Per row of `a` `[rows, k]`: the smallest biased exponent of a value that survives `flush`
/// (`NO_VALUE` when none), and whether any value needs flushing (threads over blocks of rows).
fn row_exponents(a: &[f32], rows: usize, k: usize, threads: bool) -> (Vec<u32>, bool) {
    const BLOCK: usize = 32;
    let mut out = vec![NO_VALUE; rows];
    if k == 0 {
        return (out, false);
    }
    let scan = |(i, o): (usize, &mut [u32])| {
        let r0 = i * BLOCK;
        row_exponents_dispatch(&a[r0 * k..(r0 + o.len()) * k], k, o)
    };
    let dirty = if threads {
        out.par_chunks_mut(BLOCK)
            .enumerate()
            .map(scan)
            .reduce(|| false, |x, y| x | y)
    } else {
        out.chunks_mut(BLOCK)
            .enumerate()
            .map(scan)
            .fold(false, |x, y| x | y)
    };
    (out, dirty)
}

crate::simd::widest! {
    fn row_exponents_dispatch(a: &[f32], k: usize, out: &mut [u32]) -> bool = row_exponents_block;
}

/// `row_exponents` of the rows `a` holds (`out.len()` rows of `k`). Plain loops (no iterator
/// closures) so that the scan is compiled with the caller's vector width.
#[inline(always)]
fn row_exponents_block(a: &[f32], k: usize, out: &mut [u32]) -> bool {
    let mut dirty = false;
    for (r, o) in out.iter_mut().enumerate() {
        let (mut min, mut d) = (NO_VALUE, false);
        for &v in &a[r * k..(r + 1) * k] {
            let (e, dv) = exponent(v);
            min = min.min(e);
            d |= dv;
        }
        *o = min;
        dirty |= d;
    }
    dirty
}

/// Per column of a row-major `[rows, n]` matrix (`a`'s transposed storage `[k, m]`: `b` is
/// scanned as it is packed, `strip_exponents`), as `row_exponents` (threads over blocks of rows;
/// `min` is exact, so the combination order does not matter).
fn col_exponents(b: &[f32], n: usize, threads: bool) -> (Vec<u32>, bool) {
    const BLOCK: usize = 64;
    let merge = |(mut x, dx): (Vec<u32>, bool), (y, dy): (Vec<u32>, bool)| {
        for (a, b) in x.iter_mut().zip(y) {
            *a = (*a).min(b);
        }
        (x, dx | dy)
    };
    let none = || (vec![NO_VALUE; n], false);
    if threads {
        b.par_chunks(BLOCK * n)
            .map(|rows| col_exponents_dispatch(rows, n))
            .reduce(none, merge)
    } else {
        b.chunks(BLOCK * n)
            .map(|rows| col_exponents_dispatch(rows, n))
            .fold(none(), merge)
    }
}

crate::simd::widest! {
    fn col_exponents_dispatch(rows: &[f32], n: usize) -> (Vec<u32>, bool) = col_exponents_block;
}

#[inline(always)]
fn col_exponents_block(rows: &[f32], n: usize) -> (Vec<u32>, bool) {
    let (mut kept, mut least) = (vec![u32::MAX; n], vec![u32::MAX; n]);
    for row in rows.chunks_exact(n) {
        fold_magnitudes(row, &mut kept, &mut least);
    }
    let mut out = vec![NO_VALUE; n];
    let dirty = column_exponents(&kept, &least, &mut out);
    (out, dirty)
}

/// One row of values into per-column minimums (a plain loop, vector code): `kept`, the
/// smallest magnitude `flush` keeps (its exponent is the column's smallest exponent), and
/// `least`, the smallest magnitude minus one (below `MIN_POSITIVE_BITS` exactly when some
/// value is changed by `flush`). `min` is exact, so the order of the rows does not matter.
#[inline(always)]
fn fold_magnitudes(row: &[f32], kept: &mut [u32], least: &mut [u32]) {
    for ((v, k), l) in row.iter().zip(kept.iter_mut()).zip(least.iter_mut()) {
        let mag = v.to_bits() & 0x7fff_ffff;
        let m = if mag > MIN_POSITIVE_BITS {
            mag
        } else {
            u32::MAX
        };
        *k = (*k).min(m);
        *l = (*l).min(mag.wrapping_sub(1));
    }
}

/// `fold_magnitudes`' minimums as the exponents `exponent` gives (`NO_VALUE` for a column
/// holding nothing `flush` keeps), into `out`; whether any value needs flushing.
#[inline(always)]
fn column_exponents(kept: &[u32], least: &[u32], out: &mut [u32]) -> bool {
    let mut low = u32::MAX;
    for ((o, &k), &l) in out.iter_mut().zip(kept).zip(least) {
        *o = if k == u32::MAX { NO_VALUE } else { k >> 23 };
        low = low.min(l);
    }
    low < MIN_POSITIVE_BITS
}

/// Which register tiles may skip the flushes (see `SAFE_UNFUSED`), from the exponents of the
/// tile's rows of `a` (`Job::row_exp`) and columns of `b` (`Panel::cols`), each over all of k.
struct SafeTiles {
    threshold: u32,
}

impl SafeTiles {
    fn skip_flush(&self, rows: &[u32], cols: &[u32]) -> bool {
        let min = |s: &[u32]| s.iter().copied().min().unwrap_or(NO_VALUE);
        min(rows) + min(cols) >= self.threshold
    }
}

/// The widest register tile this CPU runs (or, for panels 8 columns wide, its 8-column form).
/// Only speed depends on the choice: every tile computes each output with its own accumulator in
/// k order, so all of them give the same bits.
fn block_dispatch<const FUSED: bool>(
    job: &Job,
    panel: &Panel,
    packed: &mut PackedA,
    out: &mut [f32],
    r0: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `block_avx512` is compiled for (checked above).
            #[allow(unsafe_code)]
            unsafe {
                return block_avx512::<FUSED>(job, panel, packed, out, r0);
            }
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `block_avx2` is compiled for (checked above).
            #[allow(unsafe_code)]
            unsafe {
                return block_avx2::<FUSED>(job, panel, packed, out, r0);
            }
        }
    }
    rows_block::<FUSED, 4, 8>(job, panel, packed, out, r0)
}

/// 12 rows x 32 columns of accumulators in 24 zmm registers (8 x 8 for narrow panels; `a * b +
/// c` stays two roundings: rustc never contracts; FMA is used only by `mul_add`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn block_avx512<const FUSED: bool>(
    job: &Job,
    panel: &Panel,
    packed: &mut PackedA,
    out: &mut [f32],
    r0: usize,
) {
    if panel.w == NARROW {
        rows_block::<FUSED, 8, NARROW>(job, panel, packed, out, r0)
    } else {
        rows_block::<FUSED, 12, 32>(job, panel, packed, out, r0)
    }
}

/// 6 rows x 16 columns of accumulators in 12 ymm registers (BLIS's Haswell shape; 6 x 8 for
/// narrow panels).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_avx2<const FUSED: bool>(
    job: &Job,
    panel: &Panel,
    packed: &mut PackedA,
    out: &mut [f32],
    r0: usize,
) {
    if panel.w == NARROW {
        rows_block::<FUSED, 6, NARROW>(job, panel, packed, out, r0)
    } else {
        rows_block::<FUSED, 6, 16>(job, panel, packed, out, r0)
    }
}

/// The strip width for products of at most this many columns (a convolution's few output
/// channels): a wider tile would mostly compute padding.
const NARROW: usize = 8;

/// One multiply-add step; `FLUSH` applies `arith`'s rule to each rounded value.
#[inline(always)]
fn mad<const FUSED: bool, const FLUSH: bool>(a: f32, b: f32, c: f32) -> f32 {
    match (FUSED, FLUSH) {
        (true, false) => a.mul_add(b, c),
        (true, true) => flush(a.mul_add(b, c)),
        (false, false) => a * b + c,
        (false, true) => flush(flush(a * b) + c),
    }
}

/// k steps per block (`Panel`): an output's accumulator is stored to `c` as the f32 it is after
/// step `p0 + KC - 1` and loaded back for step `p0 + KC` — the same order, only a pause. Long
/// blocks mean few such pauses (each a load and store of every output, from L3 or memory) and
/// few panels: 512 ran the large MLP's step 1.03-1.04x as fast as 256 (2-core AMD EPYC, AVX-512;
/// 128, 192 and 384 were no faster than 256). Only speed depends on it.
const KC: usize = 512;
/// Columns per panel: the packed panel (`KC x NC` f32, 512 KiB) stays in the L2 cache while
/// every row group of a task passes over it.
const NC: usize = 256;
/// Output rows per parallel task (a multiple of every register tile's row count: 4, 6, 8, 12).
const ROWS: usize = 24;

/// One product: flushed `a` and how it is stored, the row exponents, how `b` is stored, and
/// the tile test.
struct Job<'a> {
    /// Flushed `a`: `[m, k]` row-major, or (`a_t`) its transpose's storage `[k, m]`.
    a: &'a [f32],
    a_t: bool,
    m: usize,
    row_exp: &'a [u32],
    k: usize,
    n: usize,
    /// `b` is stored transposed (`[n, k]`): the packing reads it in place.
    b_t: bool,
    /// Whether to split the work over the thread pool.
    threads: bool,
    safe: SafeTiles,
}

/// `b[p0..p0 + kc, j0..j0 + nc]` flushed (`arith`) and packed as strips of `w` columns: strip
/// `s` holds, for p in `0..kc`, the `w` values `b[p0 + p, j0 + s*w ..]` contiguously (zeros
/// past column `n`, whose outputs are computed and never stored).
struct Panel {
    data: Vec<f32>,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    w: usize,
    /// Per column `j0..j0 + nc`: the smallest biased exponent of a value `flush` keeps
    /// (`NO_VALUE` when none), over this panel's k steps when packed, then over all of k
    /// (`panels` merges the panels of each column range before any tile runs).
    cols: Vec<u32>,
}

impl Panel {
    fn pack(
        b: &[f32],
        (b_t, k, n): (bool, usize, usize),
        (p0, kc): (usize, usize),
        (j0, nc): (usize, usize),
        w: usize,
    ) -> Self {
        let len = nc.div_ceil(w) * kc * w;
        // A kept buffer: its first `len` elements are all written below (padding included).
        let mut data = kept(len);
        fit(&mut data, len);
        pack_strips(b, (b_t, k, n), (p0, kc), (j0, nc), w, &mut data[..len]);
        // The exponent scan reads the packed copy while it is still in cache (one pass over
        // `b` in memory instead of two); the rare panel holding a value `flush` changes is
        // then flushed in place.
        let mut cols = vec![NO_VALUE; nc.div_ceil(w) * w];
        if strip_exponents(&data[..len], w, &mut cols) {
            for v in &mut data[..len] {
                *v = flush(*v);
            }
        }
        cols.truncate(nc);
        Panel {
            data,
            p0,
            kc,
            j0,
            nc,
            w,
            cols,
        }
    }
}

/// `Panel::pack`'s strips into `data` (all of it written), compiled for the widest vector
/// extension the CPU has (`simd::widest!`: exact copies, so only speed depends on it).
#[inline(always)]
fn pack_strips_body(
    b: &[f32],
    (b_t, k, n): (bool, usize, usize),
    (p0, kc): (usize, usize),
    (j0, nc): (usize, usize),
    w: usize,
    data: &mut [f32],
) {
    for (s, strip) in data.chunks_exact_mut(kc * w).enumerate() {
        let c0 = j0 + s * w;
        let width = w.min(j0 + nc - c0);
        if b_t {
            // b stored [n, k]: column c of b is the contiguous row c of the storage. Blocks
            // of 8 columns x 8 steps move as whole arrays (loaded along k, stored along the
            // strip's rows); the columns and steps left over one value at a time.
            let col = |c: usize| &b[(c0 + c) * k + p0..(c0 + c) * k + p0 + kc];
            let mut c = 0;
            while c + 8 <= width {
                let src: [&[f32]; 8] = std::array::from_fn(|i| col(c + i));
                let mut p = 0;
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx") {
                    // SAFETY: the CPU has AVX (checked above).
                    #[allow(unsafe_code)]
                    unsafe {
                        p = transpose_8s_avx(&src, kc, strip, w, c);
                    }
                }
                while p + 8 <= kc {
                    let blk: [[f32; 8]; 8] =
                        std::array::from_fn(|i| src[i][p..p + 8].try_into().expect("8 steps"));
                    for (q, row) in strip[p * w..(p + 8) * w].chunks_exact_mut(w).enumerate() {
                        let dst: &mut [f32; 8] =
                            (&mut row[c..c + 8]).try_into().expect("8 columns");
                        *dst = std::array::from_fn(|i| blk[i][q]);
                    }
                    p += 8;
                }
                for q in p..kc {
                    for (i, s) in src.iter().enumerate() {
                        strip[q * w + c + i] = s[q];
                    }
                }
                c += 8;
            }
            for c in c..width {
                for (p, &v) in col(c).iter().enumerate() {
                    strip[p * w + c] = v;
                }
            }
            if width < w {
                for dst in strip.chunks_exact_mut(w) {
                    dst[width..].fill(0.0);
                }
            }
        } else {
            for (p, dst) in strip.chunks_exact_mut(w).enumerate() {
                let src = &b[(p0 + p) * n + c0..(p0 + p) * n + c0 + width];
                copy_row(dst, src);
                dst[width..].fill(0.0);
            }
        }
    }
}

/// The whole blocks of 8 steps of `pack_strips_body`'s transposed copy, for the 8 columns `src`
/// (each `kc` contiguous steps) into columns `c..c + 8` of `strip` (rows of `w`), as 8 x 8
/// register transposes: exact copies, so the same bits. Returns the steps done (`kc` rounded
/// down to a multiple of 8). The scalar form of this copy was 14% of a 512 x 2048 x 2048
/// product with `b` transposed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn transpose_8s_avx(src: &[&[f32]; 8], kc: usize, strip: &mut [f32], w: usize, c: usize) -> usize {
    use std::arch::x86_64::*;
    assert!(src.iter().all(|s| s.len() >= kc) && c + 8 <= w && strip.len() >= kc * w);
    let steps = kc / 8 * 8;
    for p in (0..steps).step_by(8) {
        // SAFETY: every load reads `src[i][p..p + 8]` with `p + 8 <= kc <= src[i].len()`, every
        // store writes `strip[(p + q) * w + c..][..8]` with `p + q < kc` and `c + 8 <= w`
        // (asserted above); unaligned loads and stores only.
        #[allow(unsafe_code)]
        unsafe {
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src[i].as_ptr().add(p)));
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
            // Row q holds step p + q of the 8 columns.
            let rows = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (q, row) in rows.into_iter().enumerate() {
                _mm256_storeu_ps(strip.as_mut_ptr().add((p + q) * w + c), row);
            }
        }
    }
    steps
}

crate::simd::widest! {
    fn pack_strips(
        b: &[f32],
        shape: (bool, usize, usize),
        steps: (usize, usize),
        cols: (usize, usize),
        w: usize,
        data: &mut [f32],
    ) = pack_strips_body;
}

/// Per column of the packed strips `data` (strips of `w` columns): the smallest exponent as
/// `exponent` gives it, into `cols` (`w` per strip; the padding's zeros never lower it), and
/// whether any value needs flushing (`fold_magnitudes`, `column_exponents`).
#[inline(always)]
fn strip_exponents_body(data: &[f32], w: usize, cols: &mut [u32]) -> bool {
    #[inline(always)]
    fn fixed<const W: usize>(data: &[f32], cols: &mut [u32]) -> bool {
        let strips = cols.len() / W;
        let mut dirty = false;
        for (strip, out) in data
            .chunks_exact(data.len() / strips.max(1))
            .zip(cols.chunks_exact_mut(W))
        {
            // Arrays of `W`: the minimums stay in registers.
            let (mut kept, mut least) = ([u32::MAX; W], [u32::MAX; W]);
            for row in strip.chunks_exact(W) {
                let row: &[f32; W] = row.try_into().expect("W columns");
                fold_magnitudes(row, &mut kept, &mut least);
            }
            dirty |= column_exponents(&kept, &least, out);
        }
        dirty
    }
    match w {
        8 => fixed::<8>(data, cols),
        16 => fixed::<16>(data, cols),
        32 => fixed::<32>(data, cols),
        _ => unreachable!("strip widths are 8, 16 and 32 (tile_width)"),
    }
}

crate::simd::widest! {
    fn strip_exponents(data: &[f32], w: usize, cols: &mut [u32]) -> bool = strip_exponents_body;
}

/// Buffers kept from earlier products (the packed panels and rows of `a`), so that packing
/// neither allocates nor zeroes memory that it overwrites in full anyway. Only speed depends on
/// them: a buffer's old contents are never read.
static KEPT: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
/// At most this many buffers are kept (a product of the large MLP packs 32 panels), none over
/// `KEPT_LEN` elements (~1 MiB: a task's packed k block of `a`, at most `MC + ROWS` rows of
/// `KC` steps; a panel, `KC * NC`, is half of that), so at most ~100 MiB.
const KEPT_MAX: usize = 96;
const KEPT_LEN: usize = (MC + ROWS) * KC;

/// A kept buffer (or a new, empty one), holding arbitrary values of earlier products: one
/// already holding `want` elements where there is one (growing a shorter one zeroes the
/// growth: panels and packed rows of `a` differ in size), else the last kept.
fn kept(want: usize) -> Vec<f32> {
    KEPT.lock()
        .ok()
        .and_then(|mut l| match l.iter().position(|v| v.len() >= want) {
            Some(i) => Some(l.swap_remove(i)),
            None => l.pop(),
        })
        .unwrap_or_default()
}

/// `v` holding at least `len` elements: grown with zeros where it is shorter, never cut (a
/// buffer keeps the largest length it has had, so reusing it writes nothing; the caller uses
/// `v[..len]` and writes all of it).
fn fit(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        // Exactly `len` (no doubling), so that the buffer stays within `KEPT_LEN` and is kept.
        v.reserve_exact(len - v.len());
        v.resize(len, 0.0);
    }
}

/// Hands buffers back for `kept`.
fn keep(buffers: impl IntoIterator<Item = Vec<f32>>) {
    if let Ok(mut l) = KEPT.lock() {
        for v in buffers {
            if l.len() < KEPT_MAX && v.capacity() <= KEPT_LEN {
                l.push(v);
            }
        }
    }
}

/// `dst[..src.len()] = src`, as fixed-size moves for the strip widths (a `memcpy` call per
/// 8-32 floats costs more than the copy).
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) -> bool {
        match (<&mut [f32; N]>::try_from(dst), <&[f32; N]>::try_from(src)) {
            (Ok(d), Ok(s)) => {
                *d = *s;
                true
            }
            _ => false,
        }
    }
    if !(fixed::<8>(dst, src) || fixed::<16>(dst, src) || fixed::<32>(dst, src)) {
        dst[..src.len()].copy_from_slice(src);
    }
}

/// The register tile width (columns) `block_dispatch` runs for `n` output columns: `NARROW`
/// when `n` is at most that, else the widest tile this CPU has.
fn tile_width(n: usize) -> usize {
    if n <= NARROW {
        return NARROW;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return 32;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return 16;
        }
    }
    8
}

/// `c = a · b` (`c` given with any contents, or built; never read before k block 0 stores it),
/// blocked: every (block of `KC` steps, panel of `NC` columns) pair packed once, then threads
/// over blocks of rows run the register tiles over them, k blocks in order (`panels`). Every output still sees `p = 0, 1, ..., k-1` in order.
fn blocked<const FUSED: bool>(job: &Job, b: &[f32], c: Out) {
    panels(job, b, c, tile_width(job.n), &|panel, packed, out, r0| {
        block_dispatch::<FUSED>(job, panel, packed, out, r0)
    })
}

/// The loops of `blocked` around `run(panel, packed rows of a, rows of c, first row)`, strips
/// `w` wide: every panel packed first (in parallel), then one parallel pass in which each task
/// takes a block of rows through all panels — k blocks outer, in order, column panels inner, so
/// each k block of the task's rows of `a` is packed once (`PackedA`) for all column panels.
/// Every output still sees its k blocks in order. Two thread hand-offs per product, however
/// many panels.
fn panels(job: &Job, b: &[f32], c: Out, w: usize, run: &RunTile) {
    let (k, n) = (job.k, job.n);
    let mut list = Vec::new();
    for p0 in (0..k).step_by(KC) {
        for j0 in (0..n).step_by(NC) {
            list.push(((p0, KC.min(k - p0)), (j0, NC.min(n - j0))));
        }
    }
    let pack = |(ks, js)| Panel::pack(b, (job.b_t, k, n), ks, js, w);
    // Each column's exponent over all of k: the minimum over the panels holding that column.
    let merge = |packed: &mut Vec<Panel>| {
        let mut cols = vec![NO_VALUE; n];
        for p in packed.iter() {
            for (c, &e) in cols[p.j0..p.j0 + p.nc].iter_mut().zip(&p.cols) {
                *c = (*c).min(e);
            }
        }
        for p in packed.iter_mut() {
            p.cols.copy_from_slice(&cols[p.j0..p.j0 + p.nc]);
        }
    };
    let rows_of_c = job.m;
    let task = |(blk, out): (usize, &mut [f32]), packed: &[Panel], rows: usize| {
        // The task's rows (`out`'s), padded to whole row groups of any tile, by one k block.
        let want = (out.len() / n.max(1)).div_ceil(ROWS) * ROWS * KC.min(k);
        let mut a = PackedA {
            p0: usize::MAX,
            data: kept(want),
        };
        for panel in packed {
            run(panel, &mut a, out, blk * rows);
        }
        keep([a.data]);
    };
    if job.threads {
        let mut packed: Vec<Panel> = list.into_par_iter().map(pack).collect();
        merge(&mut packed);
        let rows = rows_per_task(rows_of_c);
        match c {
            Out::Given(c) => c
                .par_chunks_mut(n * rows)
                .enumerate()
                .for_each(|x| task(x, &packed, rows)),
            Out::Fresh(c) => {
                let fill = |i, out: &mut [f32]| task((i, out), &packed, rows);
                // SAFETY: k > 0 (`product`), so k block 0 runs a tile over every output of the task's
                // rows (all column panels, all strips, all row groups), and a tile in k block
                // 0 stores its outputs without loading them (`tile`'s `first`); later k blocks
                // load only what block 0 stored.
                #[allow(unsafe_code)]
                let v = unsafe { crate::heap::par_overwritten(job.m * n, n * rows, fill) };
                *c = v;
            }
        }
        keep(packed.into_iter().map(|p| p.data));
    } else {
        let mut packed: Vec<Panel> = list.into_iter().map(pack).collect();
        merge(&mut packed);
        let rows = rows_of_c.div_ceil(ROWS).max(1) * ROWS;
        let c = match c {
            Out::Given(c) => c,
            Out::Fresh(c) => {
                *c = vec![0f32; job.m * n];
                c.as_mut_slice()
            }
        };
        c.chunks_mut(n * rows)
            .enumerate()
            .for_each(|x| task(x, &packed, rows));
        keep(packed.into_iter().map(|p| p.data));
    }
}

/// Rows per parallel task for `m` output rows: the same number of tasks on every thread, each
/// as tall as `MC` allows, a multiple of `ROWS` (so of every tile's row count). Tall tasks
/// matter: a task brings each packed panel of `b` into its cache once and runs all its row
/// groups over it (with k blocks of 256, a task of 128 rows ran the 512 x 2048 x 2048 product
/// at 273 GFLOP/s and one of 256 rows at 325; 2-core AMD EPYC, AVX-512). Only speed depends
/// on it.
fn rows_per_task(m: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let tasks = threads * m.div_ceil(threads * MC);
    m.div_ceil(tasks).div_ceil(ROWS).max(1) * ROWS
}

/// The most rows a task takes (its packed k block of `a`, `MC x KC` f32, is 1 MiB: it streams
/// through once per panel, one row group at a time, while the panel stays in L2).
const MC: usize = 512;

/// Rows `r0..` of `out` (`[rows, n]`, holding each output's accumulator so far) over one
/// panel, in `R x W` register tiles: the rows' k block of `a` packed first (`pack_a`), then
/// row groups outer (a group's packed `a`, `KC x R`, stays in L1 across the strips), strips
/// inner (each `KC x W`, read from the panel in L2).
#[inline(always)]
fn rows_block<const FUSED: bool, const R: usize, const W: usize>(
    job: &Job,
    panel: &Panel,
    packed: &mut PackedA,
    out: &mut [f32],
    r0: usize,
) {
    debug_assert_eq!(W, panel.w);
    let n = job.n;
    let rows = out.len() / n;
    let kc = panel.kc;
    if packed.p0 != panel.p0 {
        pack_a::<R>(job, r0, rows, panel.p0, kc, &mut packed.data);
        packed.p0 = panel.p0;
    }
    let packed = &packed.data[..rows.div_ceil(R) * kc * R];
    let strips = panel.nc.div_ceil(W);
    let first = panel.p0 == 0;
    let mut g = 0;
    while g < rows {
        let live = R.min(rows - g);
        let group = &packed[(g / R) * kc * R..(g / R + 1) * kc * R];
        let re = &job.row_exp[r0 + g..r0 + g + live];
        for s in 0..strips {
            let strip: &[f32] = &panel.data[s * kc * W..(s + 1) * kc * W];
            let c0 = panel.j0 + s * W;
            let width = W.min(panel.j0 + panel.nc - c0);
            // The next tile's accumulators (the next strip, else the next row group's first).
            let (ng, nc0) = if s + 1 < strips {
                (g, c0 + W)
            } else {
                (g + R, panel.j0)
            };
            if ng < rows && !first {
                prefetch_rows(out, ng * n + nc0, n, R.min(rows - ng), W);
            }
            let tile_out = &mut out[g * n..];
            let ce = &panel.cols[c0 - panel.j0..c0 - panel.j0 + width];
            if job.safe.skip_flush(re, ce) {
                tile::<FUSED, false, R, W>(group, strip, tile_out, n, c0, (live, width), first);
            } else {
                tile::<FUSED, true, R, W>(group, strip, tile_out, n, c0, (live, width), first);
            }
        }
        g += R;
    }
}

/// Asks the cache for `rows` rows of `w` floats of `out` from `at` (row stride `n`): a tile's
/// accumulators, read from L3 or memory in every k block after the first. Only speed depends
/// on it (a prefetch reads nothing into the program).
#[inline(always)]
fn prefetch_rows(out: &[f32], at: usize, n: usize, rows: usize, w: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let base = out.as_ptr();
        for r in 0..rows {
            let row = at + r * n;
            for j in [0, 16, w - 1] {
                if row + j < out.len() {
                    // SAFETY: a prefetch hint reads nothing and cannot fault; the address is
                    // inside `out` (checked above).
                    #[allow(unsafe_code)]
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(row + j).cast())
                    };
                }
            }
        }
    }
}

/// `run(panel, packed rows of a, rows of c, first row)`: the register tiles over one panel.
type RunTile<'a> = dyn Fn(&Panel, &mut PackedA, &mut [f32], usize) + Sync + 'a;

/// A task's rows of `a` for one k block (`p0`), packed by `pack_a` for the register tiles of
/// every column panel of that block.
struct PackedA {
    p0: usize,
    data: Vec<f32>,
}

/// Rows `r0..r0 + rows` of `a`, steps `p0..p0 + kc`, packed into `dst` in groups of `R` rows:
/// group `g` holds, for each step `p`, the `R` values `a[r0 + g*R + r, p0 + p]` contiguously
/// (zeros for rows past the end, whose outputs are computed and never stored) — exact copies,
/// read from either layout of `a`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane `r` of step `p`: constant-bound loops
fn pack_a<const R: usize>(
    job: &Job,
    r0: usize,
    rows: usize,
    p0: usize,
    kc: usize,
    dst: &mut Vec<f32>,
) {
    let groups = rows.div_ceil(R);
    // The first `groups * kc * R` elements are all written below (the padding rows' zeros too).
    fit(dst, groups * kc * R);
    for (g, dst) in dst[..groups * kc * R].chunks_exact_mut(kc * R).enumerate() {
        let live = R.min(rows - g * R);
        let first = r0 + g * R;
        if job.a_t {
            // a stored [k, m]: step p's values of consecutive rows are contiguous.
            for (p, d) in dst.chunks_exact_mut(R).enumerate() {
                let at = (p0 + p) * job.m + first;
                let src = &job.a[at..at + live];
                // A full group moves as one `[f32; R]` (no `memcpy` call per step).
                if let (Ok(d), Ok(src)) = (
                    <&mut [f32; R]>::try_from(&mut *d),
                    <&[f32; R]>::try_from(src),
                ) {
                    *d = *src;
                } else {
                    d[..live].copy_from_slice(src);
                    d[live..].fill(0.0);
                }
            }
        } else {
            // Row r of the group (the last live row again for the padding, zeroed below).
            let src: [&[f32]; R] = std::array::from_fn(|r| {
                let at = (first + r.min(live - 1)) * job.k + p0;
                &job.a[at..at + kc]
            });
            for (p, d) in dst.chunks_exact_mut(R).enumerate() {
                let d: &mut [f32; R] = d.try_into().expect("R rows");
                for r in 0..R {
                    d[r] = src[r][p];
                }
            }
            if live < R {
                for d in dst.chunks_exact_mut(R) {
                    d[live..].fill(0.0);
                }
            }
        }
    }
}

/// One `R x W` tile: accumulators loaded from `out` (rows `0..live`, columns `c0..c0 + width`;
/// the padding starts at zero), `kc` steps in order over the packed strip, stored back. In k
/// block 0 (`first`) the accumulators start at +0.0 without reading `out` (the reference loop's
/// start; `out`'s old contents never matter).
#[inline(always)]
fn tile<const FUSED: bool, const FLUSH: bool, const R: usize, const W: usize>(
    group: &[f32],
    strip: &[f32],
    out: &mut [f32],
    n: usize,
    c0: usize,
    (live, width): (usize, usize),
    first: bool,
) {
    // Whole-array moves with constant indices only, so the accumulators live in registers.
    // A full-width row moves as one `[f32; W]` (vector moves, no `memcpy` call per row).
    let mut acc = [[0f32; W]; R];
    for (r, a) in acc.iter_mut().enumerate() {
        if r < live && !first {
            let src = &out[r * n + c0..r * n + c0 + width];
            if let Ok(full) = <&[f32; W]>::try_from(src) {
                *a = *full;
            } else {
                let mut row = [0f32; W];
                row[..width].copy_from_slice(src);
                *a = row;
            }
        }
    }
    if !FLUSH && simd_steps::<FUSED, R, W>(group, strip, acc.as_flattened_mut()) {
        // The steps ran as explicit vector instructions (the same operations per lane).
    } else {
        for (bw, aw) in strip.chunks_exact(W).zip(group.chunks_exact(R)) {
            let bw: &[f32; W] = bw.try_into().expect("W columns");
            let aw: &[f32; R] = aw.try_into().expect("R rows");
            for r in 0..R {
                let av = aw[r];
                for j in 0..W {
                    acc[r][j] = mad::<FUSED, FLUSH>(av, bw[j], acc[r][j]);
                }
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        if r < live {
            let dst = &mut out[r * n + c0..r * n + c0 + width];
            if let Ok(full) = <&mut [f32; W]>::try_from(&mut *dst) {
                *full = *a;
            } else {
                let row = *a;
                dst.copy_from_slice(&row[..width]);
            }
        }
    }
}

/// A flush-free tile's k steps written with explicit vector instructions, for the two x86-64
/// tile widths (`W = 32`: AVX-512, two zmm per row; `W = 16`: AVX2, two ymm per row; each
/// only where the CPU has the features, else the plain loop runs): per step, each row's broadcast `a` times the
/// strip's `W` values, added to the row's accumulators — `fma(a, b, acc)` (`FUSED`) or
/// `(a * b) + acc`, the operations `mad` names, lane by lane, so the same bits. Left to the
/// compiler, the same loop was sometimes not vectorised at all (AVX-512: the 8 x 32 tile and,
/// unfused, the 6 x 16 one ran as scalar code with the accumulators on the stack, ~9x slower).
/// Returns `false` (nothing done) for other widths and CPUs.
#[inline(always)]
#[allow(unused_variables)]
fn simd_steps<const FUSED: bool, const R: usize, const W: usize>(
    group: &[f32],
    strip: &[f32],
    acc: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let kc = group.len() / R;
        assert!(strip.len() == kc * W && acc.len() == R * W, "tile: shapes");
        if W == 32
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX-512F and FMA (checked above); the slices hold `kc * R`,
            // `kc * 32` and `R * 32` values (asserted above).
            #[allow(unsafe_code)]
            unsafe {
                steps_avx512::<FUSED, R>(group.as_ptr(), strip.as_ptr(), kc, acc.as_mut_ptr())
            };
            return true;
        }
        if W == 16
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked above); the slices hold `kc * R`,
            // `kc * 16` and `R * 16` values (asserted above).
            #[allow(unsafe_code)]
            unsafe {
                steps_avx2::<FUSED, R>(group.as_ptr(), strip.as_ptr(), kc, acc.as_mut_ptr())
            };
            return true;
        }
    }
    false
}

/// `simd_steps` for 32-wide tiles: `R` rows x 2 zmm accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(unsafe_code)]
#[inline]
unsafe fn steps_avx512<const FUSED: bool, const R: usize>(
    a: *const f32,
    b: *const f32,
    kc: usize,
    acc: *mut f32,
) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): the caller guarantees `a` holds `kc * R` values, `b` `kc * 32` and
    // `acc` `R * 32`; unaligned loads and stores only.
    unsafe {
        let mut c: [[__m512; 2]; R] = std::array::from_fn(|r| {
            [
                _mm512_loadu_ps(acc.add(r * 32)),
                _mm512_loadu_ps(acc.add(r * 32 + 16)),
            ]
        });
        for p in 0..kc {
            let b0 = _mm512_loadu_ps(b.add(p * 32));
            let b1 = _mm512_loadu_ps(b.add(p * 32 + 16));
            for (r, cr) in c.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(p * R + r));
                if FUSED {
                    cr[0] = _mm512_fmadd_ps(av, b0, cr[0]);
                    cr[1] = _mm512_fmadd_ps(av, b1, cr[1]);
                } else {
                    cr[0] = _mm512_add_ps(_mm512_mul_ps(av, b0), cr[0]);
                    cr[1] = _mm512_add_ps(_mm512_mul_ps(av, b1), cr[1]);
                }
            }
        }
        for (r, cr) in c.iter().enumerate() {
            _mm512_storeu_ps(acc.add(r * 32), cr[0]);
            _mm512_storeu_ps(acc.add(r * 32 + 16), cr[1]);
        }
    }
}

/// `simd_steps` for 16-wide tiles: `R` rows x 2 ymm accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
#[inline]
unsafe fn steps_avx2<const FUSED: bool, const R: usize>(
    a: *const f32,
    b: *const f32,
    kc: usize,
    acc: *mut f32,
) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): as `steps_avx512`, with 16 columns.
    unsafe {
        let mut c: [[__m256; 2]; R] = std::array::from_fn(|r| {
            [
                _mm256_loadu_ps(acc.add(r * 16)),
                _mm256_loadu_ps(acc.add(r * 16 + 8)),
            ]
        });
        for p in 0..kc {
            let b0 = _mm256_loadu_ps(b.add(p * 16));
            let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
            for (r, cr) in c.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*a.add(p * R + r));
                if FUSED {
                    cr[0] = _mm256_fmadd_ps(av, b0, cr[0]);
                    cr[1] = _mm256_fmadd_ps(av, b1, cr[1]);
                } else {
                    cr[0] = _mm256_add_ps(_mm256_mul_ps(av, b0), cr[0]);
                    cr[1] = _mm256_add_ps(_mm256_mul_ps(av, b1), cr[1]);
                }
            }
        }
        for (r, cr) in c.iter().enumerate() {
            _mm256_storeu_ps(acc.add(r * 16), cr[0]);
            _mm256_storeu_ps(acc.add(r * 16 + 8), cr[1]);
        }
    }
}

/// The plain triple loop: the reference the fast version must match bit for bit. Every read,
/// product and sum flushed (`arith`), no shortcuts.
pub fn matmul_reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    matmul_reference_in(a, b, m, k, n, false)
}

/// `matmul_reference` in the profile `fused` selects: `acc = flush(fma(a, b, acc))` when fused.
pub fn matmul_reference_in(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    fused: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for p in 0..k {
                let (x, y) = (flush(a[i * k + p]), flush(b[p * n + j]));
                acc = if fused {
                    flush(x.mul_add(y, acc))
                } else {
                    crate::arith::mad(x, y, acc)
                };
            }
            out[i * n + j] = acc;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_core::SeedStream;

    fn seeded(n: usize, name: &str) -> Vec<f32> {
        let mut s = SeedStream::new(5, name);
        (0..n).map(|_| s.uniform_range(-2.0, 2.0)).collect()
    }

    fn first_mismatch(got: &[f32], want: &[f32]) -> Option<usize> {
        got.iter()
            .zip(want)
            .position(|(x, y)| x.to_bits() != y.to_bits())
    }

    #[test]
    fn fast_matmul_matches_the_reference_loop_bitwise() {
        for (m, k, n) in [
            (1, 1, 1),
            (3, 7, 5),
            (4, 1, 600),
            (9, 513, 17),
            (33, 64, 1030),
            (17, 40, 97),
            (8, 3, 32),
            (128, 784, 256),
            (0, 3, 2),
            (2, 0, 3),
        ] {
            let (a, b) = (seeded(m * k, "a"), seeded(k * n, "b"));
            let fast = matmul(&a, &b, m, k, n, false);
            let slow = matmul_reference(&a, &b, m, k, n);
            let bad = first_mismatch(&fast, &slow);
            assert_eq!(bad, None, "{m}x{k}x{n}: first mismatch at {bad:?}");
        }
    }

    /// Inputs where some tiles underflow: rows of `a` and columns of `b` scaled down so their
    /// products and partial sums land below `MIN_POSITIVE` (or just above it), plus explicit
    /// subnormals, `±MIN_POSITIVE` and zeros; other tiles stay ordinary.
    fn underflowing(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let (mut a, mut b) = (seeded(m * k, "ua"), seeded(k * n, "ub"));
        for (i, v) in a.iter_mut().enumerate() {
            let (r, p) = (i / k, i % k);
            if r % 3 == 1 {
                *v *= 2f32.powi(-60 - (p % 5) as i32);
            }
            match i % 29 {
                3 => *v = f32::from_bits(1 + i as u32),
                7 => *v = -f32::MIN_POSITIVE,
                11 => *v = 0.0,
                _ => {}
            }
        }
        for (i, v) in b.iter_mut().enumerate() {
            let j = i % n;
            if j % 4 == 2 {
                *v *= 2f32.powi(-62);
            }
            if i % 31 == 5 {
                *v = -f32::from_bits(0x7f_ffff);
            }
        }
        (a, b)
    }

    #[test]
    fn underflowing_products_and_sums_match_the_reference_with_and_without_cpu_ftz() {
        let (mut tiny, mut ordinary) = (0, 0);
        for (m, k, n) in [(1, 1, 1), (9, 37, 41), (17, 200, 70), (33, 5, 9)] {
            let (a, b) = underflowing(m, k, n);
            let want = matmul_reference(&a, &b, m, k, n);
            tiny += want.iter().filter(|&&v| v.abs() < 1e-30).count();
            ordinary += want.iter().filter(|&&v| v.abs() > 1e-3).count();
            for ftz in [false, true] {
                let got = crate::ftz::run_with(ftz, || matmul(&a, &b, m, k, n, false));
                let bad = first_mismatch(&got, &want);
                assert_eq!(
                    bad, None,
                    "{m}x{k}x{n} ftz={ftz}: first mismatch at {bad:?}"
                );
                let reference = crate::ftz::run_with(ftz, || matmul_reference(&a, &b, m, k, n));
                assert_eq!(
                    first_mismatch(&reference, &want),
                    None,
                    "reference, ftz={ftz}"
                );
            }
        }
        assert!(
            tiny > 0 && ordinary > 0,
            "tiny {tiny}, ordinary {ordinary} outputs"
        );
    }

    /// The check above can fail: the same loop without the flushes gives other bits once the CPU
    /// flushes in hardware (and other bits than the flushed reference without it).
    #[test]
    fn a_matmul_without_the_flush_is_caught() {
        let (m, k, n) = (17, 200, 70);
        let (a, b) = underflowing(m, k, n);
        let unflushed = |a: &[f32], b: &[f32]| {
            let mut out = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0f32;
                    for p in 0..k {
                        acc += std::hint::black_box(a[i * k + p] * b[p * n + j]);
                    }
                    out[i * n + j] = acc;
                }
            }
            out
        };
        let off = crate::ftz::run_with(false, || unflushed(&a, &b));
        let on = crate::ftz::run_with(true, || unflushed(&a, &b));
        assert!(
            first_mismatch(&off, &on).is_some(),
            "FTZ must change the unflushed loop"
        );
        let want = matmul_reference(&a, &b, m, k, n);
        assert!(first_mismatch(&off, &want).is_some());
    }

    /// Each register tile (the portable 4x8, AVX2's 6x16, AVX-512's 12x32, others), in both
    /// profiles, gives the reference loop's bits over several k blocks and column panels with
    /// row and column tails, so the CPU a run lands on cannot change its results — on ordinary
    /// inputs (no tile flushes) and on underflowing ones (some tiles flush).
    #[test]
    fn every_register_tile_gives_the_reference_bits() {
        for (m, k, n) in [
            (8, 5, 40),
            (13, 33, 57),
            (16, 600, 300),
            (3, 2, 9),
            (50, KC + 1, 19),
        ] {
            for tiny in [false, true] {
                let (a, b) = if tiny {
                    underflowing(m, k, n)
                } else {
                    (seeded(m * k, "a"), seeded(k * n, "b"))
                };
                for fused in [false, true] {
                    let want = if fused {
                        matmul_reference_in(&a, &b, m, k, n, true)
                    } else {
                        matmul_reference(&a, &b, m, k, n)
                    };
                    let a = crate::arith::flush_all(&a);
                    let (row_exp, _) = row_exponents(&a, m, k, true);
                    let job = Job {
                        a: &a,
                        a_t: false,
                        m,
                        row_exp: &row_exp,
                        k,
                        n,
                        b_t: false,
                        threads: true,
                        safe: SafeTiles {
                            threshold: if fused { SAFE_FUSED } else { SAFE_UNFUSED },
                        },
                    };
                    let mut tiles: Vec<(&str, Vec<f32>)> = Vec::new();
                    let mut run = |name, w, f: &RunTile| {
                        let mut out = vec![0f32; m * n];
                        panels(&job, &b, Out::Given(&mut out), w, f);
                        tiles.push((name, out));
                    };
                    macro_rules! shape {
                        ($name:expr, $r:expr, $w:expr) => {
                            if fused {
                                run($name, $w, &|p, a, o, r0| {
                                    rows_block::<true, $r, $w>(&job, p, a, o, r0)
                                })
                            } else {
                                run($name, $w, &|p, a, o, r0| {
                                    rows_block::<false, $r, $w>(&job, p, a, o, r0)
                                })
                            }
                        };
                    }
                    shape!("4x8", 4, 8);
                    shape!("6x16", 6, 16);
                    shape!("4x16", 4, 16);
                    shape!("8x32", 8, 32);
                    shape!("12x32", 12, 32);
                    shape!("6x8", 6, 8);
                    shape!("8x8", 8, 8);
                    run("dispatch", tile_width(n), &|p, a, o, r0| {
                        if fused {
                            block_dispatch::<true>(&job, p, a, o, r0)
                        } else {
                            block_dispatch::<false>(&job, p, a, o, r0)
                        }
                    });
                    for (name, got) in tiles {
                        let bad = first_mismatch(&got, &want);
                        assert_eq!(
                            bad, None,
                            "{name} {m}x{k}x{n} tiny={tiny} fused={fused}: first mismatch at {bad:?}"
                        );
                    }
                }
            }
        }
    }

    /// Transposed operands read in place (`matmul_t`: `b` in the packing, `a` by one
    /// transpose) and the one-thread path `bmm` takes give the reference loop's bits, in both
    /// profiles, on ordinary and underflowing inputs.
    #[test]
    fn transposed_operands_and_the_one_thread_path_give_the_reference_bits() {
        // [rows, cols] -> [cols, rows], plain loops.
        let t = |x: &[f32], rows: usize, cols: usize| {
            let mut y = vec![0f32; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    y[c * rows + r] = x[r * cols + c];
                }
            }
            y
        };
        for (m, k, n) in [
            (1, 1, 1),
            (7, 33, 5),
            (33, 2 * KC + 44, 40),
            (50, KC + 1, 19),
            (4, 1, 600),
        ] {
            for tiny in [false, true] {
                let (a, b) = if tiny {
                    underflowing(m, k, n)
                } else {
                    (seeded(m * k, "a"), seeded(k * n, "b"))
                };
                let (at, bt) = (t(&a, m, k), t(&b, k, n));
                for fused in [false, true] {
                    let want = matmul_reference_in(&a, &b, m, k, n, fused);
                    for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                        let x = if a_t { &at } else { &a };
                        let y = if b_t { &bt } else { &b };
                        let got = matmul_t((x, a_t), (y, b_t), m, k, n, fused);
                        let bad = first_mismatch(&got, &want);
                        assert_eq!(
                            bad, None,
                            "{m}x{k}x{n} t=({a_t},{b_t}) fused={fused}: {bad:?}"
                        );
                        let mut one = vec![0f32; m * n];
                        matmul_into((x, a_t), (y, b_t), &mut one, (m, k, n), fused, false);
                        let bad = first_mismatch(&one, &want);
                        assert_eq!(bad, None, "one thread {m}x{k}x{n} t=({a_t},{b_t}): {bad:?}");
                    }
                }
            }
        }
    }

    /// Packing reuses kept buffers without clearing them: with every kept buffer full of NaN,
    /// products (both layouts of `b`, strip and row tails, several k blocks) still give the
    /// reference bits, so every value a tile reads was written by this product's packing.
    #[test]
    fn kept_buffers_holding_old_values_change_nothing() {
        for (m, k, n) in [(7, 300, 21), (13, 5, 40), (50, KC + 1, 19)] {
            let (a, b) = (seeded(m * k, "a"), seeded(k * n, "b"));
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let want = matmul_reference(&a, &b, m, k, n);
            for (y, b_t) in [(&b, false), (&bt, true)] {
                KEPT.lock().expect("kept buffers").clear();
                keep((0..KEPT_MAX).map(|_| vec![f32::NAN; KC * NC]));
                let got = matmul_t((&a, false), (y, b_t), m, k, n, false);
                let bad = first_mismatch(&got, &want);
                assert_eq!(bad, None, "{m}x{k}x{n} b_t={b_t}: {bad:?}");
            }
        }
    }

    /// A fresh output is never zeroed (`par_overwritten`): in memory just freed holding NaN,
    /// the product is still the reference's, on the threads and on one; with k = 0 every output
    /// is +0.0, fresh or written into a buffer holding NaN.
    #[test]
    fn fresh_outputs_in_freed_memory_and_empty_sums_give_the_reference_bits() {
        for (m, k, n) in [(7, 300, 21), (50, KC + 1, 19), (600, 40, 300)] {
            let (a, b) = (seeded(m * k, "a"), seeded(k * n, "b"));
            let want = matmul_reference(&a, &b, m, k, n);
            for threads in [true, false] {
                drop(std::hint::black_box(vec![f32::NAN; m * n]));
                let mut got = vec![f32::NAN; 0];
                product(
                    (&a, false),
                    (&b, false),
                    Out::Fresh(&mut got),
                    (m, k, n),
                    false,
                    threads,
                );
                let bad = first_mismatch(&got, &want);
                assert_eq!(bad, None, "{m}x{k}x{n} threads={threads}: {bad:?}");
            }
        }
        let zeros = matmul_t((&[], false), (&[], false), 3, 0, 5, true);
        assert!(zeros.len() == 15 && zeros.iter().all(|v| v.to_bits() == 0));
        let mut c = vec![f32::NAN; 15];
        matmul_into((&[], false), (&[], false), &mut c, (3, 0, 5), false, true);
        assert!(c.iter().all(|v| v.to_bits() == 0), "{c:?}");
    }

    /// The packed strips' exponent scan gives, per column, the minimum of `exponent` over the
    /// column and whether any value needs flushing: on every special class of value (zeros,
    /// subnormals, `±MIN_POSITIVE`, the smallest kept value, infinities, NaN), in each strip
    /// width, including columns holding nothing `flush` keeps.
    #[test]
    fn strip_exponent_scan_matches_the_per_value_definition() {
        let specials = [
            0.0,
            -0.0,
            f32::from_bits(1),
            -f32::from_bits(0x007f_ffff),
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::from_bits(MIN_POSITIVE_BITS + 1),
            1.5e-30,
            -3.0,
            f32::INFINITY,
            f32::NAN,
        ];
        let mut s = SeedStream::new(9, "strip scan");
        for w in [8, 16, 32] {
            for (kc, strips) in [(1, 1), (5, 3), (64, 2)] {
                for with_specials in [false, true] {
                    let data: Vec<f32> = (0..kc * w * strips)
                        .map(|i| {
                            let u = s.uniform_range(0.0, 1.0);
                            if with_specials && (u < 0.3 || i % 7 == 0) {
                                specials[(u * 1000.0) as usize % specials.len()]
                            } else {
                                s.uniform_range(-4.0, 4.0) * 2f32.powi((i % 90) as i32 - 60)
                            }
                        })
                        .collect();
                    let mut want = vec![NO_VALUE; w * strips];
                    let mut want_dirty = false;
                    for (i, &v) in data.iter().enumerate() {
                        let (e, d) = exponent(v);
                        let col = (i / (kc * w)) * w + i % w;
                        want[col] = want[col].min(e);
                        want_dirty |= d;
                    }
                    let mut got = vec![0u32; w * strips];
                    let dirty = strip_exponents(&data, w, &mut got);
                    assert_eq!((got, dirty), (want, want_dirty), "w {w} kc {kc} x {strips}");
                }
            }
            // The edges of `flush` alone among ordinary values: the smallest kept value
            // needs no flush and gives exponent 1; `MIN_POSITIVE` needs one and gives none.
            for (edge, e, dirty) in [
                (f32::from_bits(MIN_POSITIVE_BITS + 1), 1, false),
                (-f32::MIN_POSITIVE, NO_VALUE, true),
            ] {
                let mut data = vec![1.0f32; 3 * w];
                data[w + 1] = edge;
                let mut got = vec![0u32; w];
                assert_eq!(strip_exponents(&data, w, &mut got), dirty, "{edge:e}");
                assert_eq!(got[1], e.min(127), "{edge:e}");
            }
        }
    }

    #[test]
    fn fused_matmul_matches_its_reference_loop_bitwise() {
        for (m, k, n) in [
            (1, 1, 1),
            (9, 513, 17),
            (33, 64, 1030),
            (128, 784, 256),
            (7, 100, 1),
        ] {
            for tiny in [false, true] {
                let (a, b) = if tiny {
                    underflowing(m, k, n)
                } else {
                    (seeded(m * k, "a"), seeded(k * n, "b"))
                };
                let want = matmul_reference_in(&a, &b, m, k, n, true);
                for ftz in [false, true] {
                    let got = crate::ftz::run_with(ftz, || matmul(&a, &b, m, k, n, true));
                    let bad = first_mismatch(&got, &want);
                    assert_eq!(bad, None, "{m}x{k}x{n} tiny={tiny} ftz={ftz}: {bad:?}");
                }
            }
        }
    }

    #[test]
    fn fused_profile_differs_where_fma_rounds_once() {
        // acc = -1, then x*x + acc with x = 1 + 2^-12: x*x = 1 + 2^-11 + 2^-24 needs 25 bits,
        // so the unfused product rounds to 1 + 2^-11 and the fused result keeps the 2^-24.
        let x = 1.0 + f32::EPSILON * 2048.0;
        let a = [-1.0, x];
        let b = [1.0, x];
        let unfused = matmul(&a, &b, 1, 2, 1, false)[0];
        let fused = matmul(&a, &b, 1, 2, 1, true)[0];
        assert_eq!(unfused, matmul_reference(&a, &b, 1, 2, 1)[0]);
        assert_ne!(unfused.to_bits(), fused.to_bits());
    }
}
