//! The kernels' documented arithmetic as plain f32 loops, written in this file from the module
//! docs (`lockstep_kernels::arith` for the flush rule and the approximations, each op's module
//! for its order), never calling `lockstep_kernels`' own code (only its `Decay` enum names an
//! optimizer mode): the references `kernels_bitwise` and `subnormals` hold every backend to, bit
//! for bit.
//!
//! Every value read, every rounded intermediate and every value written passes through `fl` (the
//! contract's flush rule); `fmad` is two roundings, never a fused multiply-add. The constants of
//! the approximations are typed in from their published sources (Cephes `expf`, Abramowitz and
//! Stegun 7.1.26) and the seeds from `arith`'s module doc.
//!
//! `log` has no loop here: `arith` calls its polynomial "Cephes logf degree-8", but two of the
//! nine coefficients the kernels use are one f32 ULP off the published ones (`arith::LP1` is
//! `0xbdebd1b9` where Cephes' `-1.1514610310e-1` rounds to `0xbdebd1b8`, `LP2` `0x3def251b`
//! where `1.1676998740e-1` rounds to `0x3def251a`: the kernels' literals are the published values
//! cut to eight digits), so a loop from the published values does not give the kernels' bits.
//! `log`, log-softmax's forward and cross-entropy's forward are held to their f64 definitions
//! instead (`kernels_bitwise`).

use lockstep_kernels::optim::Decay;

/// The contract's flush rule (`lockstep_kernels::arith`'s module doc): `|x| <= f32::MIN_POSITIVE`
/// becomes a zero of `x`'s sign; anything else (NaN and ±Inf included) is kept.
pub fn fl(x: f32) -> f32 {
    if x.abs() <= f32::MIN_POSITIVE {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// `fl(a + b)`: one IEEE rounding, flushed.
pub fn fadd(a: f32, b: f32) -> f32 {
    fl(a + b)
}

/// `fl(a - b)`.
pub fn fsub(a: f32, b: f32) -> f32 {
    fl(a - b)
}

/// `fl(a * b)`.
pub fn fmul(a: f32, b: f32) -> f32 {
    fl(a * b)
}

/// `fl(fl(a * b) + c)`: two roundings, both flushed (never a fused multiply-add).
pub fn fmad(a: f32, b: f32, c: f32) -> f32 {
    fadd(fmul(a, b), c)
}

/// `[m, k] x [k, n]` in `matmul`'s documented order: per output `acc = 0.0; for p in 0..k
/// { acc = fl(fl(fl(a[i, p]) * fl(b[p, j])) + acc) }`.
pub fn matmul_loop(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for p in 0..k {
                acc = fmad(fl(a[i * k + p]), fl(b[p * n + j]), acc);
            }
            out[i * n + j] = acc;
        }
    }
    out
}

/// `x` `[rows, cols]` transposed to `[cols, rows]` (data movement only).
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| x[(i % rows) * cols + i / rows])
        .collect()
}

/// `reduce`'s documented `sum_rows` of `[m, n]`: column `j` is `acc = 0.0; for i in 0..m
/// { acc = fl(acc + fl(x[i, j])) }`.
pub fn sum_rows_loop(x: &[f32], m: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|j| (0..m).fold(0f32, |acc, i| fadd(acc, fl(x[i * n + j]))))
        .collect()
}

/// The chunk length `reduce`'s module doc fixes for `sum_all`.
const SUM_ALL_CHUNK: usize = 256;

