//! The transformer's kernels (`bmm`, `layer_norm`, `causal_softmax`, `embedding`): the same bits
//! on every backend (ndarray and flex run the CPU loops, wgpu the CubeCL kernels), forward and
//! backward, on odd shapes (a batch of one, one head, `t = 1`, `k` and `c` no multiple of any
//! tile), against the suite's own loops in the documented orders (`reference`: bit for bit),
//! against f64 definitions (forward within named bounds, backward by central differences), on
//! underflowing inputs with the CPU's FTZ/DAZ on and off, composed into one attention head, and
//! a reference that sums in another order is shown to differ (so the checks can fail).

use burn::tensor::{Device, Tensor, TensorData};
use lockstep_kernels::ftz;
use lockstep_kernels::ops as det;
use lockstep_train::conformance::{underflow_logits, underflow_values};

use crate::kernels_bitwise::{assert_bitwise, devices, host, seeded, t2};
use crate::reference::{
    bmm_loop, causal_softmax_backward_loop, causal_softmax_loop, exp_loop, fadd, fl, fmad, fmul,
    fsub, layer_norm_backward_loop, layer_norm_loop, matmul_fma_loop, matmul_loop, recip_loop,
    transpose, transpose3,
};

fn t3(v: &[f32], shape: [usize; 3], d: &Device) -> Tensor<3> {
    Tensor::<3>::from_data(TensorData::new(v.to_vec(), shape), d)
}

/// `(bt, m, k, n)`: one of everything, k = 33 (no multiple of any tile or SIMD width), heads of
/// a small GPT (`[bt*heads, t, head_dim]` products), and bigger odd shapes.
const BMM_SHAPES: &[(usize, usize, usize, usize)] = &[
    (1, 1, 1, 1),
    (1, 7, 33, 5),
    (3, 7, 33, 9),
    (4, 1, 13, 1),
    (6, 7, 8, 7),
    (12, 7, 7, 8),
    (2, 17, 64, 33),
    (2, 9, 300, 3),
    (3, 40, 33, 65), // the GPU's tiled kernel (both output dims >= 32), with row and column tails
];

#[test]
fn bmm_forward_and_backward_match_the_loop_on_every_backend() {
    for &(bt, m, k, n) in BMM_SHAPES {
        let tag = format!("{bt}x{m}x{k}x{n}");
        let a = seeded(bt * m * k, &format!("bmm-a{tag}"), -2.0, 2.0);
        let b = seeded(bt * k * n, &format!("bmm-b{tag}"), -2.0, 2.0);
        let g = seeded(bt * m * n, &format!("bmm-g{tag}"), -1.0, 1.0);
        let want = bmm_loop(&a, &b, bt, m, k, n);
        // dA = G · Bᵀ, dB = Aᵀ · G per batch element, in the same order (`bmm`'s module doc).
        let da = bmm_loop(&g, &transpose3(&b, bt, k, n), bt, m, n, k);
        let db = bmm_loop(&transpose3(&a, bt, m, k), &g, bt, k, m, n);
        for (name, d) in devices() {
            let what = format!("bmm {tag} on {name}");
            let ad = d.clone().autodiff();
            let (ta, tb) = (
                t3(&a, [bt, m, k], &ad).require_grad(),
                t3(&b, [bt, k, n], &ad).require_grad(),
            );
            let out = det::bmm(ta.clone(), tb.clone());
            assert_bitwise(&format!("{what}: forward"), &want, &host(out.clone()));
            let grads = (out * t3(&g, [bt, m, n], &ad)).sum().backward();
            assert_bitwise(&format!("{what}: dA"), &da, &host(ta.grad(&grads).unwrap()));
            assert_bitwise(&format!("{what}: dB"), &db, &host(tb.grad(&grads).unwrap()));
            // `b` given as a transposed view (`q·kᵀ`): read through its strides, same bits.
            let bt_view = t3(&transpose3(&b, bt, k, n), [bt, n, k], &d).swap_dims(1, 2);
            let got = host(det::bmm(t3(&a, [bt, m, k], &d), bt_view));
            assert_bitwise(&format!("{what}: transposed rhs view"), &want, &got);
            // Each batch element is `matmul`'s bits (a batch of one is `matmul`).
            for e in [0, bt - 1] {
                let (ae, be) = (
                    &a[e * m * k..(e + 1) * m * k],
                    &b[e * k * n..(e + 1) * k * n],
                );
                let mm = host(det::matmul(t2(ae, [m, k], &d), t2(be, [k, n], &d)));
                assert_bitwise(
                    &format!("{what}: batch element {e} vs matmul"),
                    &want[e * m * n..(e + 1) * m * n],
                    &mm,
                );
            }
            // ... and within the f64 product's bound.
            let f64_def: Vec<f64> = (0..bt * m * n)
                .map(|o| {
                    let (e, i, j) = (o / (m * n), (o / n) % m, o % n);
                    (0..k)
                        .map(|p| a[(e * m + i) * k + p] as f64 * b[(e * k + p) * n + j] as f64)
                        .sum()
                })
                .collect();
            let got = host(det::bmm(t3(&a, [bt, m, k], &d), t3(&b, [bt, k, n], &d)));
            crate::kernels_bitwise::assert_within(
                &format!("{what}: vs f64"),
                &f64_def,
                &got,
                |_| {
                    // |a|, |b| <= 2: k roundings of values up to 4k
                    4.0 * k as f64 * k as f64 * f32::EPSILON as f64
                },
            );
        }
    }
}

