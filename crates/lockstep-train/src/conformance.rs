//! The cross-backend conformance suite: every op the models use, forward and backward, stock
//! burn and lockstep kernels, on seeded inputs of several shapes (odd sizes, 1, large K, values
//! near 0 and large), run on each backend and compared element-wise against the reference
//! backend under the declared tolerance (`lockstep_core::tolerance`). Each case also runs twice
//! per backend: results that change run to run fail regardless of the tolerance.

use crate::model::{conv2d_im2col, cross_entropy, one_hot};
use burn::tensor::activation::{gelu, log_softmax, relu, sigmoid, softmax};
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData};
use lockstep_core::SeedStream;
use lockstep_core::config::KernelSet;
use lockstep_core::tolerance::{Comparison, Tolerance, compare, known_defect, tolerance_for};
use lockstep_kernels::ops as det;
use serde::Serialize;

type Run = Box<dyn Fn(&Device) -> Vec<f32>>;

/// One op on one input shape.
pub struct Case {
    pub op: &'static str,
    pub kernels: &'static str,
    pub shape: String,
    pub run: Run,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub op: String,
    pub kernels: String,
    pub shape: String,
    pub backend: String,
    pub reference: String,
    pub bound: String,
    pub max_abs: f64,
    pub max_ulp: u64,
    pub mismatches: usize,
    pub repeatable: bool,
    pub passed: bool,
    /// A listed stock-op defect (`tolerance::KNOWN_DEFECTS`): reported, not counted as a failure.
    pub known_defect: Option<String>,
    pub first: Vec<(usize, f32, f32)>,
}

fn seeded(n: usize, name: &str, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = SeedStream::new(2024, format!("conformance/{name}"));
    (0..n).map(|_| s.uniform_range(lo, hi)).collect()
}

fn t<const D: usize>(v: &[f32], shape: [usize; D], d: &Device) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(v.to_vec(), shape), d)
}

fn host<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.try_into_vec_as::<f32>().expect("f32 read-back")
}

fn case(
    op: &'static str,
    kernels: &'static str,
    shape: String,
    run: impl Fn(&Device) -> Vec<f32> + 'static,
) -> Case {
    Case {
        op,
        kernels,
        shape,
        run: Box::new(run),
    }
}

/// Gradient of `sum(f(x) * g)` with respect to `x` (so backward passes are checked too).
fn grad_of<const D: usize>(
    x: &[f32],
    shape: [usize; D],
    g: &[f32],
    d: &Device,
    f: impl Fn(Tensor<D>) -> Tensor<D>,
) -> Vec<f32> {
    let ad = d.clone().autodiff();
    let xt = t(x, shape, &ad).require_grad();
    let y = f(xt.clone());
    let gs = (y * t(g, shape, &ad)).sum().backward();
    host(xt.grad(&gs).expect("x takes part"))
}