/// `reduce`'s documented `sum_all`: chunks of 256 consecutive elements, each summed in order
/// from 0.0, then the chunk partials summed in order from 0.0, every read and sum flushed.
pub fn sum_all_loop(x: &[f32]) -> f32 {
    x.chunks(SUM_ALL_CHUNK)
        .map(|c| c.iter().fold(0f32, |acc, &v| fadd(acc, fl(v))))
        .fold(0f32, fadd)
}
/// `im2col`'s documented gather: `cols[(b, oy, ox), (ci, ky, kx)] = fl(x[b, ci, oy + ky - pad,
/// ox + kx - pad])`, 0.0 outside.
pub fn im2col_loop(x: &[f32], [n, c, h, w]: [usize; 4], k: usize, pad: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * h * w * c * k * k);
    for b in 0..n {
        for oy in 0..h {
            for ox in 0..w {
                for ci in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) =
                                ((oy + ky).wrapping_sub(pad), (ox + kx).wrapping_sub(pad));
                            out.push(if iy < h && ix < w {
                                fl(x[((b * c + ci) * h + iy) * w + ix])
                            } else {
                                0.0
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// `im2col`'s documented backward (`col2im`): `dx[b, ci, iy, ix] = 0; for ky, for kx: if
/// (oy, ox) = (iy + pad - ky, ix + pad - kx) is inside, dx = fl(dx + fl(dcols[(b, oy, ox), (ci,
/// ky, kx)]))`.
pub fn col2im_loop(dcols: &[f32], [n, c, h, w]: [usize; 4], k: usize, pad: usize) -> Vec<f32> {
    let cols = c * k * k;
    let mut dx = Vec::with_capacity(n * c * h * w);
    for b in 0..n {
        for ci in 0..c {
            for iy in 0..h {
                for ix in 0..w {
                    let mut acc = 0f32;
                    for ky in 0..k {
                        for kx in 0..k {
                            let (oy, ox) =
                                ((iy + pad).wrapping_sub(ky), (ix + pad).wrapping_sub(kx));
                            if oy < h && ox < w {
                                let r = (b * h + oy) * w + ox;
                                acc = fadd(acc, fl(dcols[r * cols + (ci * k + ky) * k + kx]));
                            }
                        }
                    }
                    dx.push(acc);
                }
            }
        }
    }
    dx
}
/// Plain reference pooling (`pool`'s module doc): each window listed in row-major order, max =
/// the first of its largest (flushed) values, avg = the in-order flushed sum times `1/k^2`
/// (rounded once from f64); backward routes `dy` to that first maximum (or spreads `dy/k^2`).
pub fn pool_reference(
    x: &[f32],
    dy: &[f32],
    [n, c, h, w]: [usize; 4],
    k: usize,
    max: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (ho, wo) = (h / k, w / k);
    let inv = (1.0 / (k * k) as f64) as f32;
    let (mut y, mut dx) = (vec![], vec![0f32; x.len()]);
    for p in 0..n * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let idx: Vec<usize> = (0..k * k)
                    .map(|t| p * h * w + (oy * k + t / k) * w + ox * k + t % k)
                    .collect();
                let g = fl(dy[p * ho * wo + oy * wo + ox]);
                if max {
                    let best = idx
                        .iter()
                        .copied()
                        .reduce(|b, i| if fl(x[i]) > fl(x[b]) { i } else { b })
                        .expect("k > 0");
                    y.push(fl(x[best]));
                    dx[best] = g;
                } else {
                    y.push(fmul(idx.iter().fold(0f32, |s, &i| fadd(s, fl(x[i]))), inv));
                    for &i in &idx {
                        dx[i] = fmul(g, inv);
                    }
                }
            }
        }
    }
    (y, dx)
}

// ---- The approximations (`arith`'s module doc) ------------------------------------------------

/// `arith::exp_fixed` as its module doc defines it: the flushed `x` (NaN passes through) clamped
/// to `[-87, 88]`; `n = floor(x*log2e + 0.5)`; `r = n*(-ln2_hi) + x`; `r = n*ln2_lo + r`; Cephes
/// `expf`'s degree-5 polynomial `p` in Horner form; `y = p*r^2 + r + 1`; `y * 2^n`, `2^n` made
/// from bits.
#[allow(clippy::excessive_precision)] // Cephes expf's constants as published
pub fn exp_loop(x: f32) -> f32 {
    // ln 2 = LN2_HI - LN2_LO, LN2_HI exact in f32 (Cephes expf's C1 = 0.693359375 and
    // C2 = -2.12194440e-4).
    const LN2_HI: f32 = 0.693_359_375;
    const LN2_LO: f32 = 2.121_944_40e-4;
    const P: [f32; 6] = [
        1.987_569_150_0e-4,
        1.398_199_950_7e-3,
        8.333_451_907_3e-3,
        4.166_579_589_4e-2,
        1.666_666_545_9e-1,
        5.000_000_120_1e-1,
    ];
    let x = fl(x);
    if x.is_nan() {
        return x;
    }
    let x = x.clamp(-87.0, 88.0);
    let n = fadd(fmul(x, std::f32::consts::LOG2_E), 0.5).floor();
    let r = fmad(n, -LN2_HI, x);
    let r = fmad(n, LN2_LO, r);
    let p = P[1..].iter().fold(P[0], |p, &c| fmad(p, r, c));
    let y = fadd(fmad(p, fmul(r, r), r), 1.0);
    fmul(y, f32::from_bits(((n as i32 + 127) as u32) << 23))
}

/// `2^-125` and `2^125`: the domain `arith`'s module doc clamps `recip_fixed`'s argument to.
const RECIP_LO: f32 = f32::MIN_POSITIVE * 2.0;
const RECIP_HI: f32 = 1.0 / RECIP_LO;

/// `arith::recip_fixed`: `d` clamped to `[2^-125, 2^125]` (NaN passes), `y0` from the bits
/// `0x7ef311c3 - bits(d)`, then four Newton steps `t = -d*y + 2; y = y*t`. The doc says no
/// intermediate comes near the subnormal range, so the kernels skip the flushes there; this loop
/// keeps the contract's flush on every rounding, so it matches only if that claim holds.
pub fn recip_loop(d: f32) -> f32 {
    let d = d.clamp(RECIP_LO, RECIP_HI);
    let mut y = f32::from_bits(0x7ef3_11c3u32.wrapping_sub(d.to_bits()));
    for _ in 0..4 {
        let t = fmad(-d, y, 2.0);
        y = fmul(y, t);
    }
    y
}

/// `arith::rsqrt_fixed`: `a` flushed (NaN for `a < 0`), `y0` from the bits `0x5f3759df -
/// (bits(a) >> 1)`, then three Newton steps `h = (a*y)*0.5; t = -h*y + 1.5; y = y*t` (flushed
/// here too; see `recip_loop`).
pub fn rsqrt_loop(a: f32) -> f32 {
    let a = fl(a);
    let a = if a < 0.0 { f32::NAN } else { a };
    let mut y = f32::from_bits(0x5f37_59dfu32.wrapping_sub(a.to_bits() >> 1));
    for _ in 0..3 {
        let h = fmul(fmul(a, y), 0.5);
        let t = fmad(-h, y, 1.5);
        y = fmul(y, t);
    }
    y
}

/// `arith::sqrt_fixed`: `a * rsqrt(a)` of the flushed `a`.
pub fn sqrt_loop(a: f32) -> f32 {
    fmul(fl(a), rsqrt_loop(a))
}

/// `arith::sigmoid_fixed`: `recip(1 + exp(-x))`, the flushed `x` clamped to `[-40, 40]`.
pub fn sigmoid_loop(x: f32) -> f32 {
    let x = fl(x).clamp(-40.0, 40.0);
    recip_loop(fadd(1.0, exp_loop(-x)))
}

/// `arith::tanh_fixed`: `2 * sigmoid(2x) - 1`.
pub fn tanh_loop(x: f32) -> f32 {
    fsub(fmul(2.0, sigmoid_loop(fmul(2.0, fl(x)))), 1.0)
}

/// `(q, e)` of `arith`'s GELU for the flushed `x`: `z = min(|x|, 10) * (1/sqrt2)`, `t =
/// recip(p*z + 1)`, `q = t*(a1 + t*(a2 + ... + t*a5))` times `e = exp(-z*z)` (Abramowitz and
/// Stegun 7.1.26's constants as published).
#[allow(clippy::excessive_precision)]
fn gauss_tail_loop(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_592,
        -0.284_496_736,
        1.421_413_741,
        -1.453_152_027,
        1.061_405_429,
    ];
    let ax = if x < 0.0 { -x } else { x };
    let ax = if ax > 10.0 { 10.0 } else { ax };
    let z = fmul(ax, std::f32::consts::FRAC_1_SQRT_2);
    let t = recip_loop(fmad(P, z, 1.0));
    let q = A[..4].iter().rev().fold(A[4], |p, &a| fmad(p, t, a));
    let q = fmul(q, t);
    let e = exp_loop(-fmul(z, z));
    (fmul(q, e), e)
}