/// Layer norm's forward bound: `|y - y_f64| <= LN_EPS * f32::EPSILON * sqrt(c) * (1 + |y_f64| +
/// |mean| * rstd)` on the flushed inputs (`|mean| * rstd` the scale of the cancellation in
/// `x - mean`; `sqrt(c)` the row sums' accumulated rounding, the Newton `rsqrt` within 2 ULP;
/// measured worst: 0.28).
const LN_EPS: f64 = 1.0;

/// `(n, c)` rows of layer norm: c = 1 (y = 0), c = 37, a GPT width, and a long row.
const LN_SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (7, 1),
    (1, 37),
    (5, 37),
    (64, 37),
    (3, 768),
    (2, 4099),
];

/// Seeded rows in [-3, 3], every third row shifted by 100 (a large mean), row 1 constant.
fn ln_input(n: usize, c: usize) -> Vec<f32> {
    let mut x = seeded(n * c, &format!("ln-x{n}x{c}"), -3.0, 3.0);
    for (i, row) in x.chunks_mut(c).enumerate() {
        if i % 3 == 2 {
            row.iter_mut().for_each(|v| *v += 100.0);
        }
        if i == 1 {
            row.iter_mut().for_each(|v| *v = 0.75);
        }
    }
    x
}

#[test]
fn layer_norm_forward_and_backward_match_the_loop_on_every_backend() {
    let eps = 1e-5f32;
    for &(n, c) in LN_SHAPES {
        let x = ln_input(n, c);
        let g = seeded(n * c, &format!("ln-g{n}x{c}"), -1.0, 1.0);
        let want = layer_norm_loop(&x, c, eps);
        let want_dx = layer_norm_backward_loop(&x, &g, c, eps);
        // The f64 definition: (x - mean) / sqrt(var + eps), biased variance.
        let (mut y64, mut scale) = (vec![], vec![]);
        for row in x.chunks(c) {
            let row: Vec<f64> = row.iter().map(|&v| fl(v) as f64).collect();
            let mean = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            for v in row {
                y64.push((v - mean) * rstd);
                scale.push(1.0 + ((v - mean) * rstd).abs() + mean.abs() * rstd);
            }
        }
        let rt = (c as f64).sqrt();
        for (name, d) in devices() {
            let what = format!("layer_norm {n}x{c} on {name}");
            let ad = d.clone().autodiff();
            let xt = t2(&x, [n, c], &ad).require_grad();
            let y = det::layer_norm(xt.clone(), eps);
            let grads = (y.clone() * t2(&g, [n, c], &ad)).sum().backward();
            let (fwd, bwd) = (host(y), host(xt.grad(&grads).unwrap()));
            assert_bitwise(&format!("{what}: forward vs the loop"), &want, &fwd);
            assert_bitwise(&format!("{what}: backward vs the loop"), &want_dx, &bwd);
            crate::kernels_bitwise::assert_within(
                &format!("{what}: forward vs f64"),
                &y64,
                &fwd,
                |i| LN_EPS * f32::EPSILON as f64 * rt * scale[i],
            );
        }
    }
}

/// Causal softmax's forward bound: `|y - p| <= CAUSAL_EPS * f32::EPSILON * p * (sqrt(q + 1) +
/// |z| + |mx|) + EXP_FLOOR` (`z = x * scale` rounded once, `exp` of the rounded `z - mx`, the row
/// sum's rounding; see `kernels_bitwise`'s `SOFTMAX_EPS`; measured worst: 0.75).
const CAUSAL_EPS: f64 = 1.5;
/// Below e^-86 no bound relative to `p` is meaningful (`exp` clamps at -87).
const EXP_FLOOR: f64 = 4.5e-38;

/// `(t, r)`: `t = 1`, one head of 7, several heads and batches, t = 33, a GPT-ish 12 heads.
const CAUSAL_SHAPES: &[(usize, usize)] = &[(1, 1), (1, 3), (7, 7), (7, 21), (33, 66), (5, 60)];

