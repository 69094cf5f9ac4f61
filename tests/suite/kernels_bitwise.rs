//! lockstep's kernels give the same bits on every backend: ndarray and flex (CPU loops) vs wgpu
//! (CubeCL kernels on lavapipe), forward and backward, on seeded inputs over many shapes
//! including odd and degenerate ones. Each backend is also checked against references written
//! in the suite — never against `lockstep_kernels`' own CPU code, which the CPU backends run:
//!
//! - every kernel whose bits the contract defines by a documented order of `+ - *` against the
//!   plain f32 loop in that order (`reference`, with the contract's flush rule written out),
//!   bit for bit: matmul, the reductions, pooling, im2col/col2im, the optimizer updates, the
//!   element-wise backward products, and the approximations built from a bit-trick seed or a
//!   range reduction and then `+ - *` only (exp; the Newton reciprocal and square root, also on
//!   their clamp and range edges; sigmoid, tanh, GELU and its derivative; softmax; the
//!   cross-entropy and log-softmax backward; Adam's weights), so a one-ULP change in any of
//!   them fails on a machine without a GPU too;
//! - the approximations also against f64 definitions, within the bounds named below (each the
//!   current kernels' measured worst case with some margin): what they compute is close to what
//!   they approximate. `log`, log-softmax's forward and cross-entropy's forward have only this
//!   check (`reference`'s module doc says why).

use burn::tensor::{Device, Tensor, TensorData};
use lockstep_core::SeedStream;
use lockstep_kernels::ops as det;

use crate::reference::{
    adam_loop, col2im_loop, exp_loop, fl, fmul, fsub, gelu_grad_loop, gelu_loop, im2col_loop,
    matmul_loop, pool_reference, recip_loop, sgd_loop, sigmoid_loop, softmax_backward_loop,
    softmax_loop, sqrt_loop, sum_all_loop, sum_rows_loop, tanh_loop, transpose, xent_backward_loop,
};

pub fn devices() -> Vec<(&'static str, Device)> {
    #[allow(deprecated)]
    let mut v = vec![("ndarray", Device::ndarray()), ("flex", Device::flex())];
    if crate::harness::require_wgpu("wgpu in the kernel/conformance comparisons") {
        v.push((
            "wgpu",
            Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        ));
    }
    v
}

pub fn seeded(n: usize, name: &str, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = SeedStream::new(11, name);
    (0..n).map(|_| s.uniform_range(lo, hi)).collect()
}

pub fn t2(v: &[f32], shape: [usize; 2], d: &Device) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(v.to_vec(), shape), d)
}

pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().expect("f32")
}

/// Panics with the first mismatching indices (llm.c style) unless `got` equals `want` bitwise.
pub fn assert_bitwise(what: &str, want: &[f32], got: &[f32]) {
    assert_eq!(want.len(), got.len(), "{what}: lengths differ");
    let bad: Vec<usize> = (0..want.len())
        .filter(|&i| want[i].to_bits() != got[i].to_bits())
        .collect();
    if !bad.is_empty() {
        let first: Vec<String> = bad
            .iter()
            .take(5)
            .map(|&i| format!("[{i}] want {:e} got {:e}", want[i], got[i]))
            .collect();
        panic!(
            "{what}: {} of {} elements differ; first: {}",
            bad.len(),
            want.len(),
            first.join(", ")
        );
    }
}

/// Units in the last place between two f32 (distance of their ordered bit patterns; `+0` and
/// `-0` coincide).
fn ulps(a: f32, b: f32) -> u32 {
    let ord = |x: f32| {
        let b = x.to_bits() as i32;
        if b < 0 { i32::MIN - b } else { b }
    };
    ord(a).abs_diff(ord(b))
}

/// Panics unless every `got[i]` is within `max` ULP of `want[i]` (an f64 definition) rounded to
/// f32; names how many are not and the worst one.
fn assert_ulps(what: &str, x: &[f32], want: &[f64], got: &[f32], max: u32) {
    assert_eq!(want.len(), got.len(), "{what}: lengths differ");
    let d: Vec<u32> = (0..want.len())
        .map(|i| ulps(got[i], want[i] as f32))
        .collect();
    let worst = (0..d.len()).max_by_key(|&i| d[i]).unwrap_or(0);
    let bad = d.iter().filter(|&&u| u > max).count();
    assert!(
        bad == 0,
        "{what}: {bad} of {} elements more than {max} ULP from the f64 definition; worst: \
         x = {:e}, got {:e}, want {:e} ({} ULP)",
        d.len(),
        x[worst],
        got[worst],
        want[worst],
        d[worst]
    );
}

/// Panics unless `|got[i] - want[i]| <= tol(i)` for every `i` (`want` from an f64 definition);
/// names how many are not and the worst one (largest error / bound).
pub fn assert_within(what: &str, want: &[f64], got: &[f32], tol: impl Fn(usize) -> f64) {
    assert_eq!(want.len(), got.len(), "{what}: lengths differ");
    let ratio = |i: usize| {
        let err = (got[i] as f64 - want[i]).abs();
        if err == 0.0 {
            0.0
        } else if err.is_nan() {
            f64::INFINITY
        } else {
            err / tol(i)
        }
    };
    let r: Vec<f64> = (0..want.len()).map(ratio).collect();
    let worst = (0..r.len())
        .max_by(|&a, &b| r[a].total_cmp(&r[b]))
        .unwrap_or(0);
    let bad = r.iter().filter(|&&v| v > 1.0).count();
    assert!(
        bad == 0,
        "{what}: {bad} of {} elements outside the bound; worst: [{worst}] got {:e}, want {:e}, \
         error {:e}, bound {:e}",
        r.len(),
        got[worst],
        want[worst],
        (got[worst] as f64 - want[worst]).abs(),
        tol(worst)
    );
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 1),
    (3, 5, 2),
    (17, 64, 33),
    (32, 64, 128),
    (5, 513, 9),
    (128, 10, 10),
    (2, 1000, 3),
    (65, 300, 97), // the GPU's tiled kernel (both output dims >= 32) with tails, several k panels
];

#[test]
fn matmul_forward_and_backward_should_match_reference_backend() {
    for &(m, k, n) in SHAPES {
        let a = seeded(m * k, &format!("a{m}{k}{n}"), -2.0, 2.0);
        let b = seeded(k * n, &format!("b{m}{k}{n}"), -2.0, 2.0);
        let g = seeded(m * n, &format!("g{m}{k}{n}"), -1.0, 1.0);
        let want = matmul_loop(&a, &b, m, k, n);
        // dA = G · Bᵀ and dB = Aᵀ · G with the same fixed order (`matmul`'s module doc).
        let da = matmul_loop(&g, &transpose(&b, k, n), m, n, k);
        let db = matmul_loop(&transpose(&a, m, k), &g, k, m, n);
        for (name, d) in devices() {
            let ad = d.clone().autodiff();
            let (ta, tb) = (
                t2(&a, [m, k], &ad).require_grad(),
                t2(&b, [k, n], &ad).require_grad(),
            );
            let out = det::matmul(ta.clone(), tb.clone());
            assert_bitwise(
                &format!("matmul {m}x{k}x{n} on {name}"),
                &want,
                &host(out.clone()),
            );
            let grads = (out * t2(&g, [m, n], &ad)).sum().backward();
            assert_bitwise(
                &format!("matmul dA {m}x{k}x{n} on {name}"),
                &da,
                &host(ta.grad(&grads).expect("grad")),
            );
            assert_bitwise(
                &format!("matmul dB {m}x{k}x{n} on {name}"),
                &db,
                &host(tb.grad(&grads).expect("grad")),
            );
        }
    }
}

#[test]
fn reductions_should_match_reference_backend() {
    for &(m, n) in &[(1, 1), (1, 300), (300, 1), (7, 13), (128, 256), (1025, 3)] {
        let x = seeded(m * n, &format!("x{m}{n}"), -3.0, 3.0);
        let rows = sum_rows_loop(&x, m, n);
        let all = sum_all_loop(&x);
        for (name, d) in devices() {
            assert_bitwise(
                &format!("sum_rows {m}x{n} on {name}"),
                &rows,
                &host(det::sum_rows(t2(&x, [m, n], &d))),
            );
            assert_bitwise(
                &format!("sum_all {m}x{n} on {name}"),
                &[all],
                &host(det::sum_all(t2(&x, [m, n], &d))),
            );
        }
    }
}