/// `Phi(x)` from `q`: `q/2` for `x < 0` (no cancellation in the left tail), else `1 - q/2`.
fn phi_loop(x: f32, q: f32) -> f32 {
    let h = fmul(0.5, q);
    if x < 0.0 { h } else { fsub(1.0, h) }
}

/// `arith::gelu_fixed`: `x * Phi(x)`.
pub fn gelu_loop(x: f32) -> f32 {
    let x = fl(x);
    let (q, _) = gauss_tail_loop(x);
    fmul(x, phi_loop(x, q))
}

/// `arith::gelu_grad_fixed`: `Phi(x) + x * phi(x)` with `phi = e * (1/sqrt(2 pi))`.
pub fn gelu_grad_loop(x: f32) -> f32 {
    let x = fl(x);
    let (q, e) = gauss_tail_loop(x);
    let inv_sqrt_2pi = (1.0 / (2.0 * std::f64::consts::PI).sqrt()) as f32;
    fmad(x, fmul(e, inv_sqrt_2pi), phi_loop(x, q))
}

/// A row's maximum and `sum_j exp(x[j] - max)`, `j` in order, over the flushed row (the first two
/// lines of `xent`'s and `softmax`'s module docs).
fn row_stats_loop(row: &[f32]) -> (f32, f32) {
    let mx = row[1..]
        .iter()
        .fold(fl(row[0]), |mx, &v| if fl(v) > mx { fl(v) } else { mx });
    let s = row
        .iter()
        .fold(0f32, |s, &v| fadd(s, exp_loop(fsub(fl(v), mx))));
    (mx, s)
}