#[test]
fn causal_softmax_forward_and_backward_match_the_loop_on_every_backend() {
    for &(t, r) in CAUSAL_SHAPES {
        for scale in [0.353_553_38f32, 1.0, 3.0] {
            let x = seeded(r * t, &format!("causal-x{t}x{r}"), -6.0, 6.0);
            let g = seeded(r * t, &format!("causal-g{t}x{r}"), -1.0, 1.0);
            let want = causal_softmax_loop(&x, t, scale);
            let want_dx = causal_softmax_backward_loop(&want, &g, t, scale);
            let (mut p, mut tol) = (vec![0f64; r * t], vec![0f64; r * t]);
            for i in 0..r {
                let q = i % t;
                let z: Vec<f64> = (0..=q)
                    .map(|j| fl(x[i * t + j]) as f64 * scale as f64)
                    .collect();
                let mx = z.iter().cloned().fold(f64::MIN, f64::max);
                let s: f64 = z.iter().map(|v| (v - mx).exp()).sum();
                for j in 0..=q {
                    let pj = (z[j] - mx).exp() / s;
                    p[i * t + j] = pj;
                    tol[i * t + j] = CAUSAL_EPS
                        * f32::EPSILON as f64
                        * pj
                        * (((q + 1) as f64).sqrt() + z[j].abs() + mx.abs())
                        + EXP_FLOOR;
                }
            }
            for (name, d) in devices() {
                let what = format!("causal_softmax t={t} r={r} scale={scale} on {name}");
                let ad = d.clone().autodiff();
                let xt = t2(&x, [r, t], &ad).require_grad();
                let y = det::causal_softmax(xt.clone(), t, scale);
                let grads = (y.clone() * t2(&g, [r, t], &ad)).sum().backward();
                let (fwd, bwd) = (host(y), host(xt.grad(&grads).unwrap()));
                assert_bitwise(&format!("{what}: forward vs the loop"), &want, &fwd);
                assert_bitwise(&format!("{what}: backward vs the loop"), &want_dx, &bwd);
                for i in 0..r * t {
                    if i % t > (i / t) % t {
                        assert_eq!(
                            (fwd[i].to_bits(), bwd[i].to_bits()),
                            (0, 0),
                            "{what}: masked [{i}] must be +0.0"
                        );
                    }
                }
                crate::kernels_bitwise::assert_within(
                    &format!("{what}: forward vs f64"),
                    &p,
                    &fwd,
                    |i| tol[i],
                );
            }
        }
    }
}

/// The three ops on inputs that hold subnormals, `±MIN_POSITIVE`, zeros and values whose
/// products and sums underflow: the loop's bits on every backend, and on the CPU backends with
/// the CPU's FTZ/DAZ modes on and off alike (`subnormals`' module doc).
#[test]
fn attention_kernels_on_underflowing_inputs_match_with_cpu_ftz_and_on_every_backend() {
    let u = underflow_values;
    let (bt, m, k, n) = (3, 5, 33, 4);
    let (a, b, g) = (
        u(bt * m * k, "gpt-a", -60),
        u(bt * k * n, "gpt-b", -62),
        u(bt * m * n, "gpt-g", -64),
    );
    let (ln_n, c, eps) = (6, 37, 1e-30f32);
    let lx: Vec<f32> = u(ln_n * c, "gpt-ln", -63)
        .iter()
        .enumerate()
        .map(|(i, v)| if (i / c) % 2 == 0 { v * 1e-30 } else { *v })
        .collect();
    let lg = u(ln_n * c, "gpt-ln-g", -60);
    let (t, r) = (12, 24);
    let (cx, cg) = (underflow_logits(r, t), u(r * t, "gpt-causal-g", -30));
    let wants: Vec<(&str, Vec<f32>)> = {
        let cy = causal_softmax_loop(&cx, t, 1.0);
        vec![
            ("bmm", bmm_loop(&a, &b, bt, m, k, n)),
            (
                "bmm dA",
                bmm_loop(&g, &transpose3(&b, bt, k, n), bt, m, n, k),
            ),
            ("layer_norm", layer_norm_loop(&lx, c, eps)),
            ("layer_norm dx", layer_norm_backward_loop(&lx, &lg, c, eps)),
            (
                "causal_softmax dx",
                causal_softmax_backward_loop(&cy, &cg, t, 1.0),
            ),
            ("causal_softmax", cy),
        ]
    };
    assert!(
        wants[2].1.iter().any(|v| v.abs() > 0.1),
        "layer norm of tiny rows is not all zero"
    );
    let run = |d: &Device| -> Vec<Vec<f32>> {
        let ad = d.clone().autodiff();
        let ta = t3(&a, [bt, m, k], &ad).require_grad();
        let y = det::bmm(ta.clone(), t3(&b, [bt, k, n], &ad));
        let gr = (y.clone() * t3(&g, [bt, m, n], &ad)).sum().backward();
        let xt = t2(&lx, [ln_n, c], &ad).require_grad();
        let ln = det::layer_norm(xt.clone(), eps);
        let lgr = (ln.clone() * t2(&lg, [ln_n, c], &ad)).sum().backward();
        let ct = t2(&cx, [r, t], &ad).require_grad();
        let cs = det::causal_softmax(ct.clone(), t, 1.0);
        let cgr = (cs.clone() * t2(&cg, [r, t], &ad)).sum().backward();
        vec![
            host(y),
            host(ta.grad(&gr).unwrap()),
            host(ln),
            host(xt.grad(&lgr).unwrap()),
            host(ct.grad(&cgr).unwrap()),
            host(cs),
        ]
    };
    for (name, d) in devices() {
        let modes: &[Option<bool>] = if name == "wgpu" {
            &[None]
        } else {
            &[Some(false), Some(true)]
        };
        for &mode in modes {
            let got = match mode {
                None => run(&d),
                Some(on) => ftz::run_with(on, || run(&d)),
            };
            for ((what, want), got) in wants.iter().zip(&got) {
                assert_bitwise(
                    &format!("{what} (underflowing inputs) on {name}, CPU FTZ {mode:?}"),
                    want,
                    got,
                );
            }
        }
    }
}