/// `exp`'s f64 definition: `e^x` of the flushed input clamped to `[-87, 88]` (the clamp is part
/// of `arith::exp_fixed`'s documented contract: results stay normal).
fn exp_def(x: f32) -> f64 {
    (fl(x).clamp(-87.0, 88.0) as f64).exp()
}

/// `exp`'s bound, in ULP from `exp_def` rounded to f32 (measured worst over these inputs, every
/// backend: 1 ULP).
const EXP_ULPS: u32 = 2;
/// `log`'s bound, in ULP from `ln` of the flushed input rounded to f32, for normal x > 0
/// (measured worst: 1 ULP).
const LOG_ULPS: u32 = 2;

/// Panics unless `got` (`log` of `x`, normal x > 0) is within `LOG_ULPS` of the f64 definition.
pub fn assert_log_within_bound(what: &str, x: &[f32], got: &[f32]) {
    let want: Vec<f64> = x.iter().map(|&v| (fl(v) as f64).ln()).collect();
    assert_ulps(
        &format!("{what} vs the f64 definition"),
        x,
        &want,
        got,
        LOG_ULPS,
    );
}

#[test]
fn transcendentals_should_match_reference_backend() {
    let mut x = seeded(200_000, "exp", -90.0, 90.0);
    // the clamp's edges and beyond, tiny, flushed and non-finite inputs, the range reduction's
    // rounding boundary between n = 0 and n = +-1 (ln2 / 2) and n = +-1 itself, and the powers of
    // two 2^-24 ..= 2^7 with their negatives
    x.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        87.0,
        -87.0,
        87.5,
        -87.5,
        88.0,
        -88.0,
        88.7,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        0.346_573_6,
        -0.346_573_6,
        std::f32::consts::LN_2,
        -std::f32::consts::LN_2,
    ]);
    x.extend((-24..=7).flat_map(|e| [2f32.powi(e), -2f32.powi(e)]));
    // log's inputs: e^u for u uniform in [-15, 15) (std's f32 exp: the values only need to
    // spread over many binades) and a few edge values.
    let mut logx: Vec<f32> = seeded(4096, "log", 0.0, 30.0)
        .iter()
        .map(|v| (*v - 15.0).exp())
        .collect();
    logx.extend([
        1.0,
        2.0,
        0.5,
        1.0 + f32::EPSILON,
        1.0 - f32::EPSILON / 2.0,
        f32::MAX,
        f32::from_bits(0x0080_0001),
    ]);
    let want_exp: Vec<f64> = x.iter().map(|&v| exp_def(v)).collect();
    let loop_exp: Vec<f32> = x.iter().map(|&v| exp_loop(v)).collect();
    let mut first: Option<(&str, Vec<f32>, Vec<f32>)> = None;
    for (name, d) in devices() {
        let exp = host(det::exp(Tensor::<1>::from_data(
            TensorData::new(x.clone(), [x.len()]),
            &d,
        )));
        let log = host(det::log(Tensor::<1>::from_data(
            TensorData::new(logx.clone(), [logx.len()]),
            &d,
        )));
        assert_bitwise(&format!("exp on {name} vs the loop"), &loop_exp, &exp);
        assert_ulps(
            &format!("exp on {name} vs the f64 definition"),
            &x,
            &want_exp,
            &exp,
            EXP_ULPS,
        );
        assert_log_within_bound(&format!("log on {name}"), &logx, &log);
        match &first {
            None => first = Some((name, exp, log)),
            Some((f, e, l)) => {
                assert_bitwise(&format!("exp on {name} vs {f}"), e, &exp);
                assert_bitwise(&format!("log on {name} vs {f}"), l, &log);
            }
        }
    }
}

/// Cross-entropy's forward bound: `|nll - nll_f64| <= XENT_NLL_EPS * f32::EPSILON * (sqrt(c) +
/// |lse| + |dot|)`, `lse` and `dot` the f64 log-sum-exp and target dot product (the scale of the
/// roundings that form `lse - dot`), `sqrt(c)` for the row sum's accumulated rounding (measured
/// worst: 0.57).
const XENT_NLL_EPS: f64 = 1.0;
/// Its gradient's bound: `|d - d_f64| <= XENT_GRAD_EPS * f32::EPSILON * |g| * (p (sqrt(c) + |x -
/// mx|) + t)`, `p` the f64 softmax probability, `t` the target: `exp` is ~1 ULP of its rounded
/// argument `x - mx` (an error of up to `|x - mx| * eps/2` relative), and the row sum's rounding
/// grows about as `sqrt(c)` (measured worst: 0.53).
const XENT_GRAD_EPS: f64 = 1.0;

/// Panics unless `got` (`cross_entropy_nll` of `[m, c]` logits `x` and targets `t`) is within
/// `XENT_NLL_EPS` of the f64 definition (`xent`'s module doc on the flushed inputs: nll = lse -
/// x·t with lse = ln(sum_j e^(x_j - mx)) + mx).
pub fn assert_xent_nll_within_bound(what: &str, x: &[f32], t: &[f32], c: usize, got: &[f32]) {
    let (eps, rt) = (f32::EPSILON as f64, (c as f64).sqrt());
    let (mut nll, mut scale) = (vec![], vec![]);
    for (xr, tr) in x.chunks(c).zip(t.chunks(c)) {
        let xr: Vec<f64> = xr.iter().map(|&v| fl(v) as f64).collect();
        let mx = xr.iter().cloned().fold(f64::MIN, f64::max);
        let lse = xr.iter().map(|v| (v - mx).exp()).sum::<f64>().ln() + mx;
        let dot: f64 = xr.iter().zip(tr).map(|(a, &b)| a * fl(b) as f64).sum();
        nll.push(lse - dot);
        scale.push(rt + lse.abs() + dot.abs());
    }
    assert_within(&format!("{what} vs the f64 definition"), &nll, got, |i| {
        XENT_NLL_EPS * eps * scale[i]
    });
}

#[test]
fn cross_entropy_forward_and_backward_should_match_reference_backend() {
    for &(m, c) in &[(1, 2), (3, 10), (128, 10), (7, 1), (33, 257)] {
        let x = seeded(m * c, &format!("logits{m}{c}"), -20.0, 20.0);
        let labels: Vec<u32> = (0..m as u32).map(|i| (i * 7 + 3) % c as u32).collect();
        let mut t = vec![0f32; m * c];
        for (i, &l) in labels.iter().enumerate() {
            t[i * c + l as usize] = 1.0;
        }
        let g = seeded(m, &format!("g{m}{c}"), 0.1, 2.0);
        // The gradient's f64 definition (`xent`'s module doc) on the flushed inputs: d_j =
        // (e^(x_j - mx) / s - t_j) * g.
        let (mut dx, mut p, mut shift) = (vec![0f64; m * c], vec![0f64; m * c], vec![0f64; m * c]);
        for i in 0..m {
            let r = i * c..(i + 1) * c;
            let xr: Vec<f64> = x[r.clone()].iter().map(|&v| fl(v) as f64).collect();
            let tr: Vec<f64> = t[r].iter().map(|&v| fl(v) as f64).collect();
            let mx = xr.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = xr.iter().map(|v| (v - mx).exp()).sum();
            for j in 0..c {
                shift[i * c + j] = xr[j] - mx;
                p[i * c + j] = (xr[j] - mx).exp() / s;
                dx[i * c + j] = (p[i * c + j] - tr[j]) * fl(g[i]) as f64;
            }
        }
        let (eps, rt) = (f32::EPSILON as f64, (c as f64).sqrt());
        let want_bwd = xent_backward_loop(&x, &t, &g, c);
        let mut first: Option<(&str, Vec<f32>, Vec<f32>)> = None;
        for (name, d) in devices() {
            let ad = d.clone().autodiff();
            let tx = t2(&x, [m, c], &ad).require_grad();
            let out = det::cross_entropy_nll(tx.clone(), t2(&t, [m, c], &ad));
            let grads = (out.clone() * t2(&g, [m, 1], &ad)).sum().backward();
            let (fwd, bwd) = (host(out), host(tx.grad(&grads).expect("grad")));
            assert_xent_nll_within_bound(&format!("xent {m}x{c} on {name}"), &x, &t, c, &fwd);
            assert_bitwise(
                &format!("xent grad {m}x{c} on {name} vs the loop"),
                &want_bwd,
                &bwd,
            );
            assert_within(
                &format!("xent grad {m}x{c} on {name} vs the f64 definition"),
                &dx,
                &bwd,
                |k| {
                    XENT_GRAD_EPS
                        * eps
                        * g[k / c].abs() as f64
                        * (p[k] * (rt + shift[k].abs()) + t[k] as f64)
                },
            );
            match &first {
                None => first = Some((name, fwd, bwd)),
                Some((f, wf, wb)) => {
                    assert_bitwise(&format!("xent {m}x{c} on {name} vs {f}"), wf, &fwd);
                    assert_bitwise(&format!("xent grad {m}x{c} on {name} vs {f}"), wb, &bwd);
                }
            }
        }
    }
}

