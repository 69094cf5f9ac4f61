//! lockstep's kernels give the same bits on every backend: ndarray and flex (CPU loops) vs wgpu
//! (CubeCL kernels on lavapipe), forward and backward, on seeded inputs over many shapes
//! including odd and degenerate ones. Also checks each CPU path against the plain reference.

use burn::tensor::{Device, Tensor, TensorData};
use lockstep_core::SeedStream;
use lockstep_kernels::ops as det;

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

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 1),
    (3, 5, 2),
    (17, 64, 33),
    (32, 64, 128),
    (5, 513, 9),
    (128, 10, 10),
    (2, 1000, 3),
];

#[test]
fn matmul_forward_and_backward_should_match_reference_backend() {
    for &(m, k, n) in SHAPES {
        let a = seeded(m * k, &format!("a{m}{k}{n}"), -2.0, 2.0);
        let b = seeded(k * n, &format!("b{m}{k}{n}"), -2.0, 2.0);
        let g = seeded(m * n, &format!("g{m}{k}{n}"), -1.0, 1.0);
        let want = lockstep_kernels::matmul::cpu::matmul_reference(&a, &b, m, k, n);
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
            // dA = G · Bᵀ and dB = Aᵀ · G with the same fixed order, computed by the reference loop.
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let da = lockstep_kernels::matmul::cpu::matmul_reference(&g, &bt, m, n, k);
            let db = lockstep_kernels::matmul::cpu::matmul_reference(&at, &g, k, m, n);
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
        let rows = lockstep_kernels::reduce::cpu::sum_rows(&x, m, n);
        let all = lockstep_kernels::reduce::cpu::sum_all(&x);
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

#[test]
fn transcendentals_should_match_reference_backend() {
    let mut x = seeded(200_000, "exp", -90.0, 90.0);
    x.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        87.5,
        -87.5,
        88.7,
        f32::MIN_POSITIVE,
    ]);
    let logx: Vec<f32> = seeded(4096, "log", 0.0, 30.0)
        .iter()
        .map(|v| lockstep_kernels::arith::exp_fixed(*v - 15.0))
        .collect();
    let want_exp: Vec<f32> = x
        .iter()
        .map(|&v| lockstep_kernels::arith::exp_fixed(v))
        .collect();
    let want_log: Vec<f32> = logx
        .iter()
        .map(|&v| lockstep_kernels::arith::log_fixed(v))
        .collect();
    for (name, d) in devices() {
        let n = x.len();
        assert_bitwise(
            &format!("exp on {name}"),
            &want_exp,
            &host(det::exp(Tensor::<1>::from_data(
                TensorData::new(x.clone(), [n]),
                &d,
            ))),
        );
        assert_bitwise(
            &format!("log on {name}"),
            &want_log,
            &host(det::log(Tensor::<1>::from_data(
                TensorData::new(logx.clone(), [4096]),
                &d,
            ))),
        );
    }
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
        let want = lockstep_kernels::xent::cpu::forward(&x, &t, m, c);
        let want_d = lockstep_kernels::xent::cpu::backward(&x, &t, &g, m, c);
        for (name, d) in devices() {
            let ad = d.clone().autodiff();
            let tx = t2(&x, [m, c], &ad).require_grad();
            let nll = det::cross_entropy_nll(tx.clone(), t2(&t, [m, c], &ad));
            assert_bitwise(
                &format!("xent {m}x{c} on {name}"),
                &want,
                &host(nll.clone()),
            );
            let grads = (nll * t2(&g, [m, 1], &ad)).sum().backward();
            assert_bitwise(
                &format!("xent grad {m}x{c} on {name}"),
                &want_d,
                &host(tx.grad(&grads).expect("grad")),
            );
        }
    }
}