/// One causal attention head as a GPT runs it: `s = q·kᵀ` (bmm of `k`'s transposed view),
/// `p = causal_softmax(s, t, 1/sqrt(dh))` over the `[bh*t, t]` rows, `o = p·v`; forward and the
/// gradients of `q`, `k` and `v` bit for bit against the composed loops, on every backend.
#[test]
fn a_causal_attention_head_is_bitwise_on_every_backend() {
    let (bh, t, dh) = (6, 7, 8);
    let scale = (1.0 / (dh as f64).sqrt()) as f32;
    let q = seeded(bh * t * dh, "attn-q", -1.5, 1.5);
    let k = seeded(bh * t * dh, "attn-k", -1.5, 1.5);
    let v = seeded(bh * t * dh, "attn-v", -1.5, 1.5);
    let go = seeded(bh * t * dh, "attn-g", -1.0, 1.0);
    // The loops, composed as autodiff composes the ops' documented backward passes.
    let kt = transpose3(&k, bh, t, dh);
    let s = bmm_loop(&q, &kt, bh, t, dh, t);
    let p = causal_softmax_loop(&s, t, scale);
    let o = bmm_loop(&p, &v, bh, t, t, dh);
    let dp = bmm_loop(&go, &transpose3(&v, bh, t, dh), bh, t, dh, t);
    let dv = bmm_loop(&transpose3(&p, bh, t, t), &go, bh, t, t, dh);
    let ds = causal_softmax_backward_loop(&p, &dp, t, scale);
    let dq = bmm_loop(&ds, &k, bh, t, t, dh);
    let dkt = bmm_loop(&transpose3(&q, bh, t, dh), &ds, bh, dh, t, t);
    let dk = transpose3(&dkt, bh, dh, t);
    for (name, d) in devices() {
        let ad = d.clone().autodiff();
        let shape = [bh, t, dh];
        let (tq, tk, tv) = (
            t3(&q, shape, &ad).require_grad(),
            t3(&k, shape, &ad).require_grad(),
            t3(&v, shape, &ad).require_grad(),
        );
        let s = det::bmm(tq.clone(), tk.clone().swap_dims(1, 2));
        let p = det::causal_softmax(s.reshape([bh * t, t]), t, scale).reshape([bh, t, t]);
        let out = det::bmm(p, tv.clone());
        let grads = (out.clone() * t3(&go, shape, &ad)).sum().backward();
        let what = format!("attention head {bh}x{t}x{dh} on {name}");
        assert_bitwise(&format!("{what}: output"), &o, &host(out));
        assert_bitwise(&format!("{what}: dq"), &dq, &host(tq.grad(&grads).unwrap()));
        assert_bitwise(&format!("{what}: dk"), &dk, &host(tk.grad(&grads).unwrap()));
        assert_bitwise(&format!("{what}: dv"), &dv, &host(tv.grad(&grads).unwrap()));
    }
}