#[test]
fn dropout_masks_made_on_device_match_the_host_stream() {
    // `first` > 0 is a shard's part of a batch's mask: it starts mid-block (1, 15, 17, 37) or
    // on a block boundary (16, 4800), and past 2^32 blocks (the counter's high word).
    let firsts = [0u64, 1, 15, 16, 17, 37, 4800, (1u64 << 36) + 5];
    for &(m, n) in &[(1, 1), (1, 15), (1, 16), (1, 17), (64, 128), (333, 301)] {
        for &first in &firsts {
            if first > 0 && m * n > 20_000 {
                continue;
            }
            // `dropout`'s documented definition, from the host's seed stream (`lockstep_core`):
            // element i is `scale` if the stream's (first + i)-th `uniform_f32()` is >= p, else 0.
            let (p, scale) = (0.3f32, (1.0f64 / 0.7) as f32);
            let want: Vec<f32> = if first < 1 << 20 {
                let mut s = SeedStream::new(42, "dropout/l0/step-9");
                (0..first as usize + m * n)
                    .map(|_| if s.uniform_f32() >= p { scale } else { 0.0 })
                    .skip(first as usize)
                    .collect()
            } else {
                // Too far to draw word by word: the stream's own seek (rand_chacha's word pos).
                let mut s = SeedStream::new(42, "dropout/l0/step-9");
                s.set_word_pos(first as u128);
                (0..m * n)
                    .map(|_| if s.uniform_f32() >= p { scale } else { 0.0 })
                    .collect()
            };
            for (name, d) in devices() {
                let like = Tensor::<2>::zeros([m, n], &d);
                let got = det::dropout_mask(&like, 42, "dropout/l0/step-9", first, p);
                assert_bitwise(
                    &format!("dropout {m}x{n} from word {first} on {name}"),
                    &want,
                    &host(got),
                );
            }
        }
    }
}

/// Autodiff of lockstep's ops against central finite differences (in f64 on the host) and
/// against burn's stock ops, within tolerance.
#[test]
fn lockstep_backward_passes_match_finite_differences_and_stock_ops() {
    #[allow(deprecated)]
    let ad = Device::ndarray().autodiff();
    let (m, k, n) = (5, 7, 4);
    let a = seeded(m * k, "fd-a", -1.0, 1.0);
    let b = seeded(k * n, "fd-b", -1.0, 1.0);
    let bias = seeded(n, "fd-bias", -1.0, 1.0);
    let t: Vec<f32> = (0..m * n)
        .map(|i| if i % n == (i / n) % n { 1.0 } else { 0.0 })
        .collect();
    // loss(a, b, bias) = mean cross-entropy of (a·b + bias) against t, lockstep ops throughout.
    let loss_f64 = |a: &[f32], b: &[f32], bias: &[f32]| -> f64 {
        let mut total = 0.0;
        for i in 0..m {
            let z: Vec<f64> = (0..n)
                .map(|j| {
                    (0..k)
                        .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                        .sum::<f64>()
                        + bias[j] as f64
                })
                .collect();
            let mx = z.iter().cloned().fold(f64::MIN, f64::max);
            let lse = z.iter().map(|v| (v - mx).exp()).sum::<f64>().ln() + mx;
            total += lse - (0..n).map(|j| z[j] * t[i * n + j] as f64).sum::<f64>();
        }
        total / m as f64
    };
    let graph = |lock: bool| {
        let (ta, tb, tc) = (
            t2(&a, [m, k], &ad).require_grad(),
            t2(&b, [k, n], &ad).require_grad(),
            t2(&bias, [1, n], &ad).require_grad(),
        );
        let ks = if lock {
            lockstep_core::config::KernelSet::Lockstep
        } else {
            lockstep_core::config::KernelSet::Burn
        };
        let logits = if lock {
            det::add_bias(det::matmul(ta.clone(), tb.clone()), tc.clone())
        } else {
            ta.clone().matmul(tb.clone()) + tc.clone()
        };
        let loss = lockstep_train::model::cross_entropy(ks, logits, t2(&t, [m, n], &ad));
        let g = loss.backward();
        (
            host(ta.grad(&g).unwrap()),
            host(tb.grad(&g).unwrap()),
            host(tc.grad(&g).unwrap()),
        )
    };
    let (la, lb, lc) = graph(true);
    let (sa, sb, sc) = graph(false);
    for (name, ours, stock) in [("dA", &la, &sa), ("dB", &lb, &sb), ("dbias", &lc, &sc)] {
        for (i, (x, y)) in ours.iter().zip(stock.iter()).enumerate() {
            assert!(
                (x - y).abs() <= 1e-6 + 1e-5 * y.abs(),
                "{name}[{i}]: lockstep {x} vs stock {y}"
            );
        }
    }
    let h = 1e-3f32;
    let fd = |which: usize, i: usize| {
        let (mut a2, mut b2, mut c2) = (a.clone(), b.clone(), bias.clone());
        let v = [&mut a2, &mut b2, &mut c2];
        let x = &mut *v[which];
        x[i] += h;
        let up = loss_f64(&a2, &b2, &c2);
        let (mut a3, mut b3, mut c3) = (a.clone(), b.clone(), bias.clone());
        let v = [&mut a3, &mut b3, &mut c3];
        v[which][i] -= h;
        (up - loss_f64(&a3, &b3, &c3)) / (2.0 * h as f64)
    };
    for (which, grads) in [(0, &la), (1, &lb), (2, &lc)] {
        for (i, &g) in grads.iter().enumerate() {
            let want = fd(which, i);
            assert!(
                (g as f64 - want).abs() <= 2e-4 + 1e-3 * want.abs(),
                "param {which}[{i}]: autodiff {g} vs finite difference {want}"
            );
        }
    }
}

/// `sigmoid`'s bound: absolute error from `1 / (1 + e^-x)` of the flushed input (measured
/// worst: 1.40e-7, about 2 ULP of values just below 1).
const SIGMOID_ABS: f64 = 2.5e-7;
/// `tanh`'s bound: absolute error from `tanh(x)` of the flushed input (`2 sigmoid(2x) - 1` has
/// absolute, not relative, accuracy; measured worst: 2.62e-7).
const TANH_ABS: f64 = 4e-7;

#[test]
fn sigmoid_and_tanh_forward_and_backward_should_match_reference_backend() {
    let mut x = seeded(20_000, "act", -50.0, 50.0);
    x.extend(seeded(5_000, "act-small", -1e-3, 1e-3));
    x.extend([0.0, -0.0, 40.0, -40.0, 88.0, -88.0]);
    let g = seeded(x.len(), "act-g", -1.0, 1.0);
    let n = x.len();
    let mut first: Vec<(String, &str, Vec<f32>)> = vec![];
    for (name, d) in devices() {
        let ad = d.clone().autodiff();
        for (op, f) in [
            ("sigmoid", det::sigmoid::<1> as fn(Tensor<1>) -> Tensor<1>),
            ("tanh", det::tanh::<1>),
        ] {
            let xt = Tensor::<1>::from_data(TensorData::new(x.clone(), [n]), &ad).require_grad();
            let y = f(xt.clone());
            let grads = (y.clone() * Tensor::<1>::from_data(TensorData::new(g.clone(), [n]), &ad))
                .sum()
                .backward();
            let (fwd, bwd) = (host(y), host(xt.grad(&grads).expect("grad")));
            let sigmoid = op == "sigmoid";
            let want: Vec<f64> = x
                .iter()
                .map(|&v| {
                    let v = fl(v) as f64;
                    if sigmoid {
                        1.0 / (1.0 + (-v).exp())
                    } else {
                        v.tanh()
                    }
                })
                .collect();
            let bound = if sigmoid { SIGMOID_ABS } else { TANH_ABS };
            let f_loop = if sigmoid { sigmoid_loop } else { tanh_loop };
            let want_loop: Vec<f32> = x.iter().map(|&v| f_loop(v)).collect();
            assert_bitwise(
                &format!("{op} forward on {name} vs the loop"),
                &want_loop,
                &fwd,
            );
            assert_within(
                &format!("{op} forward on {name} vs the f64 definition"),
                &want,
                &fwd,
                |_| bound,
            );
            // The backward as `ops` defines it, on this backend's own forward output `y`:
            // sigmoid `g * (y * (1 - y))`, tanh `g * (1 - y * y)`; each product one flushed
            // rounding (`mul`), `1 - v` one IEEE subtraction (of a value in [0, 1]).
            let want_bwd: Vec<f32> = fwd
                .iter()
                .zip(&g)
                .map(|(&y, &gi)| {
                    let y = fl(y);
                    if sigmoid {
                        fmul(fl(gi), fmul(y, 1.0 - y))
                    } else {
                        fmul(fl(gi), 1.0 - fmul(y, y))
                    }
                })
                .collect();
            assert_bitwise(
                &format!("{op} backward on {name} vs the loop on its forward output"),
                &want_bwd,
                &bwd,
            );
            for (part, got) in [("forward", fwd), ("backward", bwd)] {
                let key = format!("{op} {part}");
                match first.iter().find(|(k, _, _)| k == &key) {
                    None => first.push((key, name, got)),
                    Some((_, f, w)) => assert_bitwise(&format!("{key} on {name} vs {f}"), w, &got),
                }
            }
        }
    }
}