#[test]
fn dropout_masks_made_on_device_match_the_host_stream() {
    for &(m, n) in &[(1, 1), (1, 15), (1, 16), (1, 17), (64, 128), (333, 301)] {
        let want = lockstep_kernels::dropout::cpu::mask(
            42,
            "dropout/l0/step-9",
            m * n,
            0.3,
            (1.0f64 / 0.7) as f32,
        );
        for (name, d) in devices() {
            let like = Tensor::<2>::zeros([m, n], &d);
            let got = det::dropout_mask(&like, 42, "dropout/l0/step-9", 0.3);
            assert_bitwise(&format!("dropout {m}x{n} on {name}"), &want, &host(got));
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

#[test]
fn sigmoid_and_tanh_forward_and_backward_should_match_reference_backend() {
    let mut x = seeded(20_000, "act", -50.0, 50.0);
    x.extend(seeded(5_000, "act-small", -1e-3, 1e-3));
    x.extend([0.0, -0.0, 40.0, -40.0, 88.0, -88.0]);
    let g = seeded(x.len(), "act-g", -1.0, 1.0);
    let n = x.len();
    let mut want: Vec<(String, Vec<f32>)> = vec![];
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
            if name == "ndarray" {
                let cpu: Vec<f32> = x
                    .iter()
                    .map(|&v| {
                        if op == "sigmoid" {
                            lockstep_kernels::arith::sigmoid_fixed(v)
                        } else {
                            lockstep_kernels::arith::tanh_fixed(v)
                        }
                    })
                    .collect();
                assert_bitwise(&format!("{op} vs the CPU reference"), &cpu, &fwd);
                for (i, (&a, &v)) in fwd.iter().zip(&x).enumerate() {
                    let exact = if op == "sigmoid" {
                        1.0 / (1.0 + (-(v as f64)).exp())
                    } else {
                        (v as f64).tanh()
                    };
                    assert!(
                        (a as f64 - exact).abs() <= 3e-7,
                        "{op}({v}) = {a}, exact {exact} (index {i})"
                    );
                }
                want.push((format!("{op} fwd"), fwd));
                want.push((format!("{op} bwd"), bwd));
            } else {
                let w = want
                    .iter()
                    .find(|(k, _)| k == &format!("{op} fwd"))
                    .expect("reference first");
                assert_bitwise(&format!("{op} forward on {name}"), &w.1, &fwd);
                let w = want
                    .iter()
                    .find(|(k, _)| k == &format!("{op} bwd"))
                    .expect("reference first");
                assert_bitwise(&format!("{op} backward on {name}"), &w.1, &bwd);
            }
        }
    }
}

/// Plain reference pooling: each window listed in row-major order, max = the first of its
/// largest values, avg = the in-order sum times `1/k^2`; backward routes `dy` to that first
/// maximum (or spreads `dy/k^2`).
fn pool_reference(
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
                let g = dy[p * ho * wo + oy * wo + ox];
                if max {
                    let best = idx
                        .iter()
                        .copied()
                        .reduce(|b, i| if x[i] > x[b] { i } else { b })
                        .expect("k > 0");
                    y.push(x[best]);
                    dx[best] = g;
                } else {
                    y.push(idx.iter().fold(0f32, |s, &i| s + x[i]) * inv);
                    for &i in &idx {
                        dx[i] = g * inv;
                    }
                }
            }
        }
    }
    (y, dx)
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

#[test]
fn softmax_and_log_softmax_forward_and_backward_should_match_reference_backend() {
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
        for log in [false, true] {
            let op = if log { "log_softmax" } else { "softmax" };
            let mut reference: Option<(Vec<f32>, Vec<f32>)> = None;
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
                match &reference {
                    None => {
                        // f64 definition: within a few ULP-scaled units of the exact value.
                        for i in 0..m {
                            let row: Vec<f64> =
                                x[i * c..(i + 1) * c].iter().map(|&v| v as f64).collect();
                            let mx = row.iter().cloned().fold(f64::MIN, f64::max);
                            let z: f64 = row.iter().map(|v| (v - mx).exp()).sum();
                            let gr: Vec<f64> =
                                dy[i * c..(i + 1) * c].iter().map(|&v| v as f64).collect();
                            let p: Vec<f64> = row.iter().map(|v| (v - mx).exp() / z).collect();
                            let dot: f64 = p.iter().zip(&gr).map(|(a, b)| a * b).sum();
                            let gs: f64 = gr.iter().sum();
                            for j in 0..c {
                                let k = i * c + j;
                                let (want_y, want_d) = if log {
                                    ((row[j] - mx) - z.ln(), gr[j] - p[j] * gs)
                                } else {
                                    (p[j], p[j] * (gr[j] - dot))
                                };
                                let tol = |v: f64| 1e-5 * (1.0 + v.abs());
                                assert!(
                                    (fwd[k] as f64 - want_y).abs() <= tol(want_y),
                                    "{what}: y[{k}] {} vs {want_y}",
                                    fwd[k]
                                );
                                assert!(
                                    (bwd[k] as f64 - want_d).abs()
                                        <= tol(want_d) * (1.0 + gs.abs()),
                                    "{what}: dx[{k}] {} vs {want_d}",
                                    bwd[k]
                                );
                            }
                        }
                        reference = Some((fwd, bwd));
                    }
                    Some((rf, rb)) => {
                        assert_bitwise(&format!("{what} forward"), rf, &fwd);
                        assert_bitwise(&format!("{what} backward"), rb, &bwd);
                    }
                }
            }
        }
    }
}