/// `softmax`'s forward of `[m, c]`: `r = recip(s); y[j] = exp(x[j] - mx) * r`.
pub fn softmax_loop(x: &[f32], c: usize) -> Vec<f32> {
    x.chunks(c)
        .flat_map(|row| {
            let (mx, s) = row_stats_loop(row);
            let r = recip_loop(s);
            row.iter().map(move |&v| fmul(exp_loop(fsub(fl(v), mx)), r))
        })
        .collect()
}

/// `softmax`'s backward of `[m, c]` from the forward's output `y`: softmax `dot = mad(dy[j],
/// y[j], dot)` in order from 0, `dx[j] = y[j] * (dy[j] - dot)`; log-softmax `sg = sg + dy[j]` in
/// order from 0, `dx[j] = mad(exp(y[j]), -sg, dy[j])`.
pub fn softmax_backward_loop(y: &[f32], dy: &[f32], c: usize, log: bool) -> Vec<f32> {
    y.chunks(c)
        .zip(dy.chunks(c))
        .flat_map(|(yr, gr)| {
            let row: Vec<f32> = if log {
                let sg = gr.iter().fold(0f32, |s, &g| fadd(s, fl(g)));
                (0..c)
                    .map(|j| fmad(exp_loop(fl(yr[j])), -sg, fl(gr[j])))
                    .collect()
            } else {
                let dot = (0..c).fold(0f32, |acc, j| fmad(fl(gr[j]), fl(yr[j]), acc));
                (0..c)
                    .map(|j| fmul(fl(yr[j]), fsub(fl(gr[j]), dot)))
                    .collect()
            };
            row
        })
        .collect()
}