/// The one-op attention (`attention`: `qkv` `[b*t, 3c]` -> the heads' outputs `[b*t, c]`)
/// against the suite's loops composed per (sequence, head) as the written-out form computes it
/// (slices, `q·kᵀ`, the causal softmax, `att·v`; backward through the same products), forward
/// and the gradient of `qkv`, bit for bit on every backend and in both profiles (`fma` where
/// the probe finds a true fused multiply-add).
#[test]
fn the_attention_op_matches_the_loops_in_both_profiles_on_every_backend() {
    for (b, t, nh, hd) in [(1, 1, 1, 1), (2, 7, 3, 5), (3, 13, 2, 8), (2, 33, 2, 9)] {
        let c = nh * hd;
        let tag = format!("b={b} t={t} heads={nh} hd={hd}");
        let qkv = seeded(b * t * 3 * c, &format!("attn-op-qkv {tag}"), -1.5, 1.5);
        let g = seeded(b * t * c, &format!("attn-op-g {tag}"), -1.0, 1.0);
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        for fused in [false, true] {
            let mm = |a: &[f32], x: &[f32], m: usize, k: usize, n: usize| {
                if fused {
                    matmul_fma_loop(a, x, m, k, n)
                } else {
                    matmul_loop(a, x, m, k, n)
                }
            };
            let (mut y, mut dx) = (vec![0f32; b * t * c], vec![0f32; b * t * 3 * c]);
            for e in 0..b {
                for h in 0..nh {
                    let blk = |src: &[f32], stride: usize, c0: usize| -> Vec<f32> {
                        (0..t * hd)
                            .map(|i| src[(e * t + i / hd) * stride + c0 + i % hd])
                            .collect()
                    };
                    let (q, k, v) = (
                        blk(&qkv, 3 * c, h * hd),
                        blk(&qkv, 3 * c, c + h * hd),
                        blk(&qkv, 3 * c, 2 * c + h * hd),
                    );
                    let gh = blk(&g, c, h * hd);
                    let p = causal_softmax_loop(&mm(&q, &transpose(&k, t, hd), t, hd, t), t, scale);
                    let o = mm(&p, &v, t, t, hd);
                    let dp = mm(&gh, &transpose(&v, t, hd), t, hd, t);
                    let dv = mm(&transpose(&p, t, t), &gh, t, t, hd);
                    let ds = causal_softmax_backward_loop(&p, &dp, t, scale);
                    let dq = mm(&ds, &k, t, t, hd);
                    let dk = transpose(&mm(&transpose(&q, t, hd), &ds, hd, t, t), hd, t);
                    for i in 0..t {
                        for j in 0..hd {
                            let (row, col) = (e * t + i, h * hd + j);
                            y[row * c + col] = o[i * hd + j];
                            for (part, d) in [&dq, &dk, &dv].into_iter().enumerate() {
                                // + 0.0: the slices' gradients are added into zeros.
                                dx[row * 3 * c + part * c + col] = d[i * hd + j] + 0.0;
                            }
                        }
                    }
                }
            }
            for (name, d) in devices() {
                if fused && lockstep_kernels::profile::probe(&d).lockstep_fma != "fused" {
                    continue; // no fma profile on this device (arith_profiles checks the refusal)
                }
                let what = format!("attention {tag} fused={fused} on {name}");
                let ad = d.clone().autodiff();
                let x = t2(&qkv, [b * t, 3 * c], &ad).require_grad();
                let out = det::attention(x.clone(), b, nh, scale, fused);
                let grads = (out.clone() * t2(&g, [b * t, c], &ad)).sum().backward();
                assert_bitwise(&format!("{what}: output"), &y, &host(out));
                assert_bitwise(
                    &format!("{what}: d qkv"),
                    &dx,
                    &host(x.grad(&grads).unwrap()),
                );
            }
        }
    }
}

/// `sum(g * f(x))`'s gradient with respect to `x` through autodiff on `d`.
fn grad_on<const D: usize>(
    d: &Device,
    x: &[f32],
    shape: [usize; D],
    g: &[f32],
    f: &dyn Fn(Tensor<D>) -> Tensor<D>,
) -> Vec<f32> {
    let ad = d.clone().autodiff();
    let xt = Tensor::<D>::from_data(TensorData::new(x.to_vec(), shape), &ad).require_grad();
    let y = f(xt.clone());
    let gt = Tensor::<D>::from_data(TensorData::new(g.to_vec(), y.dims()), &ad);
    host(xt.grad(&(y * gt).sum().backward()).unwrap())
}

/// Central differences `(L(x + h e_i) - L(x - h e_i)) / 2h` of an f64 loss, `h = 1e-4`.
fn central_differences(x: &[f32], loss: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-4;
    let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    (0..x.len())
        .map(|i| {
            let (mut up, mut dn) = (x.clone(), x.clone());
            up[i] += h;
            dn[i] -= h;
            (loss(&up) - loss(&dn)) / (2.0 * h)
        })
        .collect()
}