/// Every case of the suite.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (m, k, n) in [
        (1, 1, 1),
        (7, 13, 5),
        (32, 64, 128),
        (3, 1000, 2),
        (128, 784, 16),
    ] {
        let a = seeded(m * k, &format!("a{m}x{k}"), -2.0, 2.0);
        let b = seeded(k * n, &format!("b{k}x{n}"), -2.0, 2.0);
        let g = seeded(m * n, &format!("g{m}x{n}"), -1.0, 1.0);
        let shape = format!("{m}x{k}x{n}");
        for (kernels, lock) in [("burn", false), ("lockstep", true)] {
            let mm = move |x: Tensor<2>, y: Tensor<2>| {
                if lock { det::matmul(x, y) } else { x.matmul(y) }
            };
            let (a1, b1) = (a.clone(), b.clone());
            out.push(case("matmul", kernels, shape.clone(), move |d| {
                host(mm(t(&a1, [m, k], d), t(&b1, [k, n], d)))
            }));
            // The transposed forms backward uses: dA = G·Bᵀ, dB = Aᵀ·G.
            let (g1, b1) = (g.clone(), b.clone());
            out.push(case("matmul_a_bt", kernels, shape.clone(), move |d| {
                host(mm(t(&g1, [m, n], d), t(&b1, [k, n], d).transpose()))
            }));
            let (a1, g1) = (a.clone(), g.clone());
            out.push(case("matmul_at_b", kernels, shape.clone(), move |d| {
                host(mm(t(&a1, [m, k], d).transpose(), t(&g1, [m, n], d)))
            }));
        }
    }
    // Values near 0 (1e-20 scale) for matmul: products stay normal, sums tiny.
    let tiny = seeded(16 * 16, "tiny", -1e-10, 1e-10);
    for (kernels, lock) in [("burn", false), ("lockstep", true)] {
        let v = tiny.clone();
        out.push(case(
            "matmul",
            kernels,
            "16x16x16 near 0".into(),
            move |d| {
                let x = t(&v, [16, 16], d);
                host(if lock {
                    det::matmul(x.clone(), x)
                } else {
                    x.clone().matmul(x)
                })
            },
        ));
    }
    for (nb, c, h, k) in [(2, 1, 8, 3), (4, 8, 14, 3), (1, 3, 5, 5)] {
        let x = seeded(nb * c * h * h, &format!("cx{nb}{c}{h}"), -2.0, 2.0);
        let w = seeded(8 * c * k * k, &format!("cw{c}{k}"), -0.5, 0.5);
        let b = seeded(8, "cb", -0.5, 0.5);
        let shape = format!("{nb}x{c}x{h}x{h} k{k}");
        for (kernels, lock) in [("burn", false), ("lockstep", true)] {
            let (x1, w1, b1) = (x.clone(), w.clone(), b.clone());
            out.push(case("conv2d", kernels, shape.clone(), move |d| {
                let (xt, wt, bt) = (
                    t(&x1, [nb, c, h, h], d),
                    t(&w1, [8, c, k, k], d),
                    t(&b1, [8], d),
                );
                host(if lock {
                    conv2d_im2col(xt, wt, bt, k / 2)
                } else {
                    conv2d(
                        xt,
                        wt,
                        Some(bt),
                        ConvOptions::new([1, 1], [k / 2, k / 2], [1, 1], 1),
                    )
                })
            }));
        }
        let x1 = x.clone();
        out.push(case("max_pool2d", "burn", shape.clone(), move |d| {
            host(max_pool2d(
                t(&x1, [nb, c, h, h], d),
                MaxPoolOptions::new([2, 2]),
            ))
        }));
        let x1 = x.clone();
        out.push(case("avg_pool2d", "burn", shape.clone(), move |d| {
            host(avg_pool2d(
                t(&x1, [nb, c, h, h], d),
                AvgPoolOptions::new([2, 2]),
            ))
        }));
        let x1 = x.clone();
        out.push(case("max_pool2d", "lockstep", shape.clone(), move |d| {
            host(det::max_pool2d(t(&x1, [nb, c, h, h], d), 2))
        }));
        let x1 = x.clone();
        out.push(case("avg_pool2d", "lockstep", shape.clone(), move |d| {
            host(det::avg_pool2d(t(&x1, [nb, c, h, h], d), 2))
        }));
    }
    for (m, n) in [(1, 1), (3, 7), (128, 256), (1, 1_000_000), (1000, 3)] {
        let x = seeded(m * n, &format!("r{m}x{n}"), -2.0, 2.0);
        let shape = format!("{m}x{n}");
        let bias = seeded(n, &format!("bias{n}"), -1.0, 1.0);
        let (x1, b1) = (x.clone(), bias.clone());
        out.push(case("add_bias", "burn", shape.clone(), move |d| {
            host(t(&x1, [m, n], d) + t(&b1, [1, n], d))
        }));
        let x1 = x.clone();
        out.push(case("bias_grad", "burn", shape.clone(), move |d| {
            host(t(&x1, [m, n], d).sum_dim(0))
        }));
        let x1 = x.clone();
        out.push(case("sum_dim", "burn", shape.clone(), move |d| {
            host(t(&x1, [m, n], d).sum_dim(1))
        }));
        let x1 = x.clone();
        out.push(case("sum", "burn", shape.clone(), move |d| {
            host(t(&x1, [m, n], d).sum())
        }));
        let x1 = x.clone();
        out.push(case("mean", "burn", shape.clone(), move |d| {
            host(t(&x1, [m, n], d).mean())
        }));
        let x1 = x.clone();
        out.push(case("sum_rows", "lockstep", shape.clone(), move |d| {
            host(det::sum_rows(t(&x1, [m, n], d)))
        }));
        let x1 = x.clone();
        out.push(case("sum_all", "lockstep", shape.clone(), move |d| {
            host(det::sum_all(t(&x1, [m, n], d)))
        }));
    }
    for (n, lo, hi, label) in [
        (4097, -10.0f32, 10.0f32, "[-10,10]"),
        (1000, -1e-6, 1e-6, "near 0"),
        (1000, -80.0, 80.0, "[-80,80]"),
    ] {
        let x = seeded(n, &format!("act{label}"), lo, hi);
        let g = seeded(n, &format!("actg{label}"), -1.0, 1.0);
        let shape = format!("{n} in {label}");
        type Act = fn(Tensor<1>) -> Tensor<1>;
        let acts: [(&'static str, Act); 4] = [
            ("relu", relu),
            ("tanh", |x| x.tanh()),
            ("sigmoid", sigmoid),
            ("gelu", gelu),
        ];
        for (name, f) in acts {
            if label == "[-80,80]" && name != "relu" {
                continue;
            }
            let x1 = x.clone();
            out.push(case(name, "burn", shape.clone(), move |d| {
                host(f(t(&x1, [n], d)))
            }));
            let (x1, g1) = (x.clone(), g.clone());
            let op: &'static str = match name {
                "relu" => "relu_grad",
                "tanh" => "tanh_grad",
                "sigmoid" => "sigmoid_grad",
                _ => "gelu_grad",
            };
            out.push(case(op, "burn", shape.clone(), move |d| {
                grad_of(&x1, [n], &g1, d, f)
            }));
        }
        let x1 = x.clone();
        out.push(case("exp", "burn", shape.clone(), move |d| {
            host(t(&x1, [n], d).exp())
        }));
        let x1 = x.clone();
        out.push(case("exp", "lockstep", shape.clone(), move |d| {
            host(det::exp(t(&x1, [n], d)))
        }));
        if label != "[-80,80]" {
            let x1 = x.clone();
            out.push(case("gelu", "lockstep", shape.clone(), move |d| {
                host(det::gelu(t(&x1, [n], d)))
            }));
            let (x1, g1) = (x.clone(), g.clone());
            out.push(case("gelu_grad", "lockstep", shape.clone(), move |d| {
                grad_of(&x1, [n], &g1, d, det::gelu::<1>)
            }));
        }
    }
    let pos = seeded(4096, "login", 0.01, 100.0);
    let p1 = pos.clone();
    out.push(case("log", "burn", "4096 in [0.01,100]".into(), move |d| {
        host(t(&p1, [4096], d).log())
    }));
    out.push(case(
        "log",
        "lockstep",
        "4096 in [0.01,100]".into(),
        move |d| host(det::log(t(&pos, [4096], d))),
    ));
    for (m, c) in [(1, 2), (128, 10), (7, 257)] {
        let x = seeded(m * c, &format!("logits{m}x{c}"), -20.0, 20.0);
        let labels: Vec<u32> = (0..m as u32).map(|i| (i * 7 + 1) % c as u32).collect();
        let tg = one_hot(&labels, c);
        let shape = format!("{m}x{c}");
        let x1 = x.clone();
        out.push(case("softmax", "burn", shape.clone(), move |d| {
            host(softmax(t(&x1, [m, c], d), 1))
        }));
        let x1 = x.clone();
        out.push(case("log_softmax", "burn", shape.clone(), move |d| {
            host(log_softmax(t(&x1, [m, c], d), 1))
        }));
        let x1 = x.clone();
        out.push(case("softmax", "lockstep", shape.clone(), move |d| {
            host(det::softmax(t(&x1, [m, c], d)))
        }));
        let x1 = x.clone();
        out.push(case("log_softmax", "lockstep", shape.clone(), move |d| {
            host(det::log_softmax(t(&x1, [m, c], d)))
        }));
        for (kernels, ks) in [("burn", KernelSet::Burn), ("lockstep", KernelSet::Lockstep)] {
            let (x1, t1) = (x.clone(), tg.clone());
            out.push(case("cross_entropy", kernels, shape.clone(), move |d| {
                host(cross_entropy(ks, t(&x1, [m, c], d), t(&t1, [m, c], d)))
            }));
            let (x1, t1) = (x.clone(), tg.clone());
            let op = if ks == KernelSet::Burn {
                "cross_entropy_grad_burn"
            } else {
                "cross_entropy_grad"
            };
            out.push(case(op, kernels, shape.clone(), move |d| {
                let ad = d.clone().autodiff();
                let xt = t(&x1, [m, c], &ad).require_grad();
                let gs = cross_entropy(ks, xt.clone(), t(&t1, [m, c], &ad))
                    .sum()
                    .backward();
                host(xt.grad(&gs).expect("grad"))
            }));
        }
    }
    for (m, n) in [(1, 1), (64, 128), (333, 301)] {
        out.push(case(
            "dropout_mask",
            "lockstep",
            format!("{m}x{n} p=0.3"),
            move |d| {
                host(det::dropout_mask(
                    &Tensor::<2>::zeros([m, n], d),
                    7,
                    "dropout/l0/step-0",
                    0.3,
                ))
            },
        ));
    }
    let (w, g, mo, v) = (
        seeded(10_000, "w", -1.0, 1.0),
        seeded(10_000, "gw", -1e-2, 1e-2),
        seeded(10_000, "m", -1e-2, 1e-2),
        seeded(10_000, "v", 0.0, 1e-4),
    );
    let cfg = lockstep_core::config::OptimizerConfig {
        kind: lockstep_core::config::OptimizerKind::Adamw,
        lr: 1e-3,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.01,
        momentum: 0.0,
    };
    for (kernels, ks) in [("burn", KernelSet::Burn), ("lockstep", KernelSet::Lockstep)] {
        let (w1, g1, m1, v1, c1) = (w.clone(), g.clone(), mo.clone(), v.clone(), cfg.clone());
        out.push(case(
            "adam_update",
            kernels,
            "10000 (AdamW, step 7)".into(),
            move |d| {
                let mut slots = vec![t(&m1, [10_000], d), t(&v1, [10_000], d)];
                host(crate::optim::update(
                    &c1,
                    ks,
                    1e-3,
                    7,
                    t(&w1, [10_000], d),
                    t(&g1, [10_000], d),
                    &mut slots,
                ))
            },
        ));
    }
    let sgd = lockstep_core::config::OptimizerConfig {
        kind: lockstep_core::config::OptimizerKind::Sgd,
        momentum: 0.9,
        weight_decay: 0.0,
        ..cfg
    };
    for (kernels, ks) in [("burn", KernelSet::Burn), ("lockstep", KernelSet::Lockstep)] {
        let (w1, g1, m1, c1) = (w.clone(), g.clone(), mo.clone(), sgd.clone());
        out.push(case(
            "sgd_update",
            kernels,
            "10000 (momentum 0.9)".into(),
            move |d| {
                let mut slots = vec![t(&m1, [10_000], d)];
                host(crate::optim::update(
                    &c1,
                    ks,
                    1e-2,
                    3,
                    t(&w1, [10_000], d),
                    t(&g1, [10_000], d),
                    &mut slots,
                ))
            },
        ));
    }
    out
}