/// `xent`'s backward of `[m, c]` logits `x`, targets `t` and the incoming `g` `[m]`: `r =
/// recip(s)`, `d[i, j] = mad(exp(x[j] - mx), r, -t[j]) * g[i]`.
pub fn xent_backward_loop(x: &[f32], t: &[f32], g: &[f32], c: usize) -> Vec<f32> {
    x.chunks(c)
        .zip(t.chunks(c))
        .zip(g)
        .flat_map(|((xr, tr), &gi)| {
            let (mx, s) = row_stats_loop(xr);
            let r = recip_loop(s);
            (0..c)
                .map(|j| fmul(fmad(exp_loop(fsub(fl(xr[j]), mx)), r, -fl(tr[j])), fl(gi)))
                .collect::<Vec<f32>>()
        })
        .collect()
}

/// `bias`: `y[i, j] = fl(fl(x[i, j]) + fl(b[j]))` for `x` `[m, n]`.
pub fn add_bias_loop(x: &[f32], b: &[f32]) -> Vec<f32> {
    x.chunks(b.len())
        .flat_map(|row| row.iter().zip(b).map(|(&v, &bj)| fadd(fl(v), fl(bj))))
        .collect()
}

/// `mul`: `y = fl(fl(a) * fl(b))` element-wise.
pub fn mul_loop(a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "mul_loop: lengths");
    a.iter().zip(b).map(|(&x, &y)| fmul(fl(x), fl(y))).collect()
}

/// `optim`'s SGD step as its module doc orders it, hyper-parameters `[lr, wd, mu]` flushed like
/// any input: `g1 = decay ? mad(w, wd, g) : g; buf = mad(buf, mu, g1); w = w - buf*lr`. Returns
/// `(w, buf)`.
pub fn sgd_loop(
    w: &[f32],
    g: &[f32],
    buf: &[f32],
    hp: [f32; 3],
    decay: Decay,
) -> (Vec<f32>, Vec<f32>) {
    let [lr, wd, mu] = hp.map(fl);
    (0..w.len())
        .map(|i| {
            let (wi, gi) = (fl(w[i]), fl(g[i]));
            let g1 = if decay == Decay::Coupled {
                fmad(wi, wd, gi)
            } else {
                gi
            };
            let b = fmad(fl(buf[i]), mu, g1);
            (fsub(wi, fmul(b, lr)), b)
        })
        .unzip()
}

/// `optim`'s Adam / AdamW step as its module doc orders it, hyper-parameters `[lr, wd, b1, b2,
/// 1-b1, 1-b2, c1, c2, eps, lr*wd]` flushed like any input:
///
/// ```text
/// g1 = coupled ? mad(w, wd, g) : g
/// m  = m*b1 + g1*(1-b1)
/// v  = v*b2 + (g1*g1)*(1-b2)
/// u  = (m*c1) * recip(sqrt(v*c2) + eps)
/// w  = decoupled ? w - w*(lr*wd) : w
/// w  = w - u*lr
/// ```
///
/// Returns `(w, m, v)`.
pub fn adam_loop(
    w: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    hp: [f32; 10],
    decay: Decay,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [lr, wd, b1, b2, omb1, omb2, c1, c2, eps, lrwd] = hp.map(fl);
    let n = w.len();
    let (mut wo, mut mo, mut vo) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    for i in 0..n {
        let (wi, gi) = (fl(w[i]), fl(g[i]));
        let g1 = if decay == Decay::Coupled {
            fmad(wi, wd, gi)
        } else {
            gi
        };
        let mi = fadd(fmul(fl(m[i]), b1), fmul(g1, omb1));
        let vi = fadd(fmul(fl(v[i]), b2), fmul(fmul(g1, g1), omb2));
        let u = fmul(fmul(mi, c1), recip_loop(fadd(sqrt_loop(fmul(vi, c2)), eps)));
        let wi = if decay == Decay::Decoupled {
            fsub(wi, fmul(wi, lrwd))
        } else {
            wi
        };
        (wo[i], mo[i], vo[i]) = (fsub(wi, fmul(u, lr)), mi, vi);
    }
    (wo, mo, vo)
}