/// Each backward against central differences of its f64 definition (loose: `1e-4 + 1e-3 |fd|`),
/// and against burn's stock ops composed into the same function (within `1e-5` relative).
#[test]
fn attention_kernel_backward_passes_match_finite_differences_and_stock_ops() {
    #[allow(deprecated)]
    let cpu = Device::ndarray();
    let check = |what: &str, ours: &[f32], fd: &[f64], stock: &[f32]| {
        crate::kernels_bitwise::assert_within(
            &format!("{what} vs finite differences"),
            fd,
            ours,
            |i| 1e-4 + 1e-3 * fd[i].abs(),
        );
        let s: Vec<f64> = stock.iter().map(|&v| v as f64).collect();
        crate::kernels_bitwise::assert_within(&format!("{what} vs stock ops"), &s, ours, |i| {
            1e-6 + 1e-5 * s[i].abs()
        });
    };
    // bmm [2, 3, 5] x [2, 5, 4]: both operands.
    let (bt, m, k, n) = (2, 3, 5, 4);
    let a = seeded(bt * m * k, "fd-bmm-a", -1.0, 1.0);
    let b = seeded(bt * k * n, "fd-bmm-b", -1.0, 1.0);
    let g = seeded(bt * m * n, "fd-bmm-g", -1.0, 1.0);
    let bmm64 = |a: &[f64], b: &[f64]| -> f64 {
        let mut l = 0.0;
        for e in 0..bt {
            for i in 0..m {
                for j in 0..n {
                    let s: f64 = (0..k)
                        .map(|p| a[(e * m + i) * k + p] * b[(e * k + p) * n + j])
                        .sum();
                    l += s * g[(e * m + i) * n + j] as f64;
                }
            }
        }
        l
    };
    let (a64, b64): (Vec<f64>, Vec<f64>) = (
        a.iter().map(|&v| v as f64).collect(),
        b.iter().map(|&v| v as f64).collect(),
    );
    let bt3 = t3(&b, [bt, k, n], &cpu.clone().autodiff());
    let at3 = t3(&a, [bt, m, k], &cpu.clone().autodiff());
    let (bt3s, at3s) = (bt3.clone(), at3.clone());
    check(
        "bmm dA",
        &grad_on(&cpu, &a, [bt, m, k], &g, &|x| det::bmm(x, bt3.clone())),
        &central_differences(&a, &|x| bmm64(x, &b64)),
        &grad_on(&cpu, &a, [bt, m, k], &g, &|x| x.matmul(bt3s.clone())),
    );
    check(
        "bmm dB",
        &grad_on(&cpu, &b, [bt, k, n], &g, &|x| det::bmm(at3.clone(), x)),
        &central_differences(&b, &|x| bmm64(&a64, x)),
        &grad_on(&cpu, &b, [bt, k, n], &g, &|x| at3s.clone().matmul(x)),
    );
    // embedding: a [5, 3] table at ids with repeats and an unused row.
    let (vocab, ce, ids) = (5usize, 3usize, vec![2usize, 0, 2, 4, 2, 0]);
    let tab = seeded(vocab * ce, "fd-emb-t", -1.0, 1.0);
    let ge = seeded(ids.len() * ce, "fd-emb-g", -1.0, 1.0);
    let emb64 = |t: &[f64]| -> f64 {
        ids.iter()
            .enumerate()
            .map(|(r, &id)| {
                (0..ce)
                    .map(|j| t[id * ce + j] * ge[r * ce + j] as f64)
                    .sum::<f64>()
            })
            .sum()
    };
    let idx = Tensor::<1, burn::tensor::Int>::from_data(
        TensorData::new(
            ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [ids.len()],
        ),
        &cpu.clone().autodiff(),
    );
    check(
        "embedding dTable",
        &grad_on(&cpu, &tab, [vocab, ce], &ge, &|x| det::embedding(x, &ids)),
        &central_differences(&tab, &emb64),
        &grad_on(&cpu, &tab, [vocab, ce], &ge, &|x| x.select(0, idx.clone())),
    );
    // layer norm [3, 7]
    let (ln_n, c, eps) = (3, 7, 1e-5f32);
    let x = seeded(ln_n * c, "fd-ln-x", -2.0, 2.0);
    let gl = seeded(ln_n * c, "fd-ln-g", -1.0, 1.0);
    let ln64 = |x: &[f64]| -> f64 {
        x.chunks(c)
            .enumerate()
            .map(|(i, row)| {
                let mean = row.iter().sum::<f64>() / c as f64;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
                let rstd = 1.0 / (var + eps as f64).sqrt();
                (0..c)
                    .map(|j| (row[j] - mean) * rstd * gl[i * c + j] as f64)
                    .sum::<f64>()
            })
            .sum()
    };
    let stock_ln = |x: Tensor<2>| {
        let mean = x.clone().sum_dim(1).div_scalar(c as f32);
        let dv = x - mean;
        let var = (dv.clone() * dv.clone()).sum_dim(1).div_scalar(c as f32);
        dv / var.add_scalar(eps).sqrt()
    };
    check(
        "layer_norm dx",
        &grad_on(&cpu, &x, [ln_n, c], &gl, &|x| det::layer_norm(x, eps)),
        &central_differences(&x, &ln64),
        &grad_on(&cpu, &x, [ln_n, c], &gl, &stock_ln),
    );
    // causal softmax: t = 4, two blocks
    let (t, r, scale) = (4, 8, 0.7f32);
    let x = seeded(r * t, "fd-causal-x", -2.0, 2.0);
    let gc = seeded(r * t, "fd-causal-g", -1.0, 1.0);
    let causal64 = |x: &[f64]| -> f64 {
        x.chunks(t)
            .enumerate()
            .map(|(i, row)| {
                let q = i % t;
                let z: Vec<f64> = row[..=q].iter().map(|v| v * scale as f64).collect();
                let mx = z.iter().cloned().fold(f64::MIN, f64::max);
                let s: f64 = z.iter().map(|v| (v - mx).exp()).sum();
                (0..=q)
                    .map(|j| (z[j] - mx).exp() / s * gc[i * t + j] as f64)
                    .sum::<f64>()
            })
            .sum()
    };
    let mask: Vec<f32> = (0..r * t)
        .map(|i| if i % t > (i / t) % t { -1e9 } else { 0.0 })
        .collect();
    let mask_ad = t2(&mask, [r, t], &cpu.clone().autodiff());
    let stock_causal =
        |x: Tensor<2>| burn::tensor::activation::softmax(x.mul_scalar(scale) + mask_ad.clone(), 1);
    check(
        "causal_softmax dx",
        &grad_on(&cpu, &x, [r, t], &gc, &|x| det::causal_softmax(x, t, scale)),
        &central_differences(&x, &causal64),
        &grad_on(&cpu, &x, [r, t], &gc, &stock_causal),
    );
}