#[test]
fn pooling_forward_and_backward_should_match_reference_backend() {
    use burn::tensor::module::{avg_pool2d, max_pool2d};
    use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
    let cases: &[([usize; 4], usize)] = &[
        ([2, 3, 8, 8], 2),
        ([1, 1, 5, 7], 2),
        ([3, 2, 4, 6], 2),
        ([1, 2, 9, 10], 3),
        ([1, 1, 1, 1], 2),
        ([2, 1, 3, 3], 1),
        ([4, 8, 28, 28], 2),
    ];
    for (ci, &(shape, k)) in cases.iter().enumerate() {
        let len: usize = shape.iter().product();
        let out_len = shape[0] * shape[1] * (shape[2] / k) * (shape[3] / k);
        // Half the cases quantised to {-1, 0, 1, 2}: windows full of ties (as after a ReLU).
        let mut x = seeded(len, &format!("pool-{ci}"), -3.0, 3.0);
        if ci % 2 == 0 {
            x.iter_mut().for_each(|v| *v = v.round().clamp(-1.0, 2.0));
        }
        let dy = seeded(out_len, &format!("pool-g-{ci}"), -1.0, 1.0);
        for max in [true, false] {
            let (want_y, want_dx) = pool_reference(&x, &dy, shape, k, max);
            for (name, d) in devices() {
                let ad = d.clone().autodiff();
                let xt =
                    Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &ad).require_grad();
                let y = if max {
                    det::max_pool2d(xt.clone(), k)
                } else {
                    det::avg_pool2d(xt.clone(), k)
                };
                let g = Tensor::<4>::from_data(TensorData::new(dy.clone(), y.dims()), &ad);
                let grads = (y.clone() * g).sum().backward();
                let what = format!(
                    "{} pool {shape:?} k={k} on {name}",
                    if max { "max" } else { "avg" }
                );
                assert_bitwise(&format!("{what} forward"), &want_y, &host(y));
                let dx = xt.grad(&grads).map(host).unwrap_or_else(|| vec![0.0; len]);
                assert_bitwise(&format!("{what} backward"), &want_dx, &dx);
                // The stock op agrees on the forward (max is exact; avg sums 4 values).
                if name == "ndarray" && out_len > 0 {
                    let xs = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &d);
                    let stock = if max {
                        host(max_pool2d(xs, MaxPoolOptions::new([k, k])))
                    } else {
                        host(avg_pool2d(xs, AvgPoolOptions::new([k, k])))
                    };
                    for (i, (a, b)) in stock.iter().zip(&want_y).enumerate() {
                        assert!((a - b).abs() <= 1e-6, "{what}: stock [{i}] {a} vs {b}");
                    }
                    // ... and on the backward where no window has ties (the unquantised cases).
                    if ci % 2 == 1 {
                        let xs = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &ad)
                            .require_grad();
                        let ys = if max {
                            max_pool2d(xs.clone(), MaxPoolOptions::new([k, k]))
                        } else {
                            avg_pool2d(xs.clone(), AvgPoolOptions::new([k, k]))
                        };
                        let gs =
                            Tensor::<4>::from_data(TensorData::new(dy.clone(), ys.dims()), &ad);
                        let grads = (ys * gs).sum().backward();
                        let stock_dx = host(xs.grad(&grads).expect("grad"));
                        for (i, (a, b)) in stock_dx.iter().zip(&want_dx).enumerate() {
                            assert!((a - b).abs() <= 1e-6, "{what}: stock grad [{i}] {a} vs {b}");
                        }
                    }
                }
            }
        }
    }
}

/// Softmax's bound: `|y - p| <= SOFTMAX_EPS * f32::EPSILON * p * (sqrt(c) + |x - mx|) +
/// EXP_FLOOR`, `p` the f64 probability (`exp` of the rounded `x - mx`, the row sum's rounding;
/// see `XENT_GRAD_EPS`; measured worst: 0.61).
const SOFTMAX_EPS: f64 = 1.0;
/// About e^-86: `exp` clamps its argument at -87, so a probability below e^-87 comes out as e^-87
/// times at most 1 (or flushed to 0): no bound relative to it is meaningful.
const EXP_FLOOR: f64 = 4.5e-38;
/// Log-softmax's bound: `|y - ln p| <= LOG_SOFTMAX_EPS * f32::EPSILON * (sqrt(c) + |ln p|)`
/// (measured worst: 0.87).
const LOG_SOFTMAX_EPS: f64 = 1.5;
/// Log-softmax's backward bound: `|dx_j - (dy_j - p_j sum_k dy_k)| <= LOG_SOFTMAX_GRAD_EPS *
/// f32::EPSILON * (|dy_j| + p_j (sqrt(c) + |ln p_j|) sum_k |dy_k|)` (measured worst: 0.48).
const LOG_SOFTMAX_GRAD_EPS: f64 = 1.0;

/// Panics unless `got` (`log_softmax` of `[m, c]` logits `x`) is within `LOG_SOFTMAX_EPS` of the
/// f64 definition on the flushed inputs: ln p = (x - mx) - ln(sum_j e^(x_j - mx)).
pub fn assert_log_softmax_within_bound(what: &str, x: &[f32], c: usize, got: &[f32]) {
    let (eps, rt) = (f32::EPSILON as f64, (c as f64).sqrt());
    let lnp: Vec<f64> = x
        .chunks(c)
        .flat_map(|row| {
            let row: Vec<f64> = row.iter().map(|&v| fl(v) as f64).collect();
            let mx = row.iter().cloned().fold(f64::MIN, f64::max);
            let ls = row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            row.into_iter().map(move |v| (v - mx) - ls)
        })
        .collect();
    assert_within(&format!("{what} vs the f64 definition"), &lnp, got, |k| {
        LOG_SOFTMAX_EPS * eps * (rt + lnp[k].abs())
    });
}