// ---- Attention and normalisation (`bmm`, `layernorm`, `causal`) -------------------------------

/// `bmm`'s documented order: batch element `e` of `[bt, m, k] x [bt, k, n]` is `matmul`'s loop
/// of `a[e]` and `b[e]` (k in order from 0.0, every read, product and sum flushed).
pub fn bmm_loop(a: &[f32], b: &[f32], bt: usize, m: usize, k: usize, n: usize) -> Vec<f32> {
    (0..bt)
        .flat_map(|e| {
            matmul_loop(
                &a[e * m * k..(e + 1) * m * k],
                &b[e * k * n..(e + 1) * k * n],
                m,
                k,
                n,
            )
        })
        .collect()
}

/// `x` `[bt, rows, cols]` with its last two dims swapped: `[bt, cols, rows]` (data movement).
pub fn transpose3(x: &[f32], bt: usize, rows: usize, cols: usize) -> Vec<f32> {
    (0..bt)
        .flat_map(|e| transpose(&x[e * rows * cols..(e + 1) * rows * cols], rows, cols))
        .collect()
}

/// `layernorm`'s documented row statistics `(mean, rstd)` of a row: `s = fl(s + fl(x[j]))` in
/// order from 0; `mean = fl(s * inv_c)`; `d = fl(fl(x[j]) - mean)`, `v = fmad(d, d, v)` in order
/// from 0; `var = fl(v * inv_c)`; `rstd = rsqrt(fl(var + eps))`, `inv_c = f32(1/c)` rounded once
/// from f64.
fn layer_norm_stats_loop(row: &[f32], eps: f32) -> (f32, f32) {
    let inv_c = fl((1.0 / row.len() as f64) as f32);
    let mean = fmul(row.iter().fold(0f32, |s, &v| fadd(s, fl(v))), inv_c);
    let v = row.iter().fold(0f32, |v, &x| {
        let d = fsub(fl(x), mean);
        fmad(d, d, v)
    });
    (mean, rsqrt_loop(fadd(fmul(v, inv_c), fl(eps))))
}

/// `layernorm`'s forward of `[n, c]`: `y[j] = fl(fl(fl(x[j]) - mean) * rstd)`.
pub fn layer_norm_loop(x: &[f32], c: usize, eps: f32) -> Vec<f32> {
    x.chunks(c)
        .flat_map(|row| {
            let (mean, rstd) = layer_norm_stats_loop(row, eps);
            row.iter().map(move |&v| fmul(fsub(fl(v), mean), rstd))
        })
        .collect()
}

/// `layernorm`'s backward of `[n, c]` for the incoming `dy`, with `y` recomputed from `x` as the
/// forward does: `sg = fl(sg + dy[j])`, `sgy = fmad(dy[j], y[j], sgy)` in order from 0; `mg =
/// fl(sg * inv_c)`, `mgy = fl(sgy * inv_c)`; `dx[j] = fl(rstd * fl(fl(dy[j] - mg) - fl(y[j] *
/// mgy)))`.
pub fn layer_norm_backward_loop(x: &[f32], dy: &[f32], c: usize, eps: f32) -> Vec<f32> {
    let inv_c = fl((1.0 / c as f64) as f32);
    x.chunks(c)
        .zip(dy.chunks(c))
        .flat_map(|(row, gr)| {
            let (mean, rstd) = layer_norm_stats_loop(row, eps);
            let y: Vec<f32> = row.iter().map(|&v| fmul(fsub(fl(v), mean), rstd)).collect();
            let (mut sg, mut sgy) = (0f32, 0f32);
            for j in 0..c {
                sg = fadd(sg, fl(gr[j]));
                sgy = fmad(fl(gr[j]), y[j], sgy);
            }
            let (mg, mgy) = (fmul(sg, inv_c), fmul(sgy, inv_c));
            (0..c)
                .map(|j| fmul(rstd, fsub(fsub(fl(gr[j]), mg), fmul(y[j], mgy))))
                .collect::<Vec<f32>>()
        })
        .collect()
}