/// A deliberately broken lockstep matmul: on every backend but the reference it sums k in
/// reverse order. The suite must fail it (proof that the suite can fail).
pub fn broken_case(reference: &Device) -> Case {
    let (m, k, n) = (16, 300, 8);
    let a = seeded(m * k, "broken-a", -2.0, 2.0);
    let b = seeded(k * n, "broken-b", -2.0, 2.0);
    let reference = reference.clone();
    case(
        "matmul",
        "lockstep",
        format!("{m}x{k}x{n} (test-only: reversed k order)"),
        move |d| {
            if *d == reference && d.is_autodiff() == reference.is_autodiff() {
                return host(det::matmul(t(&a, [m, k], d), t(&b, [k, n], d)));
            }
            let ar: Vec<f32> = (0..m * k)
                .map(|i| a[(i / k) * k + (k - 1 - i % k)])
                .collect();
            let br: Vec<f32> = (0..k * n).map(|i| b[(k - 1 - i / n) * n + i % n]).collect();
            host(det::matmul(t(&ar, [m, k], d), t(&br, [k, n], d)))
        },
    )
}

/// Run `cases` on every backend (the first is the reference) and compare.
pub fn run(cases: &[Case], backends: &[(String, Device)]) -> Vec<Row> {
    let mut rows = Vec::new();
    let Some((ref_name, ref_dev)) = backends.first() else {
        return rows;
    };
    for c in cases {
        let tol = tolerance_for(c.op, c.kernels).unwrap_or(Tolerance::Bitwise);
        let want = (c.run)(ref_dev);
        let ref_repeat = (c.run)(ref_dev) == want;
        for (name, dev) in backends {
            let got = (c.run)(dev);
            let repeatable = (c.run)(dev)
                .iter()
                .zip(&got)
                .all(|(x, y)| x.to_bits() == y.to_bits())
                && ref_repeat;
            let cmp: Comparison = compare(&want, &got, tol);
            let known = known_defect(c.op, c.kernels, name, &c.shape).map(|d| d.what.to_string());
            rows.push(Row {
                op: c.op.into(),
                kernels: c.kernels.into(),
                shape: c.shape.clone(),
                backend: name.clone(),
                reference: ref_name.clone(),
                bound: tol.to_string(),
                max_abs: cmp.max_abs,
                max_ulp: cmp.max_ulp,
                mismatches: cmp.mismatches,
                repeatable,
                passed: cmp.passed() && repeatable,
                known_defect: known,
                first: cmp.first,
            });
        }
    }
    rows
}