#[test]
fn softmax_and_log_softmax_forward_and_backward_should_match_reference_backend() {
    let eps = f32::EPSILON as f64;
    for (ci, &(m, c)) in [(1, 1), (4, 1), (128, 10), (7, 257), (2, 5000), (3, 4)]
        .iter()
        .enumerate()
    {
        let mut x = seeded(m * c, &format!("sm-{ci}"), -20.0, 20.0);
        if ci == 5 {
            // a row of equal logits, a row at exp's range ends, a row with one huge gap
            x = vec![
                3.0, 3.0, 3.0, 3.0, 88.0, -88.0, 0.0, 87.0, -100.0, 0.0, -100.0, -100.0,
            ];
        }
        let dy = seeded(m * c, &format!("sm-g-{ci}"), -1.0, 1.0);
        let rt = (c as f64).sqrt();
        let want_softmax = softmax_loop(&x, c);
        // The f64 definitions on the flushed inputs: p = e^(x - mx) / s, ln p = (x - mx) - ln s;
        // log-softmax's gradient dy - p * sum(dy) (and the scale of its bound).
        let (mut p, mut lnp, mut shift) = (vec![0f64; m * c], vec![0f64; m * c], vec![0f64; m * c]);
        let (mut dls, mut dls_scale) = (vec![0f64; m * c], vec![0f64; m * c]);
        for i in 0..m {
            let r = i * c..(i + 1) * c;
            let row: Vec<f64> = x[r.clone()].iter().map(|&v| fl(v) as f64).collect();
            let gr: Vec<f64> = dy[r].iter().map(|&v| fl(v) as f64).collect();
            let mx = row.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = row.iter().map(|v| (v - mx).exp()).sum();
            let (gs, gabs): (f64, f64) = (gr.iter().sum(), gr.iter().map(|v| v.abs()).sum());
            for j in 0..c {
                let k = i * c + j;
                shift[k] = row[j] - mx;
                p[k] = (row[j] - mx).exp() / s;
                lnp[k] = (row[j] - mx) - s.ln();
                dls[k] = gr[j] - p[k] * gs;
                dls_scale[k] = gr[j].abs() + p[k] * (rt + lnp[k].abs()) * gabs;
            }
        }
        for log in [false, true] {
            let op = if log { "log_softmax" } else { "softmax" };
            let mut first: Option<(&str, Vec<f32>, Vec<f32>)> = None;
            for (name, d) in devices() {
                let ad = d.clone().autodiff();
                let xt =
                    Tensor::<2>::from_data(TensorData::new(x.clone(), [m, c]), &ad).require_grad();
                let y = if log {
                    det::log_softmax(xt.clone())
                } else {
                    det::softmax(xt.clone())
                };
                let g = Tensor::<2>::from_data(TensorData::new(dy.clone(), [m, c]), &ad);
                let grads = (y.clone() * g).sum().backward();
                let (fwd, bwd) = (host(y), host(xt.grad(&grads).expect("grad")));
                let what = format!("{op} {m}x{c} on {name}");
                // The backward is plain arithmetic on the forward's output and `exp` (`softmax`'s
                // module doc).
                assert_bitwise(
                    &format!("{what}: backward vs the loop on its forward output"),
                    &softmax_backward_loop(&fwd, &dy, c, log),
                    &bwd,
                );
                if log {
                    assert_log_softmax_within_bound(&format!("{what}: forward"), &x, c, &fwd);
                    assert_within(
                        &format!("{what}: backward vs the f64 definition"),
                        &dls,
                        &bwd,
                        |k| LOG_SOFTMAX_GRAD_EPS * eps * dls_scale[k],
                    );
                } else {
                    assert_bitwise(&format!("{what}: forward vs the loop"), &want_softmax, &fwd);
                    assert_within(
                        &format!("{what}: forward vs the f64 definition"),
                        &p,
                        &fwd,
                        |k| SOFTMAX_EPS * eps * p[k] * (rt + shift[k].abs()) + EXP_FLOOR,
                    );
                }
                match &first {
                    None => first = Some((name, fwd, bwd)),
                    Some((f, rf, rb)) => {
                        assert_bitwise(&format!("{what} forward vs {f}"), rf, &fwd);
                        assert_bitwise(&format!("{what} backward vs {f}"), rb, &bwd);
                    }
                }
            }
        }
    }
}

/// Adam's weight bound: `|w - w_f64| <= ADAM_W_EPS * f32::EPSILON * (|w_f64| + |lr * u|)`, with
/// `w_f64 = w' - lr * (m c1) / (sqrt(v c2) + eps)` in f64 from the step's f32 moments and `w'`
/// the weights after AdamW's decay (lockstep's Newton square root and reciprocal are a few ULP
/// from the correctly rounded ones; measured worst: 1.84).
const ADAM_W_EPS: f64 = 3.0;

/// One fused optimizer step against `optim`'s documented update (`reference::sgd_loop` /
/// `adam_loop`), from the state before the step (`w`, `slots`): every output bit for bit, and
/// Adam's weights also within `ADAM_W_EPS` of the f64 definition. The scalars are formed as the
/// host does (`optim`'s module doc: f64 then one rounding to f32, or one f32 product).
#[allow(clippy::too_many_arguments)]
fn check_optimizer_step(
    what: &str,
    cfg: &lockstep_core::config::OptimizerConfig,
    lr: f32,
    step: u64,
    g: &[f32],
    w: &[f32],
    slots: &[Vec<f32>],
    got_w: &[f32],
    got_slots: &[Vec<f32>],
) {
    use lockstep_core::config::OptimizerKind;
    use lockstep_kernels::optim::Decay;
    let wd = cfg.weight_decay as f32;
    let decay = match cfg.kind {
        _ if wd <= 0.0 => Decay::None,
        OptimizerKind::Adamw => Decay::Decoupled,
        _ => Decay::Coupled,
    };
    if cfg.kind == OptimizerKind::Sgd {
        let hp = [lr, wd, cfg.momentum as f32];
        let (want_w, want_b) = sgd_loop(w, g, &slots[0], hp, decay);
        assert_bitwise(&format!("{what}: weights vs the loop"), &want_w, got_w);
        assert_bitwise(
            &format!("{what}: buffer vs the loop"),
            &want_b,
            &got_slots[0],
        );
        return;
    }
    let (b1, b2) = (cfg.betas[0], cfg.betas[1]);
    let (omb1, omb2) = ((1.0 - b1) as f32, (1.0 - b2) as f32);
    let c1 = (1.0 / (1.0 - b1.powi(step as i32))) as f32;
    let c2 = (1.0 / (1.0 - b2.powi(step as i32))) as f32;
    let (b1, b2, eps) = (b1 as f32, b2 as f32, cfg.eps as f32);
    let hp = [lr, wd, b1, b2, omb1, omb2, c1, c2, eps, lr * wd];
    let (want_w, want_m, want_v) = adam_loop(w, g, &slots[0], &slots[1], hp, decay);
    assert_bitwise(&format!("{what}: weights vs the loop"), &want_w, got_w);
    assert_bitwise(&format!("{what}: m vs the loop"), &want_m, &got_slots[0]);
    assert_bitwise(&format!("{what}: v vs the loop"), &want_v, &got_slots[1]);
    // The f64 definition from the step's f32 moments and the weights after AdamW's decay.
    let (mut def_w, mut scale) = (vec![0f64; w.len()], vec![0f64; w.len()]);
    for i in 0..w.len() {
        let wi = fl(w[i]);
        let wi = if decay == Decay::Decoupled {
            fsub(wi, fmul(wi, lr * wd))
        } else {
            wi
        };
        let u =
            (want_m[i] as f64 * c1 as f64) / ((want_v[i] as f64 * c2 as f64).sqrt() + eps as f64);
        def_w[i] = wi as f64 - u * lr as f64;
        scale[i] = def_w[i].abs() + (u * lr as f64).abs();
    }
    assert_within(
        &format!("{what}: weights vs the f64 definition"),
        &def_w,
        got_w,
        |i| ADAM_W_EPS * f32::EPSILON as f64 * scale[i],
    );
}