/// `causal`'s forward of `[r, t]` (row `i` is query `q = i % t`): `z[j] = fl(fl(x[j]) *
/// fl(scale))`; over `j <= q` the row statistics of `softmax` (max from `z[0]` with a strict `>`,
/// `s = fl(s + exp(fl(z[j] - mx)))` in order from 0), `r = recip(s)`, `y[j] = fl(exp(fl(z[j] -
/// mx)) * r)`; `+0.0` for `j > q`.
pub fn causal_softmax_loop(x: &[f32], t: usize, scale: f32) -> Vec<f32> {
    let sc = fl(scale);
    x.chunks(t)
        .enumerate()
        .flat_map(|(i, row)| {
            let q = i % t;
            let z: Vec<f32> = row[..=q].iter().map(|&v| fmul(fl(v), sc)).collect();
            let mx = z[1..]
                .iter()
                .fold(z[0], |mx, &v| if v > mx { v } else { mx });
            let s = z.iter().fold(0f32, |s, &v| fadd(s, exp_loop(fsub(v, mx))));
            let r = recip_loop(s);
            let mut y: Vec<f32> = z.iter().map(|&v| fmul(exp_loop(fsub(v, mx)), r)).collect();
            y.resize(t, 0.0);
            y
        })
        .collect()
}

/// `causal`'s backward of `[r, t]` from the forward's output `y`: over `j <= q`, `dot =
/// fmad(fl(dy[j]), fl(y[j]), dot)` in order from 0, `dx[j] = fl(fl(scale) * fl(fl(y[j]) *
/// fl(fl(dy[j]) - dot)))`; `+0.0` for `j > q`.
pub fn causal_softmax_backward_loop(y: &[f32], dy: &[f32], t: usize, scale: f32) -> Vec<f32> {
    let sc = fl(scale);
    y.chunks(t)
        .zip(dy.chunks(t))
        .enumerate()
        .flat_map(|(i, (yr, gr))| {
            let q = i % t;
            let dot = (0..=q).fold(0f32, |acc, j| fmad(fl(gr[j]), fl(yr[j]), acc));
            let mut d: Vec<f32> = (0..=q)
                .map(|j| fmul(sc, fmul(fl(yr[j]), fsub(fl(gr[j]), dot))))
                .collect();
            d.resize(t, 0.0);
            d
        })
        .collect()
}

/// `matmul` in the `fma` profile: per output `acc = 0.0; for p in 0..k { acc = fl(fma(fl(a[i,p]),
/// fl(b[p,j]), acc)) }` with IEEE's single rounding (`f32::mul_add`).
pub fn matmul_fma_loop(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for p in 0..k {
                acc = fl(fl(a[i * k + p]).mul_add(fl(b[p * n + j]), acc));
            }
            out[i * n + j] = acc;
        }
    }
    out
}

/// `bmm` in the `fma` profile: `matmul_fma_loop` per batch element.
pub fn bmm_fma_loop(a: &[f32], b: &[f32], bt: usize, m: usize, k: usize, n: usize) -> Vec<f32> {
    (0..bt)
        .flat_map(|e| {
            matmul_fma_loop(
                &a[e * m * k..(e + 1) * m * k],
                &b[e * k * n..(e + 1) * k * n],
                m,
                k,
                n,
            )
        })
        .collect()
}