/// The bitwise checks can fail: a reference that sums in another order (k reversed in `bmm`;
/// each layer-norm row's sums reversed; the causal row sum and the backward dot reversed)
/// differs from every backend's bits on these inputs, while the documented loop matches them.
#[test]
fn a_reference_with_one_reordered_sum_is_caught() {
    let caught = |what: &str, reordered: &[f32], got: &[f32]| {
        let r = std::panic::catch_unwind(|| assert_bitwise(what, reordered, got));
        assert!(r.is_err(), "{what}: the reordered reference matched");
    };
    // bmm, k reversed: the loop of each row of `a` and column of `b` read back to front.
    let (bt, m, k, n) = (3, 16, 300, 8);
    let a = seeded(bt * m * k, "rev-a", -2.0, 2.0);
    let b = seeded(bt * k * n, "rev-b", -2.0, 2.0);
    let ar: Vec<f32> = (0..a.len())
        .map(|i| a[i - i % k + (k - 1 - i % k)])
        .collect();
    let br: Vec<f32> = (0..b.len())
        .map(|i| {
            let (e, p, j) = (i / (k * n), (i / n) % k, i % n);
            b[(e * k + (k - 1 - p)) * n + j]
        })
        .collect();
    let (want, rev) = (
        bmm_loop(&a, &b, bt, m, k, n),
        bmm_loop(&ar, &br, bt, m, k, n),
    );
    // layer norm, each row reversed (its mean and variance sums run back to front), reversed back
    let (ln_n, c, eps) = (8, 300, 1e-5f32);
    let x = seeded(ln_n * c, "rev-ln", -3.0, 3.0);
    let flip = |v: &[f32]| -> Vec<f32> {
        v.chunks(c)
            .flat_map(|row| row.iter().rev().copied())
            .collect()
    };
    let (want_ln, rev_ln) = (
        layer_norm_loop(&x, c, eps),
        flip(&layer_norm_loop(&flip(&x), c, eps)),
    );
    // causal softmax with s summed from j = q down to 0, and its backward's dot likewise
    let (t, r, scale) = (64, 128, 0.5f32);
    let cx = seeded(r * t, "rev-causal", -4.0, 4.0);
    let cg = seeded(r * t, "rev-causal-g", -1.0, 1.0);
    let want_c = causal_softmax_loop(&cx, t, scale);
    let mut rev_c = vec![0f32; r * t];
    let mut rev_dc = vec![0f32; r * t];
    for i in 0..r {
        let q = i % t;
        let z: Vec<f32> = (0..=q).map(|j| fmul(fl(cx[i * t + j]), scale)).collect();
        let mx = z[1..]
            .iter()
            .fold(z[0], |mx, &v| if v > mx { v } else { mx });
        let s = z
            .iter()
            .rev()
            .fold(0f32, |s, &v| fadd(s, exp_loop(fsub(v, mx))));
        let rc = recip_loop(s);
        for j in 0..=q {
            rev_c[i * t + j] = fmul(exp_loop(fsub(z[j], mx)), rc);
        }
        let dot = (0..=q)
            .rev()
            .fold(0f32, |acc, j| fmad(cg[i * t + j], want_c[i * t + j], acc));
        for j in 0..=q {
            let y = want_c[i * t + j];
            rev_dc[i * t + j] = fmul(scale, fmul(y, fsub(cg[i * t + j], dot)));
        }
    }
    let want_dc = causal_softmax_backward_loop(&want_c, &cg, t, scale);
    // the reversed matmul really is what reversing means: one output by hand
    let by_hand = (0..k).rev().fold(0f32, |acc, p| fmad(a[p], b[p * n], acc));
    assert_eq!(by_hand.to_bits(), rev[0].to_bits(), "reversed bmm by hand");
    assert_eq!(
        matmul_loop(&a[..m * k], &b[..k * n], m, k, n),
        want[..m * n].to_vec()
    );
    for (name, d) in devices() {
        let got = host(det::bmm(t3(&a, [bt, m, k], &d), t3(&b, [bt, k, n], &d)));
        assert_bitwise(&format!("bmm on {name}"), &want, &got);
        caught(&format!("bmm, k reversed, on {name}"), &rev, &got);
        let got = host(det::layer_norm(t2(&x, [ln_n, c], &d), eps));
        assert_bitwise(&format!("layer_norm on {name}"), &want_ln, &got);
        caught(
            &format!("layer_norm, sums reversed, on {name}"),
            &rev_ln,
            &got,
        );
        let ad = d.clone().autodiff();
        let xt = t2(&cx, [r, t], &ad).require_grad();
        let y = det::causal_softmax(xt.clone(), t, scale);
        let gr = (y.clone() * t2(&cg, [r, t], &ad)).sum().backward();
        let (got, dgot) = (host(y), host(xt.grad(&gr).unwrap()));
        assert_bitwise(&format!("causal_softmax on {name}"), &want_c, &got);
        assert_bitwise(&format!("causal_softmax dx on {name}"), &want_dc, &dgot);
        caught(
            &format!("causal_softmax, s reversed, on {name}"),
            &rev_c,
            &got,
        );
        caught(
            &format!("causal_softmax dx, dot reversed, on {name}"),
            &rev_dc,
            &dgot,
        );
    }
}

