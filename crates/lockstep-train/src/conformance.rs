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
    let mut s = SeedStream::new(2024, lockstep_core::streams::conformance(name));
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
        for set in crate::opset::SETS {
            let kernels = set.name();
            let (x1, t1) = (x.clone(), tg.clone());
            out.push(case("cross_entropy", kernels, shape.clone(), move |d| {
                host(set.cross_entropy(t(&x1, [m, c], d), t(&t1, [m, c], d), m))
            }));
            let (x1, t1) = (x.clone(), tg.clone());
            let op = if kernels == "burn" {
                "cross_entropy_grad_burn"
            } else {
                "cross_entropy_grad"
            };
            out.push(case(op, kernels, shape.clone(), move |d| {
                let ad = d.clone().autodiff();
                let xt = t(&x1, [m, c], &ad).require_grad();
                let gs = set
                    .cross_entropy(xt.clone(), t(&t1, [m, c], &ad), m)
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
                    0,
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
        decay_matrices_only: false,
    };
    for set in crate::opset::SETS {
        let kernels = set.name();
        let (w1, g1, m1, v1, c1) = (w.clone(), g.clone(), mo.clone(), v.clone(), cfg.clone());
        out.push(case(
            "adam_update",
            kernels,
            "10000 (AdamW, step 7)".into(),
            move |d| {
                let mut slots = vec![t(&m1, [10_000], d), t(&v1, [10_000], d)];
                host(set.optimizer_step(
                    &c1,
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
    for set in crate::opset::SETS {
        let kernels = set.name();
        let (w1, g1, m1, c1) = (w.clone(), g.clone(), mo.clone(), sgd.clone());
        out.push(case(
            "sgd_update",
            kernels,
            "10000 (momentum 0.9)".into(),
            move |d| {
                let mut slots = vec![t(&m1, [10_000], d)];
                host(set.optimizer_step(
                    &c1,
                    1e-2,
                    3,
                    t(&w1, [10_000], d),
                    t(&g1, [10_000], d),
                    &mut slots,
                ))
            },
        ));
    }
    out.extend(attention_cases());
    out.extend(underflow_cases());
    out
}

/// A stock causal softmax: `softmax(x * scale + mask)`, the mask `-1e9` above the diagonal of
/// each `[t, t]` block of rows (`exp` of it is 0).
fn stock_causal_softmax(x: Tensor<2>, t_len: usize, scale: f32) -> Tensor<2> {
    let [r, c] = x.dims();
    let mask: Vec<f32> = (0..r * c)
        .map(|i| if i % c > (i / c) % t_len { -1e9 } else { 0.0 })
        .collect();
    let mask = t(&mask, [r, c], &x.device());
    softmax(x.mul_scalar(scale) + mask, 1)
}

/// A stock layer norm without affine part: `(x - mean) / sqrt(var + eps)` from `sum_dim` (the
/// stock set's only reduction).
fn stock_layer_norm(x: Tensor<2>, eps: f32) -> Tensor<2> {
    let c = x.dims()[1] as f32;
    let mean = x.clone().sum_dim(1).div_scalar(c);
    let d = x - mean;
    let var = (d.clone() * d.clone()).sum_dim(1).div_scalar(c);
    d / var.add_scalar(eps).sqrt()
}

/// The attention ops (batched matmul, layer norm, causal softmax), forward and backward, stock
/// and lockstep.
fn attention_cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (bt, m, k, n) in [(1, 1, 1, 1), (3, 7, 33, 9), (12, 16, 64, 16)] {
        let a = seeded(bt * m * k, &format!("bmm-a{bt}x{m}x{k}"), -2.0, 2.0);
        let b = seeded(bt * k * n, &format!("bmm-b{bt}x{k}x{n}"), -2.0, 2.0);
        let g = seeded(bt * m * n, &format!("bmm-g{bt}x{m}x{n}"), -1.0, 1.0);
        let shape = format!("{bt}x{m}x{k}x{n}");
        for (kernels, lock) in [("burn", false), ("lockstep", true)] {
            let mm = move |x: Tensor<3>, y: Tensor<3>| {
                if lock { det::bmm(x, y) } else { x.matmul(y) }
            };
            let (a1, b1) = (a.clone(), b.clone());
            out.push(case("bmm", kernels, shape.clone(), move |d| {
                host(mm(t(&a1, [bt, m, k], d), t(&b1, [bt, k, n], d)))
            }));
            let (a1, b1, g1) = (a.clone(), b.clone(), g.clone());
            out.push(case("bmm_grad", kernels, shape.clone(), move |d| {
                let ad = d.clone().autodiff();
                let (ta, tb) = (
                    t(&a1, [bt, m, k], &ad).require_grad(),
                    t(&b1, [bt, k, n], &ad).require_grad(),
                );
                let gs = (mm(ta.clone(), tb.clone()) * t(&g1, [bt, m, n], &ad))
                    .sum()
                    .backward();
                let mut v = host(ta.grad(&gs).expect("grad"));
                v.extend(host(tb.grad(&gs).expect("grad")));
                v
            }));
        }
    }
    // Embedding rows gathered by id (repeats, unused ids, one row), and the table's gradient.
    for (vocab, c, ids) in [
        (1usize, 1usize, vec![0usize]),
        (7, 5, vec![3, 0, 3, 6, 3, 1, 0]),
        (65, 128, (0..768).map(|r| (r * 37 + r / 5) % 61).collect()),
    ] {
        let table = seeded(vocab * c, &format!("emb-t{vocab}x{c}"), -2.0, 2.0);
        let g = seeded(ids.len() * c, &format!("emb-g{vocab}x{c}"), -1.0, 1.0);
        let shape = format!("{vocab}x{c} at {} ids", ids.len());
        let n = ids.len();
        for (kernels, lock) in [("burn", false), ("lockstep", true)] {
            let ids1 = ids.clone();
            let emb = move |x: Tensor<2>| {
                if lock {
                    det::embedding(x, &ids1)
                } else {
                    let dev = x.device();
                    let idx: Vec<i64> = ids1.iter().map(|&i| i as i64).collect();
                    x.select(
                        0,
                        Tensor::<1, burn::tensor::Int>::from_data(
                            TensorData::new(idx, [ids1.len()]),
                            &dev,
                        ),
                    )
                }
            };
            let (t1, emb1) = (table.clone(), emb.clone());
            out.push(case("embedding", kernels, shape.clone(), move |d| {
                host(emb1(t(&t1, [vocab, c], d)))
            }));
            let (t1, g1) = (table.clone(), g.clone());
            out.push(case("embedding_grad", kernels, shape.clone(), move |d| {
                let ad = d.clone().autodiff();
                let x = t(&t1, [vocab, c], &ad).require_grad();
                let gs = (emb(x.clone()) * t(&g1, [n, c], &ad)).sum().backward();
                host(x.grad(&gs).expect("grad"))
            }));
        }
    }
    let eps = 1e-5;
    for (m, c) in [(5, 37), (64, 768)] {
        let x = seeded(m * c, &format!("ln-x{m}x{c}"), -3.0, 3.0);
        let g = seeded(m * c, &format!("ln-g{m}x{c}"), -1.0, 1.0);
        let shape = format!("{m}x{c}");
        for (kernels, lock) in [("burn", false), ("lockstep", true)] {
            let ln = move |x: Tensor<2>| {
                if lock {
                    det::layer_norm(x, eps)
                } else {
                    stock_layer_norm(x, eps)
                }
            };
            let x1 = x.clone();
            out.push(case("layer_norm", kernels, shape.clone(), move |d| {
                host(ln(t(&x1, [m, c], d)))
            }));
            let (x1, g1) = (x.clone(), g.clone());
            out.push(case("layer_norm_grad", kernels, shape.clone(), move |d| {
                grad_of(&x1, [m, c], &g1, d, ln)
            }));
        }
    }
    for (tl, r) in [(1, 3), (7, 21), (33, 132)] {
        let scale = 0.353_553_38;
        let x = seeded(r * tl, &format!("causal-x{r}x{tl}"), -6.0, 6.0);
        let g = seeded(r * tl, &format!("causal-g{r}x{tl}"), -1.0, 1.0);
        let shape = format!("{r}x{tl} (t={tl})");
        for (kernels, lock) in [("burn", false), ("lockstep", true)] {
            let cs = move |x: Tensor<2>| {
                if lock {
                    det::causal_softmax(x, tl, scale)
                } else {
                    stock_causal_softmax(x, tl, scale)
                }
            };
            let x1 = x.clone();
            out.push(case("causal_softmax", kernels, shape.clone(), move |d| {
                host(cs(t(&x1, [r, tl], d)))
            }));
            let (x1, g1) = (x.clone(), g.clone());
            out.push(case(
                "causal_softmax_grad",
                kernels,
                shape.clone(),
                move |d| grad_of(&x1, [r, tl], &g1, d, cs),
            ));
        }
    }
    // The one-op attention (`qkv` -> the heads' outputs) and the gradient of `qkv`.
    for (b, tl, nh, hd) in [(1, 1, 1, 1), (2, 7, 3, 5), (2, 33, 2, 16)] {
        let c = nh * hd;
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let tag = format!("{b}x{tl}x{nh}x{hd}");
        let qkv = seeded(b * tl * 3 * c, &format!("attn-qkv{tag}"), -2.0, 2.0);
        let g = seeded(b * tl * c, &format!("attn-g{tag}"), -1.0, 1.0);
        let shape = format!("b={b} t={tl} heads={nh} hd={hd}");
        for (kernels, lock) in [("burn", false), ("lockstep", true)] {
            let at = move |x: Tensor<2>| {
                if lock {
                    det::attention(x, b, nh, scale, false)
                } else {
                    stock_attention(x, b, nh, scale)
                }
            };
            let x1 = qkv.clone();
            out.push(case("attention", kernels, shape.clone(), move |d| {
                host(at(t(&x1, [b * tl, 3 * c], d)))
            }));
            let (x1, g1) = (qkv.clone(), g.clone());
            out.push(case("attention_grad", kernels, shape.clone(), move |d| {
                let ad = d.clone().autodiff();
                let x = t(&x1, [b * tl, 3 * c], &ad).require_grad();
                let gs = (at(x.clone()) * t(&g1, [b * tl, c], &ad)).sum().backward();
                host(x.grad(&gs).expect("grad"))
            }));
        }
    }
    out
}

/// Stock causal attention of `b` sequences from `qkv` `[b*t, 3c]` with `nh` heads: the heads
/// sliced out, `q·kᵀ` and `att·v` by burn's matmul, `stock_causal_softmax` between.
fn stock_attention(qkv: Tensor<2>, b: usize, nh: usize, scale: f32) -> Tensor<2> {
    let [r, c3] = qkv.dims();
    let (tl, hd) = (r / b, c3 / (3 * nh));
    let x = qkv.reshape([b, tl, 3 * nh, hd]).swap_dims(1, 2);
    let head = |k: usize| {
        x.clone()
            .slice([0..b, k * nh..(k + 1) * nh, 0..tl, 0..hd])
            .reshape([b * nh, tl, hd])
    };
    let s = head(0)
        .matmul(head(1).swap_dims(1, 2))
        .reshape([b * nh * tl, tl]);
    let p = stock_causal_softmax(s, tl, scale).reshape([b * nh, tl, tl]);
    p.matmul(head(2))
        .reshape([b, nh, tl, hd])
        .swap_dims(1, 2)
        .reshape([b * tl, nh * hd])
}

/// Seeded values around the subnormal range: 1/8 subnormals, 1/16 `±MIN_POSITIVE`, 1/16 `±0`,
/// half `±[1, 2) * 2^(exp - 0..8)` (so products and sums of two such values underflow when `exp`
/// is near -63), the rest ordinary values in [-2, 2].
pub fn underflow_values(n: usize, name: &str, exp: i32) -> Vec<f32> {
    let mut s = SeedStream::new(
        2024,
        lockstep_core::streams::conformance(&format!("underflow/{name}")),
    );
    (0..n)
        .map(|_| {
            let u = s.next_u32();
            let sign = if u & 1 == 0 { 1.0f32 } else { -1.0 };
            match (u >> 1) % 16 {
                0 | 1 => sign * f32::from_bits(1 + (s.next_u32() >> 9)),
                2 => sign * f32::MIN_POSITIVE,
                3 => sign * 0.0,
                4..=11 => {
                    let scale = 2f32.powi(exp - (s.next_u32() % 8) as i32);
                    sign * s.uniform_range(1.0, 2.0) * scale
                }
                _ => s.uniform_range(-2.0, 2.0),
            }
        })
        .collect()
}

/// `m x c` logits (`c >= 12`) whose small probabilities land near `MIN_POSITIVE`: the first row
/// is the 3x4 case whose softmax backward NVIDIA's Vulkan driver flushed (`-1.0194675e-38` on
/// the CPU, `-0` on the GPU) before lockstep flushed in software (equal logits, exp's range
/// ends, a gap of 100); the rest mixes 0 with -86..-92 and some `underflow_values`.
pub fn underflow_logits(m: usize, c: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..m * c)
        .map(|i| {
            if i % 3 == 0 {
                0.0
            } else {
                -86.0 - (i % 7) as f32
            }
        })
        .collect();
    x[..12].copy_from_slice(&[
        3.0, 3.0, 3.0, 3.0, 88.0, -88.0, 0.0, 87.0, -100.0, 0.0, -100.0, -100.0,
    ]);
    let extra = underflow_values(m * c, "logits", -60);
    for (v, t) in x.iter_mut().zip(extra).skip(12).step_by(5) {
        *v = t;
    }
    x
}

/// Every lockstep op on `underflow_values` inputs: subnormal and `±MIN_POSITIVE` inputs, products
/// and sums that land below `MIN_POSITIVE`, softmax/exp results near the bottom of the normal
/// range. `lockstep_kernels::arith` flushes all of these in software, so the rows stay bitwise
/// on devices that flush subnormals in hardware (NVIDIA) and on ones that do not (the CPU,
/// lavapipe). Stock ops have no such promise and get no rows here.
fn underflow_cases() -> Vec<Case> {
    let mut out = Vec::new();
    let u = underflow_values;
    let label = |s: &str| format!("{s} underflow");
    let (m, k, n) = (9, 40, 7);
    let (a, b, g) = (u(m * k, "a", -60), u(k * n, "b", -62), u(m * n, "g", -64));
    let (a1, b1) = (a.clone(), b.clone());
    out.push(case("matmul", "lockstep", label("9x40x7"), move |d| {
        host(det::matmul(t(&a1, [m, k], d), t(&b1, [k, n], d)))
    }));
    let (g1, b1) = (g.clone(), b.clone());
    out.push(case("matmul_a_bt", "lockstep", label("9x40x7"), move |d| {
        host(det::matmul(
            t(&g1, [m, n], d),
            t(&b1, [k, n], d).transpose(),
        ))
    }));
    let (a1, g1) = (a.clone(), g.clone());
    out.push(case("matmul_at_b", "lockstep", label("9x40x7"), move |d| {
        host(det::matmul(
            t(&a1, [m, k], d).transpose(),
            t(&g1, [m, n], d),
        ))
    }));
    let (x, w, bias) = (
        u(2 * 3 * 36, "cx", -60),
        u(4 * 27, "cw", -62),
        u(4, "cb", -125),
    );
    out.push(case("conv2d", "lockstep", label("2x3x6x6 k3"), move |d| {
        host(conv2d_im2col(
            t(&x, [2, 3, 6, 6], d),
            t(&w, [4, 3, 3, 3], d),
            t(&bias, [4], d),
            1,
        ))
    }));
    let (ix, icols) = (u(2 * 3 * 36, "ix", -124), u(72 * 27, "icols", -124));
    let x1 = ix.clone();
    out.push(case("im2col", "lockstep", label("2x3x6x6 k3"), move |d| {
        host(det::im2col(t(&x1, [2, 3, 6, 6], d), 3, 1))
    }));
    out.push(case("col2im", "lockstep", label("2x3x6x6 k3"), move |d| {
        let ad = d.clone().autodiff();
        let x = t(&ix, [2, 3, 6, 6], &ad).require_grad();
        let gs = (det::im2col(x.clone(), 3, 1) * t(&icols, [72, 27], &ad))
            .sum()
            .backward();
        host(x.grad(&gs).expect("grad"))
    }));
    let px = u(2 * 3 * 8 * 8, "px", -124);
    let pg = u(2 * 3 * 4 * 4, "pg", -124);
    for (op, max) in [("max_pool2d", true), ("avg_pool2d", false)] {
        let x1 = px.clone();
        out.push(case(op, "lockstep", label("2x3x8x8"), move |d| {
            let x = t(&x1, [2, 3, 8, 8], d);
            host(if max {
                det::max_pool2d(x, 2)
            } else {
                det::avg_pool2d(x, 2)
            })
        }));
        let (x1, g1) = (px.clone(), pg.clone());
        let grad_op = if max {
            "max_pool2d_grad"
        } else {
            "avg_pool2d_grad"
        };
        out.push(case(grad_op, "lockstep", label("2x3x8x8"), move |d| {
            let ad = d.clone().autodiff();
            let x = t(&x1, [2, 3, 8, 8], &ad).require_grad();
            let y = if max {
                det::max_pool2d(x.clone(), 2)
            } else {
                det::avg_pool2d(x.clone(), 2)
            };
            let gs = (y * t(&g1, [2, 3, 4, 4], &ad)).sum().backward();
            host(x.grad(&gs).expect("grad"))
        }));
    }
    let (rx, rb) = (u(33 * 17, "rx", -124), u(17, "rb", -124));
    let x1 = rx.clone();
    out.push(case("sum_rows", "lockstep", label("33x17"), move |d| {
        host(det::sum_rows(t(&x1, [33, 17], d)))
    }));
    let x1 = rx.clone();
    out.push(case("sum_all", "lockstep", label("33x17"), move |d| {
        host(det::sum_all(t(&x1, [33, 17], d)))
    }));
    let (x1, b1) = (rx.clone(), rb.clone());
    out.push(case("add_bias", "lockstep", label("33x17"), move |d| {
        host(det::add_bias(t(&x1, [33, 17], d), t(&b1, [1, 17], d)))
    }));
    let (x1, y1) = (u(600, "mx", -63), u(600, "my", -63));
    out.push(case("mul", "lockstep", label("600"), move |d| {
        host(det::mul(t(&x1, [600], d), t(&y1, [600], d)))
    }));
    // Activations: tiny and subnormal arguments, plus exp near its clamp (results ~1e-38).
    let mut ax = u(1000, "ax", -60);
    ax.extend((0..64).map(|i| -86.0 - i as f32 * 0.05));
    let ag = u(ax.len(), "ag", -100);
    let na = ax.len();
    type Act = fn(Tensor<1>) -> Tensor<1>;
    let acts: [(&'static str, &'static str, Act); 4] = [
        ("exp", "exp_grad", det::exp::<1>),
        ("sigmoid", "sigmoid_grad", det::sigmoid::<1>),
        ("tanh", "tanh_grad", det::tanh::<1>),
        ("gelu", "gelu_grad", det::gelu::<1>),
    ];
    for (op, grad_op, f) in acts {
        let x1 = ax.clone();
        out.push(case(op, "lockstep", label("1064"), move |d| {
            host(f(t(&x1, [na], d)))
        }));
        let (x1, g1) = (ax.clone(), ag.clone());
        out.push(case(grad_op, "lockstep", label("1064"), move |d| {
            grad_of(&x1, [na], &g1, d, f)
        }));
    }
    // |x| kept inside recip_fixed's domain for the backward (1/x of a flushed 0 is no number).
    let lx: Vec<f32> = u(1000, "lx", -100)
        .iter()
        .map(|v| v.abs().max(f32::from_bits(0x0100_0000)))
        .collect();
    let lg = u(1000, "lg", -20);
    let x1 = lx.clone();
    out.push(case("log", "lockstep", label("1000 |x|"), move |d| {
        host(det::log(t(&x1, [1000], d)))
    }));
    out.push(case("log_grad", "lockstep", label("1000 |x|"), move |d| {
        grad_of(&lx, [1000], &lg, d, det::log::<1>)
    }));
    // Softmax family: rows whose small probabilities land near MIN_POSITIVE, and the row that
    // showed NVIDIA flushing softmax's backward (3x4: equal logits, exp's range ends, a gap).
    let (sm, sc) = (4, 12);
    let sx = underflow_logits(sm, sc);
    let sg = u(sm * sc, "sg", -30);
    let labels: Vec<u32> = (0..sm as u32).map(|i| (i * 5 + 1) % sc as u32).collect();
    let tg = one_hot(&labels, sc);
    for (op, log) in [("softmax", false), ("log_softmax", true)] {
        let x1 = sx.clone();
        out.push(case(op, "lockstep", label("4x12"), move |d| {
            let x = t(&x1, [sm, sc], d);
            host(if log {
                det::log_softmax(x)
            } else {
                det::softmax(x)
            })
        }));
        let (x1, g1) = (sx.clone(), sg.clone());
        let grad_op = if log {
            "log_softmax_grad"
        } else {
            "softmax_grad"
        };
        out.push(case(grad_op, "lockstep", label("4x12"), move |d| {
            grad_of(&x1, [sm, sc], &g1, d, |x| {
                if log {
                    det::log_softmax(x)
                } else {
                    det::softmax(x)
                }
            })
        }));
    }
    let (x1, t1) = (sx.clone(), tg.clone());
    out.push(case("cross_entropy", "lockstep", label("4x12"), move |d| {
        host(cross_entropy(
            KernelSet::Lockstep,
            t(&x1, [sm, sc], d),
            t(&t1, [sm, sc], d),
        ))
    }));
    let (x1, t1) = (sx, tg);
    out.push(case(
        "cross_entropy_grad",
        "lockstep",
        label("4x12"),
        move |d| {
            let ad = d.clone().autodiff();
            let xt = t(&x1, [sm, sc], &ad).require_grad();
            let gs = cross_entropy(KernelSet::Lockstep, xt.clone(), t(&t1, [sm, sc], &ad))
                .sum()
                .backward();
            host(xt.grad(&gs).expect("grad"))
        },
    ));
    // Attention: a batched matmul whose products underflow, layer norm of rows whose deviations
    // square below MIN_POSITIVE, the causal softmax of the underflowing logits.
    let (bt, bm, bk, bn) = (3, 5, 33, 4);
    let (ba, bb, bg) = (
        u(bt * bm * bk, "bmm-a", -60),
        u(bt * bk * bn, "bmm-b", -62),
        u(bt * bm * bn, "bmm-g", -64),
    );
    let (a1, b1) = (ba.clone(), bb.clone());
    out.push(case("bmm", "lockstep", label("3x5x33x4"), move |d| {
        host(det::bmm(t(&a1, [bt, bm, bk], d), t(&b1, [bt, bk, bn], d)))
    }));
    out.push(case("bmm_grad", "lockstep", label("3x5x33x4"), move |d| {
        let ad = d.clone().autodiff();
        let (ta, tb) = (
            t(&ba, [bt, bm, bk], &ad).require_grad(),
            t(&bb, [bt, bk, bn], &ad).require_grad(),
        );
        let gs = (det::bmm(ta.clone(), tb.clone()) * t(&bg, [bt, bm, bn], &ad))
            .sum()
            .backward();
        let mut v = host(ta.grad(&gs).expect("grad"));
        v.extend(host(tb.grad(&gs).expect("grad")));
        v
    }));
    let (ln, lc) = (6, 37);
    let lx = u(ln * lc, "ln", -63);
    let lg = u(ln * lc, "ln-g", -60);
    let x1 = lx.clone();
    out.push(case("layer_norm", "lockstep", label("6x37"), move |d| {
        host(det::layer_norm(t(&x1, [ln, lc], d), 1e-30))
    }));
    out.push(case(
        "layer_norm_grad",
        "lockstep",
        label("6x37"),
        move |d| grad_of(&lx, [ln, lc], &lg, d, |x| det::layer_norm(x, 1e-30)),
    ));
    let (cr, ct) = (24, 12);
    let cx = underflow_logits(cr, ct);
    let cg = u(cr * ct, "causal-g", -30);
    let x1 = cx.clone();
    out.push(case(
        "causal_softmax",
        "lockstep",
        label("24x12"),
        move |d| host(det::causal_softmax(t(&x1, [cr, ct], d), ct, 1.0)),
    ));
    out.push(case(
        "causal_softmax_grad",
        "lockstep",
        label("24x12"),
        move |d| grad_of(&cx, [cr, ct], &cg, d, |x| det::causal_softmax(x, ct, 1.0)),
    ));
    // Optimizers: gradients whose squares and moments underflow, weights near MIN_POSITIVE.
    let on = 4000;
    let (w, gr, mo, v) = (
        u(on, "ow", -110),
        u(on, "og", -62),
        u(on, "om", -120),
        u(on, "ov", -125)
            .iter()
            .map(|x| x.abs())
            .collect::<Vec<f32>>(),
    );
    for (kind, op, wd) in [
        (
            lockstep_core::config::OptimizerKind::Adam,
            "adam_update",
            0.01,
        ),
        (
            lockstep_core::config::OptimizerKind::Adamw,
            "adam_update",
            0.01,
        ),
        (
            lockstep_core::config::OptimizerKind::Sgd,
            "sgd_update",
            0.01,
        ),
    ] {
        let cfg = lockstep_core::config::OptimizerConfig {
            kind,
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: wd,
            momentum: 0.9,
            decay_matrices_only: false,
        };
        let (w1, g1, m1, v1) = (w.clone(), gr.clone(), mo.clone(), v.clone());
        out.push(case(
            op,
            "lockstep",
            label(&format!("{on} ({kind:?})")),
            move |d| {
                let mut slots = vec![t(&m1, [on], d)];
                if kind != lockstep_core::config::OptimizerKind::Sgd {
                    slots.push(t(&v1, [on], d));
                }
                let mut all = host(crate::optim::update(
                    &cfg,
                    KernelSet::Lockstep,
                    1e-3,
                    3,
                    t(&w1, [on], d),
                    t(&g1, [on], d),
                    &mut slots,
                ));
                for s in slots {
                    all.extend(host(s));
                }
                all
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