/// The fused optimizer kernels against the stock tensor-op updates (an independent implementation
/// of the same formulas, with hardware `sqrt` and `/`) over several steps, for SGD, Adam and AdamW
/// with and without weight decay: SGD bit for bit; Adam's weights within the declared
/// `adam_update_vs_stock` bound and its moments bit for bit (unless an L2 term feeds the weights
/// back into them) (lockstep's Newton square root and
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
                        w = lockstep_train::optim::update(
                            &cfg,
                            ks,
                            lr,
                            s as u64 + 1,
                            w,
                            up(g),
                            &mut slots,
                        );
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

/// lockstep's GELU (erf form): the same bits on every backend, forward and backward, close to the
/// f64 definition and to burn's stock `gelu`.
#[test]
fn gelu_forward_and_backward_should_match_reference_backend() {
    let mut x = seeded(20_000, "gelu", -12.0, 12.0);
    x.extend([0.0, -0.0, 10.0, -10.0, 30.0, -30.0, 1e-30, -1e-30]);
    let g = seeded(x.len(), "gelu-g", -1.0, 1.0);
    let n = x.len();
    let mut want: Option<(Vec<f32>, Vec<f32>)> = None;
    for (name, d) in devices() {
        let ad = d.clone().autodiff();
        let xt = Tensor::<1>::from_data(TensorData::new(x.clone(), [n]), &ad).require_grad();
        let y = det::gelu(xt.clone());
        let grads = (y.clone() * Tensor::<1>::from_data(TensorData::new(g.clone(), [n]), &ad))
            .sum()
            .backward();
        let (fwd, bwd) = (host(y), host(xt.grad(&grads).expect("grad")));
        match &want {
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
                    let cpu = lockstep_kernels::arith::gelu_grad_fixed(x[i]) * g[i];
                    assert_eq!(bwd[i].to_bits(), cpu.to_bits(), "gelu' at {xd}");
                }
                want = Some((fwd, bwd));
            }
            Some((wf, wb)) => {
                assert_bitwise(&format!("gelu forward on {name}"), wf, &fwd);
                assert_bitwise(&format!("gelu backward on {name}"), wb, &bwd);
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
    let mut want_rows = vec![0f32; n];
    for i in 0..m {
        for j in 0..n {
            want_rows[j] += x[i * n + j];
        }
    }
    let want_mm = lockstep_kernels::matmul::cpu::matmul_reference(&w, &x, k, m, n);
    let want_all = lockstep_kernels::reduce::cpu::sum_all(&x);
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
        let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
        for (name, d) in devices() {
            let ad = d.clone().autodiff();
            let xt = Tensor::<4>::from_data(TensorData::new(x.clone(), dims), &ad).require_grad();
            let cols = det::im2col(xt.clone(), k, pad);
            let gt = Tensor::<2>::from_data(TensorData::new(g.clone(), cols.dims()), &ad);
            let grads = (cols.clone() * gt.clone()).sum().backward();
            let (fwd, bwd) = (host(cols), host(xt.grad(&grads).expect("grad")));
            let what = format!("im2col {dims:?} k={k} on {name}");
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
                    first = Some((fwd, bwd));
                }
                Some((wf, wb)) => {
                    assert_bitwise(&format!("{what} forward"), wf, &fwd);
                    assert_bitwise(&format!("{what} backward"), wb, &bwd);
                }
            }
        }
    }
}