/// `embedding` (row gather, segmented-sum backward) on every backend: forward and the table's
/// gradient bit for bit against the suite's loops (each table row adds its positions' gradients
/// from `+0` in position order), and against the one-hot matmuls it replaced in both arithmetic
/// profiles — with repeated ids, unused ids, a vocabulary of one, `-0` and subnormal entries.
#[test]
fn embedding_gather_and_segmented_sum_match_the_loops_and_the_one_hot_matmul() {
    let mut saw_negative_zero = false;
    for (vocab, c, ids) in [
        (1usize, 1usize, vec![0usize]),
        (7, 5, vec![3, 0, 3, 6, 3, 1, 0]),
        (
            9,
            33,
            (0..70).map(|r| (r * 5 + r / 3) % 8).collect::<Vec<_>>(),
        ),
        (65, 128, (0..768).map(|r| (r * 37 + r / 5) % 61).collect()),
    ] {
        let n = ids.len();
        let mut table = seeded(vocab * c, &format!("emb-t{vocab}"), -2.0, 2.0);
        let mut g = seeded(n * c, &format!("emb-g{vocab}"), -1.0, 1.0);
        for (i, v) in table.iter_mut().enumerate() {
            match i % 17 {
                3 => *v = -0.0,
                5 => *v = -f32::from_bits(7),
                _ => {}
            }
        }
        for (i, v) in g.iter_mut().enumerate() {
            if i % 23 == 4 {
                *v = f32::from_bits(0x8000_0003);
            }
        }
        // References: the gather `fl(+0 + fl(x))` and the segmented sum in position order.
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&v| table[v * c..(v + 1) * c].iter().map(|&x| fadd(0.0, fl(x))))
            .collect();
        saw_negative_zero |= table.iter().any(|x| x.to_bits() == 0x8000_0000);
        let mut dwant = vec![0f32; vocab * c];
        for (r, &v) in ids.iter().enumerate() {
            for j in 0..c {
                dwant[v * c + j] = fadd(dwant[v * c + j], fl(g[r * c + j]));
            }
        }
        let mut onehot = vec![0f32; n * vocab];
        for (r, &v) in ids.iter().enumerate() {
            onehot[r * vocab + v] = 1.0;
        }
        // The one-hot product in the unfused order gives the same bits (the doc's claim).
        assert_bitwise(
            "embedding vs one-hot loop",
            &matmul_loop(&onehot, &table, n, vocab, c),
            &want,
        );
        for (name, d) in devices() {
            let ad = d.clone().autodiff();
            let x = t2(&table, [vocab, c], &ad).require_grad();
            let y = det::embedding(x.clone(), &ids);
            let what = format!("embedding {vocab}x{c} at {n} ids on {name}");
            assert_bitwise(&what, &want, &host(y.clone()));
            let gs = (y * t2(&g, [n, c], &ad)).sum().backward();
            assert_bitwise(
                &format!("{what}: table grad"),
                &dwant,
                &host(x.grad(&gs).unwrap()),
            );
            for fused in [false, true] {
                if fused && lockstep_kernels::profile::probe(&d).lockstep_fma != "fused" {
                    continue; // no fma profile on this device (arith_profiles checks the refusal)
                }
                let x = t2(&table, [vocab, c], &ad).require_grad();
                let y = det::matmul_in(t2(&onehot, [n, vocab], &ad), x.clone(), fused);
                assert_bitwise(
                    &format!("{what}: one-hot fused={fused}"),
                    &want,
                    &host(y.clone()),
                );
                let gs = (y * t2(&g, [n, c], &ad)).sum().backward();
                let dx = host(x.grad(&gs).unwrap());
                assert_bitwise(&format!("{what}: one-hot grad fused={fused}"), &dwant, &dx);
            }
        }
    }
    assert!(saw_negative_zero);
}