/// The report as a fixed-width table.
pub fn format_table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<22} {:<8} {:<26} {:<8} {:>10} {:>11} {:<32} {}\n",
        "op", "kernels", "shape", "backend", "max |Δ|", "max ULP", "declared bound", "result"
    );
    for r in rows {
        let ulp = if r.max_ulp == u64::MAX {
            "NaN".to_string()
        } else {
            r.max_ulp.to_string()
        };
        let verdict = match (r.passed, r.repeatable) {
            (true, _) if r.known_defect.is_some() => {
                "ok (listed defect did not reproduce)".to_string()
            }
            (true, _) => "ok".to_string(),
            (false, _) if r.known_defect.is_some() => {
                format!("KNOWN DEFECT: {}", r.known_defect.as_deref().unwrap_or(""))
            }
            (false, false) => "FAIL (changes run to run)".to_string(),
            (false, true) => format!(
                "FAIL ({} outside; first {:?})",
                r.mismatches,
                r.first.first()
            ),
        };
        s += &format!(
            "{:<22} {:<8} {:<26} {:<8} {:>10.3e} {:>11} {:<32} {}\n",
            r.op, r.kernels, r.shape, r.backend, r.max_abs, ulp, r.bound, verdict
        );
    }
    s
}

/// Rows that fail and are not listed defects.
pub fn failures(rows: &[Row]) -> Vec<&Row> {
    rows.iter()
        .filter(|r| !r.passed && r.known_defect.is_none())
        .collect()
}