/// The fused optimizer kernels over several steps, for SGD, Adam and AdamW with and without
/// weight decay: each step against `optim`'s documented update written out in the suite
/// (`check_optimizer_step`), and the whole run against the stock tensor-op updates (an
/// independent implementation of the same formulas, with hardware `sqrt` and `/`): SGD bit for
/// bit; Adam's weights within the declared `adam_update_vs_stock` bound and its moments bit for
/// bit (unless an L2 term feeds the weights back into them) (lockstep's Newton square root and
/// reciprocal are a few ULP from the correctly rounded ones). The fused kernels give the same
/// bits on every backend.
#[test]
fn fused_optimizer_steps_match_the_stock_ops_on_every_backend() {
    use lockstep_core::config::{KernelSet, OptimizerConfig, OptimizerKind};
    let n = 5003;
    let w0 = seeded(n, "opt-w", -1.0, 1.0);
    let grads: Vec<Vec<f32>> = (0..4)
        .map(|s| seeded(n, &format!("opt-g{s}"), -0.1, 0.1))
        .collect();
    let mut first: Vec<(String, Vec<f32>)> = vec![];
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Adam,
        OptimizerKind::Adamw,
    ] {
        for wd in [0.0, 0.05] {
            let cfg = OptimizerConfig {
                kind,
                lr: 1e-2,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: wd,
                momentum: 0.9,
                decay_matrices_only: false,
            };
            let label = format!("{kind:?} wd={wd}");
            for (name, d) in devices() {
                let mut results = vec![];
                for ks in [KernelSet::Burn, KernelSet::Lockstep] {
                    let up =
                        |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [n]), &d);
                    let mut w = up(&w0);
                    let mut slots: Vec<Tensor<1>> = lockstep_train::optim::slot_names(kind)
                        .iter()
                        .map(|_| up(&vec![0.0; n]))
                        .collect();
                    for (s, g) in grads.iter().enumerate() {
                        let lr = 1e-2 * (1.0 - s as f32 * 0.1);
                        let before = (ks == KernelSet::Lockstep).then(|| {
                            let slots: Vec<Vec<f32>> = slots.iter().cloned().map(host).collect();
                            (host(w.clone()), slots)
                        });
                        w = lockstep_train::optim::update(
                            &cfg,
                            ks,
                            lr,
                            s as u64 + 1,
                            w,
                            up(g),
                            &mut slots,
                        );
                        if let Some((w_in, slots_in)) = before {
                            check_optimizer_step(
                                &format!("{label} step {} on {name}", s + 1),
                                &cfg,
                                lr,
                                s as u64 + 1,
                                g,
                                &w_in,
                                &slots_in,
                                &host(w.clone()),
                                &slots.iter().cloned().map(host).collect::<Vec<_>>(),
                            );
                        }
                    }
                    let mut all = host(w);
                    for sl in slots {
                        all.extend(host(sl));
                    }
                    results.push(all);
                }
                if kind == OptimizerKind::Sgd {
                    assert_bitwise(
                        &format!("{label} on {name}: fused vs stock"),
                        &results[0],
                        &results[1],
                    );
                } else {
                    let tol = lockstep_core::tolerance_for("adam_update_vs_stock", "lockstep")
                        .expect("declared");
                    let cmp =
                        lockstep_core::tolerance::compare(&results[0][..n], &results[1][..n], tol);
                    assert!(
                        cmp.passed(),
                        "{label} on {name}: fused weights vs stock outside {tol}: {cmp:?}"
                    );
                    // Adam's L2 term feeds the (slightly different) weights back into the
                    // gradient; without it the moments never see the weights.
                    if !(kind == OptimizerKind::Adam && wd > 0.0) {
                        assert_bitwise(
                            &format!("{label} on {name}: moments, fused vs stock"),
                            &results[0][n..],
                            &results[1][n..],
                        );
                    }
                }
                match first.iter().find(|(l, _)| l == &label) {
                    None => first.push((label.clone(), results.swap_remove(1))),
                    Some((_, want)) => assert_bitwise(
                        &format!("{label}: {name} vs the first backend"),
                        want,
                        &results[1],
                    ),
                }
            }
        }
    }
}

/// Arguments for the Newton approximations: `n` seeded normal values with a uniform exponent in
/// `[2^-126, 2^128)` and random mantissa bits, every power of two from `2^-126` to `2^127` with
/// its neighbours one ULP either side, and `edges`.
fn newton_sweep(n: usize, name: &str, edges: &[f32]) -> Vec<f32> {
    let mut s = SeedStream::new(11, name);
    let mut v: Vec<f32> = (0..n)
        .map(|_| f32::from_bits(((1 + s.next_u32() % 254) << 23) | (s.next_u32() >> 9)))
        .collect();
    for e in 1..=254u32 {
        let b = e << 23;
        v.extend([b - 1, b, b + 1].map(f32::from_bits));
    }
    v.extend(edges);
    v
}

/// The clamp and flush edges both Newton sweeps add: zeros, subnormals, `±MIN_POSITIVE` (flushed),
/// the smallest value above it, `recip`'s clamp ends `2^-125` and `2^125` one ULP either side,
/// 1.0, `f32::MAX` and infinity.
const NEWTON_EDGES: &[f32] = &[
    0.0,
    -0.0,
    f32::from_bits(1),
    f32::from_bits(0x007f_ffff),
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    f32::from_bits(0x0080_0001),
    f32::from_bits(0x00ff_ffff),
    f32::from_bits(0x0100_0000),
    f32::from_bits(0x0100_0001),
    f32::from_bits(0x7dff_ffff),
    f32::from_bits(0x7e00_0000),
    f32::from_bits(0x7e00_0001),
    1.0,
    f32::MAX,
    f32::INFINITY,
];

/// `arith`'s Newton reciprocal and square root bit for bit against their documented steps
/// (`reference::recip_loop`, `sqrt_loop`: seed constant, clamp, the `+ - *` of each step), over
/// every binade, the powers of two and the clamp and flush edges. They are exposed through the
/// public ops: the reciprocal as `log`'s backward with an incoming gradient of 1 (`g *
/// recip(x)`, `ops`), the square root through an Adam step whose hyper-parameters reduce it to
/// `w = -recip(sqrt(v))` (`b1 = b2 = c1 = c2 = 1`, `eps = 0`, `g = 0`, `m = 1`, `w = 0`,
/// `lr = 1`). A dropped Newton step or a changed seed fails here on the CPU backends alone.
#[test]
fn newton_reciprocal_and_square_root_match_their_documented_steps_bit_for_bit() {
    let mut d = newton_sweep(20_000, "newton-recip", NEWTON_EDGES);
    // below the clamp: negatives and -inf
    d.extend([
        -1.0,
        -f32::from_bits(0x0100_0000),
        -f32::MAX,
        f32::NEG_INFINITY,
    ]);
    let v = newton_sweep(20_000, "newton-sqrt", NEWTON_EDGES);
    let want_recip: Vec<f32> = d.iter().map(|&x| fmul(1.0, recip_loop(x))).collect();
    let (nd, nv) = (d.len(), v.len());
    let (zeros, ones) = (vec![0f32; nv], vec![1f32; nv]);
    let hp = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    let decay = lockstep_kernels::optim::Decay::None;
    let (want_w, want_m, want_v) = adam_loop(&zeros, &zeros, &ones, &v, hp, decay);
    // the sweep's design: the weights are -recip(sqrt(v)), the moments pass through
    let direct: Vec<f32> = v.iter().map(|&a| -recip_loop(sqrt_loop(a))).collect();
    assert_bitwise(
        "the Adam sweep's weights are -recip(sqrt(v))",
        &direct,
        &want_w,
    );
    assert_bitwise("the Adam sweep keeps m", &ones, &want_m);
    for (name, dev) in devices() {
        let ad = dev.clone().autodiff();
        let xt = Tensor::<1>::from_data(TensorData::new(d.clone(), [nd]), &ad).require_grad();
        let g = Tensor::<1>::from_data(TensorData::new(vec![1f32; nd], [nd]), &ad);
        let grads = (det::log(xt.clone()) * g).sum().backward();
        assert_bitwise(
            &format!("recip (log backward, g = 1) on {name} vs the loop"),
            &want_recip,
            &host(xt.grad(&grads).expect("grad")),
        );
        let up = |x: &[f32]| Tensor::<1>::from_data(TensorData::new(x.to_vec(), [nv]), &dev);
        let (w, m, vo) = det::adam_step(up(&zeros), up(&zeros), up(&ones), up(&v), hp, decay);
        assert_bitwise(
            &format!("recip(sqrt(v)) (Adam weights) on {name} vs the loop"),
            &want_w,
            &host(w),
        );
        assert_bitwise(&format!("Adam m on {name} vs the loop"), &want_m, &host(m));
        assert_bitwise(&format!("Adam v on {name} vs the loop"), &want_v, &host(vo));
    }
}

/// `erfc(z)` for `z >= 0` in f64 (relative error about 1e-15): below 2 from the all-positive
/// series `erf(z) = 2/sqrt(pi) e^(-z^2) sum_n 2^n z^(2n+1) / (1*3*...*(2n+1))`, from 2 on from
/// Laplace's continued fraction `e^(-z^2)/sqrt(pi) / (z + (1/2)/(z + 1/(z + (3/2)/(z + ...))))`.
fn erfc_f64(z: f64) -> f64 {
    let sqrt_pi = std::f64::consts::PI.sqrt();
    if z < 2.0 {
        let (mut term, mut sum) = (z, z);
        for n in 1..200 {
            term *= 2.0 * z * z / (2 * n + 1) as f64;
            sum += term;
        }
        1.0 - 2.0 / sqrt_pi * (-z * z).exp() * sum
    } else {
        let mut k = z;
        for n in (1..400).rev() {
            k = z + (n as f64 / 2.0) / k;
        }
        (-z * z).exp() / (sqrt_pi * k)
    }
}

/// The standard normal CDF from `erfc_f64`, without cancellation in the left tail.
fn phi_f64(x: f64) -> f64 {
    let q = 0.5 * erfc_f64(x.abs() / std::f64::consts::SQRT_2);
    if x < 0.0 { q } else { 1.0 - q }
}

/// GELU's bound: `|gelu(x) - x Phi(x)| <= GELU_TOL * |x|`, i.e. `Phi` to within `GELU_TOL`
/// (Abramowitz-Stegun 7.1.26's erfc is within 1.5e-7, before the f32 roundings of its
/// polynomial; measured worst: 3.15e-7).
const GELU_TOL: f64 = 5e-7;
/// GELU's backward bound: `|dx - g (Phi(x) + x phi(x))| <= GELU_GRAD_TOL * |g|` (measured worst:
/// 3.06e-7).
const GELU_GRAD_TOL: f64 = 5e-7;

/// lockstep's GELU (erf form): the same bits on every backend and as the loop, forward and
/// backward, close to the f64 definition and to burn's stock `gelu`.
#[test]
fn gelu_forward_and_backward_should_match_reference_backend() {
    // The f64 reference itself, at tabulated values of erfc.
    for (z, want) in [
        (0.5, 0.479_500_122_186_953_5),
        (1.0, 0.157_299_207_050_285_13),
        (2.0, 0.004_677_734_981_047_266),
        (3.0, 2.209_049_699_858_544e-5),
        (5.0, 1.537_459_794_428_035e-12),
    ] {
        let got = erfc_f64(z);
        assert!(
            ((got - want) / want).abs() < 1e-13,
            "erfc_f64({z}) = {got:e}, table {want:e}"
        );
    }
    let mut x = seeded(20_000, "gelu", -12.0, 12.0);
    x.extend([0.0, -0.0, 10.0, -10.0, 30.0, -30.0, 1e-30, -1e-30]);
    let g = seeded(x.len(), "gelu-g", -1.0, 1.0);
    let n = x.len();
    let (want_fwd, want_bwd): (Vec<f64>, Vec<f64>) = x
        .iter()
        .zip(&g)
        .map(|(&v, &gi)| {
            let v = fl(v) as f64;
            let pdf = (-v * v / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            (v * phi_f64(v), fl(gi) as f64 * (phi_f64(v) + v * pdf))
        })
        .unzip();
    // The loops: forward `gelu(x)`, backward `g * gelu'(x)` (one flushed product, `ops`).
    let loop_fwd: Vec<f32> = x.iter().map(|&v| gelu_loop(v)).collect();
    let loop_bwd: Vec<f32> = x
        .iter()
        .zip(&g)
        .map(|(&v, &gi)| fmul(fl(gi), gelu_grad_loop(v)))
        .collect();
    let mut first: Option<(&str, Vec<f32>, Vec<f32>)> = None;
    for (name, d) in devices() {
        let ad = d.clone().autodiff();
        let xt = Tensor::<1>::from_data(TensorData::new(x.clone(), [n]), &ad).require_grad();
        let y = det::gelu(xt.clone());
        let grads = (y.clone() * Tensor::<1>::from_data(TensorData::new(g.clone(), [n]), &ad))
            .sum()
            .backward();
        let (fwd, bwd) = (host(y), host(xt.grad(&grads).expect("grad")));
        assert_bitwise(
            &format!("gelu forward on {name} vs the loop"),
            &loop_fwd,
            &fwd,
        );
        assert_bitwise(
            &format!("gelu backward on {name} vs the loop"),
            &loop_bwd,
            &bwd,
        );
        assert_within(
            &format!("gelu forward on {name} vs the f64 definition"),
            &want_fwd,
            &fwd,
            |i| GELU_TOL * x[i].abs() as f64,
        );
        assert_within(
            &format!("gelu backward on {name} vs the f64 definition"),
            &want_bwd,
            &bwd,
            |i| GELU_GRAD_TOL * g[i].abs() as f64,
        );
        match &first {
            None => {
                let stock = host(burn::tensor::activation::gelu(Tensor::<1>::from_data(
                    TensorData::new(x.clone(), [n]),
                    &d,
                )));
                for i in 0..n {
                    let xd = x[i] as f64;
                    assert!(
                        (fwd[i] - stock[i]).abs() as f64 <= 1e-6 * (1.0 + xd.abs()),
                        "gelu({xd}) = {} vs stock {}",
                        fwd[i],
                        stock[i]
                    );
                }
                first = Some((name, fwd, bwd));
            }
            Some((f, wf, wb)) => {
                assert_bitwise(&format!("gelu forward on {name} vs {f}"), wf, &fwd);
                assert_bitwise(&format!("gelu backward on {name} vs {f}"), wb, &bwd);
            }
        }
    }
}

/// `sum(g * f(x))`'s gradient with respect to `x` through burn's autodiff on ndarray.
fn autodiff_grad<const D: usize>(
    x: &[f32],
    shape: [usize; D],
    g: &[f32],
    f: &dyn Fn(Tensor<D>) -> Tensor<D>,
) -> Vec<f32> {
    #[allow(deprecated)]
    let ad = Device::ndarray().autodiff();
    let xt = Tensor::<D>::from_data(TensorData::new(x.to_vec(), shape), &ad).require_grad();
    let y = f(xt.clone());
    // `g` has the output's size (pooling shrinks it)
    let gt = Tensor::<D>::from_data(TensorData::new(g.to_vec(), y.dims()), &ad);
    let grads = (y * gt).sum().backward();
    host(xt.grad(&grads).expect("x takes part"))
}

/// The new ops' backward passes (GELU, softmax, log-softmax, max and avg pooling): within
/// tolerance of burn's stock op's gradient, and of central finite differences of the lockstep
/// forward (`h` = 1e-3, f64 sums of the f32 outputs).
#[test]
fn pool_softmax_and_gelu_backward_passes_match_finite_differences_and_stock_ops() {
    use burn::tensor::activation::{gelu, log_softmax, softmax};
    use burn::tensor::module::{avg_pool2d, max_pool2d};
    use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
    #[allow(deprecated)]
    let cpu = Device::ndarray();
    type F2 = Box<dyn Fn(Tensor<2>) -> Tensor<2>>;
    type F4 = Box<dyn Fn(Tensor<4>) -> Tensor<4>>;
    // burn's own GELU backward is the loosest (the tolerance table's `gelu_grad` row: 1e-3).
    let check = |name: &str, ours: &[f32], stock: &[f32], fd: &dyn Fn(usize) -> f64| {
        let tol = if name == "gelu" { 1e-3 } else { 1e-5 };
        for i in 0..ours.len() {
            let (o, s, d) = (ours[i], stock[i], fd(i));
            assert!(
                (o - s).abs() <= tol + 10.0 * tol * s.abs(),
                "{name}[{i}]: lockstep {o} vs stock {s}"
            );
            assert!(
                (o as f64 - d).abs() <= 2e-3 + 2e-3 * d.abs(),
                "{name}[{i}]: autodiff {o} vs finite difference {d}"
            );
        }
    };
    let h = 1e-3f32;
    // rank 2: [4, 16]
    let x2 = seeded(64, "fd2-x", -3.0, 3.0);
    let g2 = seeded(64, "fd2-g", -1.0, 1.0);
    let ops2: Vec<(&str, F2, F2)> = vec![
        ("gelu", Box::new(det::gelu::<2>), Box::new(gelu::<2>)),
        (
            "softmax",
            Box::new(det::softmax),
            Box::new(|x| softmax(x, 1)),
        ),
        (
            "log_softmax",
            Box::new(det::log_softmax),
            Box::new(|x| log_softmax(x, 1)),
        ),
    ];
    for (name, ours, stock) in &ops2 {
        let (go, gs) = (
            autodiff_grad(&x2, [4, 16], &g2, ours.as_ref()),
            autodiff_grad(&x2, [4, 16], &g2, stock.as_ref()),
        );
        let loss = |x: &[f32]| -> f64 {
            let y = host(ours(t2(x, [4, 16], &cpu)));
            y.iter().zip(&g2).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let fd = |i: usize| {
            let (mut up, mut dn) = (x2.clone(), x2.clone());
            up[i] += h;
            dn[i] -= h;
            (loss(&up) - loss(&dn)) / (up[i] as f64 - dn[i] as f64)
        };
        check(name, &go, &gs, &fd);
    }
    // rank 4: [1, 2, 4, 8], 2x2 windows; continuous seeded values (no ties)
    let shape = [1, 2, 4, 8];
    let x4 = seeded(64, "fd4-x", -3.0, 3.0);
    let g4 = seeded(16, "fd4-g", -1.0, 1.0);
    let ops4: Vec<(&str, F4, F4)> = vec![
        (
            "max_pool2d",
            Box::new(|x| det::max_pool2d(x, 2)),
            Box::new(|x| max_pool2d(x, MaxPoolOptions::new([2, 2]))),
        ),
        (
            "avg_pool2d",
            Box::new(|x| det::avg_pool2d(x, 2)),
            Box::new(|x| avg_pool2d(x, AvgPoolOptions::new([2, 2]))),
        ),
    ];
    for (name, ours, stock) in &ops4 {
        let (go, gs) = (
            autodiff_grad(&x4, shape, &g4, ours.as_ref()),
            autodiff_grad(&x4, shape, &g4, stock.as_ref()),
        );
        let loss = |x: &[f32]| -> f64 {
            let t = Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), &cpu);
            let y = host(ours(t));
            y.iter().zip(&g4).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let fd = |i: usize| {
            let (mut up, mut dn) = (x4.clone(), x4.clone());
            up[i] += h;
            dn[i] -= h;
            (loss(&up) - loss(&dn)) / (up[i] as f64 - dn[i] as f64)
        };
        check(name, &go, &gs, &fd);
    }
}

/// Reductions longer than 65535 steps per thread (a conv bias gradient over 128x28x28 rows, the
/// conv weight gradient with k = 100352): lavapipe silently stops a shader's loops after 65535
/// iterations in total, so these run as consecutive launches (`arith::gpu::LOOP_BLOCK`). Every
/// backend must still give the plain reference loop's bits.
#[test]
fn reductions_longer_than_the_driver_loop_cap_match_reference_backend() {
    let (m, n, k) = (100_352, 8, 9);
    let x = seeded(m * n, "long-x", -1.0, 1.0);
    let w = seeded(k * m, "long-w", -1.0, 1.0);
    let want_rows = sum_rows_loop(&x, m, n);
    let want_mm = matmul_loop(&w, &x, k, m, n);
    let want_all = sum_all_loop(&x);
    for (name, d) in devices() {
        let xt = t2(&x, [m, n], &d);
        assert_bitwise(
            &format!("sum_rows {m}x{n} on {name}"),
            &want_rows,
            &host(det::sum_rows(xt.clone())),
        );
        assert_bitwise(
            &format!("sum_all {} on {name}", m * n),
            &[want_all],
            &host(det::sum_all(xt.clone())),
        );
        let got = host(det::matmul(t2(&w, [k, m], &d), xt));
        assert_bitwise(&format!("matmul {k}x{m}x{n} on {name}"), &want_mm, &got);
    }
}

/// The patch matrix built from stock slicing (the construction lockstep used before its own
/// kernel): an independent reference for `im2col`.
fn im2col_by_slicing(x: Tensor<4>, k: usize, pad: usize) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let xp = if pad > 0 {
        let zr = Tensor::<4>::zeros([n, c, h, pad], &device);
        let x = Tensor::cat(vec![zr.clone(), x, zr], 3);
        let zc = Tensor::<4>::zeros([n, c, pad, w + 2 * pad], &device);
        Tensor::cat(vec![zc.clone(), x, zc], 2)
    } else {
        x
    };
    let taps: Vec<Tensor<4>> = (0..k * k)
        .map(|t| {
            let (dy, dx) = (t / k, t % k);
            xp.clone()
                .slice([0..n, 0..c, dy..dy + h, dx..dx + w])
                .reshape([n, c, 1, h * w])
        })
        .collect();
    Tensor::cat(taps, 2)
        .permute([0, 3, 1, 2])
        .reshape([n * h * w, c * k * k])
}

/// Padding other than `k / 2` (none, wider than the kernel), kernels wider than the image, and
/// subnormal and cancelling values (flushed on read and after every sum): `im2col` and
/// `col2im` against the module doc's loops, bitwise, on every backend.
#[test]
fn im2col_with_odd_padding_and_tiny_values_matches_the_loops_bitwise() {
    for (i, &(dims, k, pad)) in [
        ([2usize, 3, 5, 7], 3usize, 0usize),
        ([3, 2, 6, 5], 5, 2),
        ([2, 2, 3, 3], 5, 3),
        ([1, 2, 3, 4], 1, 2),
        ([2, 1, 2, 3], 2, 4),
        ([2, 1, 1, 1], 3, 1),
    ]
    .iter()
    .enumerate()
    {
        let [n, c, h, w] = dims;
        // Every seventh value subnormal, and pairs that cancel into the subnormal range.
        let tiny = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .enumerate()
                .map(|(j, x)| match j % 7 {
                    0 => x * 1e-39,
                    1 => -f32::MIN_POSITIVE * 1.5,
                    2 => f32::MIN_POSITIVE * 1.25,
                    _ => x,
                })
                .collect()
        };
        let x = tiny(seeded(n * c * h * w, &format!("im2col-odd-{i}"), -2.0, 2.0));
        let g = tiny(seeded(
            n * h * w * c * k * k,
            &format!("im2col-odd-g-{i}"),
            -1.0,
            1.0,
        ));
        let (want_fwd, want_bwd) = (im2col_loop(&x, dims, k, pad), col2im_loop(&g, dims, k, pad));
        for (name, d) in devices() {
            let ad = d.clone().autodiff();
            let xt = Tensor::<4>::from_data(TensorData::new(x.clone(), dims), &ad).require_grad();
            let cols = det::im2col(xt.clone(), k, pad);
            let gt = Tensor::<2>::from_data(TensorData::new(g.clone(), cols.dims()), &ad);
            let grads = (cols.clone() * gt).sum().backward();
            let what = format!("im2col {dims:?} k={k} pad={pad} on {name}");
            assert_bitwise(&format!("{what} forward"), &want_fwd, &host(cols));
            let dx = host(xt.grad(&grads).expect("grad"));
            assert_bitwise(&format!("{what} backward"), &want_bwd, &dx);
        }
    }
}

#[test]
fn im2col_forward_and_backward_should_match_reference_backend() {
    for (ci, &(dims, k)) in [
        ([2usize, 3, 5, 7], 3usize),
        ([1, 1, 1, 1], 3),
        ([3, 2, 4, 4], 1),
        ([2, 2, 6, 5], 5),
        ([4, 8, 14, 14], 3),
    ]
    .iter()
    .enumerate()
    {
        let pad = k / 2;
        let [n, c, h, w] = dims;
        let x = seeded(n * c * h * w, &format!("im2col-{ci}"), -2.0, 2.0);
        let g = seeded(n * h * w * c * k * k, &format!("im2col-g-{ci}"), -1.0, 1.0);
        let (want_fwd, want_bwd) = (im2col_loop(&x, dims, k, pad), col2im_loop(&g, dims, k, pad));
        let mut first: Option<(&str, Vec<f32>, Vec<f32>)> = None;
        for (name, d) in devices() {
            let ad = d.clone().autodiff();
            let xt = Tensor::<4>::from_data(TensorData::new(x.clone(), dims), &ad).require_grad();
            let cols = det::im2col(xt.clone(), k, pad);
            let gt = Tensor::<2>::from_data(TensorData::new(g.clone(), cols.dims()), &ad);
            let grads = (cols.clone() * gt.clone()).sum().backward();
            let (fwd, bwd) = (host(cols), host(xt.grad(&grads).expect("grad")));
            let what = format!("im2col {dims:?} k={k} on {name}");
            assert_bitwise(&format!("{what} forward vs the loop"), &want_fwd, &fwd);
            assert_bitwise(&format!("{what} backward vs the loop"), &want_bwd, &bwd);
            match &first {
                None => {
                    // vs the stock slicing construction: forward bitwise (pure data movement),
                    // backward within rounding (burn adds the up to k*k taps in its own order)
                    let xs = Tensor::<4>::from_data(TensorData::new(x.clone(), dims), &ad)
                        .require_grad();
                    let cs = im2col_by_slicing(xs.clone(), k, pad);
                    let gs = (cs.clone() * gt).sum().backward();
                    assert_bitwise(&format!("{what} forward vs slicing"), &host(cs), &fwd);
                    let sd = host(xs.grad(&gs).expect("grad"));
                    for (i, (a, b)) in bwd.iter().zip(&sd).enumerate() {
                        assert!((a - b).abs() <= 1e-5, "{what}: dx[{i}] {a} vs slicing {b}");
                    }
                    first = Some((name, fwd, bwd));
                }
                Some((f, wf, wb)) => {
                    assert_bitwise(&format!("{what} forward vs {f}"), wf, &fwd);
                    assert_bitwise(&format!("{what} backward vs {f}"), wb, &bwd);
                }
            }
        }
    }
}
