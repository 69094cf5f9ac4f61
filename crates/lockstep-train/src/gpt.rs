//! `model.kind = "gpt"`: a GPT-2-style decoder (nanoGPT's `model.py`) as a [`Network`] over
//! lockstep's kernels, so its training is bitwise the same on every backend.
//!
//! Input `[batch, t]` token ids (as f32, `t <= block_size`); output logits `[batch * t, vocab]`
//! (row `b * t + i` predicts the token after position `i` of sequence `b`).
//!
//! ```text
//! h = wte[tokens] + wpe[positions]       `embedding`: a row gather whose backward sums each
//! h = dropout("drop", h)                  table row's positions' gradients in position order
//! for each block i:                       (a segmented sum, never a scatter); bit for bit the
//!     h = h + dropout(attn(ln_1(h)))      one-hot matmuls this model used before
//!     h = h + dropout(c_proj(gelu(c_fc(ln_2(h)))))
//! logits = ln_f(h) @ wteᵀ   (or @ lm_head.weight when tie_weights = false)
//! attn(x): q, k, v = split(x @ c_attn + b) into n_head heads of n_embd / n_head
//!          att = causal_softmax(q @ kᵀ, scale = f32(1 / sqrt(head_dim)))   (bmm, rows masked
//!          y = dropout(att) @ v, heads concatenated, @ c_proj + b            past the query)
//!          (without attention dropout: the one op `attention`, the same bits)
//! ln(x) = layer_norm(x, eps = 1e-5) * weight (+ bias)
//! ```
//!
//! Parameters (nanoGPT's names without `transformer.`): `wte.weight [vocab, n_embd]`,
//! `wpe.weight [block_size, n_embd]`, `h.<i>.{ln_1,ln_2}.{weight,bias}`,
//! `h.<i>.attn.c_attn.{weight [n_embd, 3 n_embd], bias}`, `h.<i>.attn.c_proj.*`,
//! `h.<i>.mlp.c_fc.* [n_embd, 4 n_embd]`, `h.<i>.mlp.c_proj.*`, `ln_f.*`, `lm_head.weight`
//! (untied only); weights are `[in, out]` (`y = x @ W`). Init as GPT-2/nanoGPT: weights and
//! embeddings `N(0, 0.02²)`, the residual projections (`c_proj`) `N(0, (0.02 / sqrt(2 n_layer))²)`,
//! biases 0, LayerNorm weights 1 — each from its stream `init/<path>` (`InitRule::Normal`).
//! Dropout streams: `drop`, `h.<i>.attn.attn_dropout`, `h.<i>.attn.resid_dropout`,
//! `h.<i>.mlp.dropout` (`dropout/<name>/step-<s>`).
//!
//! Only lockstep's kernel set runs it (`kernels = "lockstep"`; the config refuses `"burn"`).
//! The reshapes, slices and transposes between the kernels are burn's stock data movement
//! (exact copies, no arithmetic).

use crate::nn::{Ctx, InitRule, Network, ParamSpec, Params, add, dropout};
use burn::tensor::Tensor;
use lockstep_core::config::GptConfig;
use lockstep_kernels as det;
use lockstep_kernels::ops::{attention, bmm_in, causal_softmax, embedding, layer_norm, matmul_in};

pub const LN_EPS: f32 = 1e-5;

pub struct Gpt {
    pub cfg: GptConfig,
    pub vocab: usize,
    pub dropout: f64,
}

fn spec(name: String, shape: Vec<usize>, init: InitRule) -> ParamSpec {
    ParamSpec { name, shape, init }
}

impl Gpt {
    pub fn new(cfg: &GptConfig, vocab: usize, dropout: f64) -> Self {
        Gpt {
            cfg: cfg.clone(),
            vocab,
            dropout,
        }
    }

    fn linear_params(&self, path: &str, d_in: usize, d_out: usize, std: f64) -> Vec<ParamSpec> {
        let mut p = vec![spec(
            format!("{path}.weight"),
            vec![d_in, d_out],
            InitRule::Normal { std },
        )];
        if self.cfg.bias {
            p.push(spec(format!("{path}.bias"), vec![d_out], InitRule::Zeros));
        }
        p
    }

    fn ln_params(&self, path: &str) -> Vec<ParamSpec> {
        let c = self.cfg.n_embd;
        let mut p = vec![spec(format!("{path}.weight"), vec![c], InitRule::Ones)];
        if self.cfg.bias {
            p.push(spec(format!("{path}.bias"), vec![c], InitRule::Zeros));
        }
        p
    }

    fn linear(&self, p: &Params, path: &str, x: Tensor<2>, ctx: &Ctx) -> Tensor<2> {
        let w: Tensor<2> = p.get(&format!("{path}.weight"));
        let y = matmul_in(x, w, ctx.arith.fused());
        if self.cfg.bias {
            let b: Tensor<1> = p.get(&format!("{path}.bias"));
            let n = b.dims()[0];
            det::add_bias(y, b.reshape([1, n]))
        } else {
            y
        }
    }

    /// `layer_norm(x) * weight (+ bias)`; the weight is broadcast by `add_bias` onto `zeros`
    /// (`x`'s shape; one tensor per forward, shared by every LayerNorm), so its gradient is
    /// `add_bias`'s fixed-order column sum.
    fn ln(&self, p: &Params, path: &str, x: Tensor<2>, zeros: &Tensor<2>) -> Tensor<2> {
        let c = x.dims()[1];
        let w: Tensor<1> = p.get(&format!("{path}.weight"));
        let wide = det::add_bias(zeros.clone(), w.reshape([1, c]));
        let y = det::ops::mul(layer_norm(x, LN_EPS), wide);
        if self.cfg.bias {
            let b: Tensor<1> = p.get(&format!("{path}.bias"));
            det::add_bias(y, b.reshape([1, c]))
        } else {
            y
        }
    }

    fn attn(&self, p: &Params, i: usize, x: Tensor<2>, b: usize, t: usize, ctx: &Ctx) -> Tensor<2> {
        let (c, nh) = (self.cfg.n_embd, self.cfg.n_head);
        let hd = c / nh;
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let fused = ctx.arith.fused();
        let qkv = self.linear(p, &format!("h.{i}.attn.c_attn"), x, ctx);
        let y = if ctx.step.is_none() || self.dropout <= 0.0 {
            // No attention dropout: the one-op form (`attention`), the same bits as below.
            attention(qkv, b, nh, scale, fused)
        } else {
            self.attn_written_out(qkv, i, b, t, ctx)
        };
        let y = self.linear(p, &format!("h.{i}.attn.c_proj"), y, ctx);
        dropout(&format!("h.{i}.attn.resid_dropout"), self.dropout, y, ctx)
    }

    /// `attention` written out as reshapes, slices, `bmm`s and `causal_softmax`, with the
    /// attention dropout between the softmax and the second product: `[b*t, c]`.
    fn attn_written_out(
        &self,
        qkv: Tensor<2>,
        i: usize,
        b: usize,
        t: usize,
        ctx: &Ctx,
    ) -> Tensor<2> {
        let (c, nh) = (self.cfg.n_embd, self.cfg.n_head);
        let hd = c / nh;
        let qkv = qkv.reshape([b, t, 3 * nh, hd]).swap_dims(1, 2);
        let head = |k: usize| {
            qkv.clone()
                .slice([0..b, k * nh..(k + 1) * nh, 0..t, 0..hd])
                .reshape([b * nh, t, hd])
        };
        let (q, k, v) = (head(0), head(1), head(2));
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let fused = ctx.arith.fused();
        let att = bmm_in(q, k.swap_dims(1, 2), fused).reshape([b * nh * t, t]);
        let att = causal_softmax(att, t, scale);
        let att = dropout(&format!("h.{i}.attn.attn_dropout"), self.dropout, att, ctx);
        bmm_in(att.reshape([b * nh, t, t]), v, fused)
            .reshape([b, nh, t, hd])
            .swap_dims(1, 2)
            .reshape([b * t, c])
    }

    fn mlp(&self, p: &Params, i: usize, x: Tensor<2>, ctx: &Ctx) -> Tensor<2> {
        let h = self.linear(p, &format!("h.{i}.mlp.c_fc"), x, ctx);
        let h = det::ops::gelu(h);
        let h = self.linear(p, &format!("h.{i}.mlp.c_proj"), h, ctx);
        dropout(&format!("h.{i}.mlp.dropout"), self.dropout, h, ctx)
    }
}

/// Row-major one-hot rows `[ids.len(), width]`.
impl Network for Gpt {
    fn params(&self) -> Vec<ParamSpec> {
        let (c, l) = (self.cfg.n_embd, self.cfg.n_layer);
        let std = 0.02;
        let proj = 0.02 / ((2 * l) as f64).sqrt();
        let mut p = vec![
            spec(
                "wte.weight".into(),
                vec![self.vocab, c],
                InitRule::Normal { std },
            ),
            spec(
                "wpe.weight".into(),
                vec![self.cfg.block_size, c],
                InitRule::Normal { std },
            ),
        ];
        for i in 0..l {
            p.extend(self.ln_params(&format!("h.{i}.ln_1")));
            p.extend(self.linear_params(&format!("h.{i}.attn.c_attn"), c, 3 * c, std));
            p.extend(self.linear_params(&format!("h.{i}.attn.c_proj"), c, c, proj));
            p.extend(self.ln_params(&format!("h.{i}.ln_2")));
            p.extend(self.linear_params(&format!("h.{i}.mlp.c_fc"), c, 4 * c, std));
            p.extend(self.linear_params(&format!("h.{i}.mlp.c_proj"), 4 * c, c, proj));
        }
        p.extend(self.ln_params("ln_f"));
        if !self.cfg.tie_weights {
            p.push(spec(
                "lm_head.weight".into(),
                vec![c, self.vocab],
                InitRule::Normal { std },
            ));
        }
        p
    }

    fn forward(&self, p: &Params, x: Tensor<2>, ctx: &Ctx) -> Tensor<2> {
        let [b, t] = x.dims();
        assert!(
            t >= 1 && t <= self.cfg.block_size,
            "gpt: sequence length {t} outside 1..={}",
            self.cfg.block_size
        );
        let ids: Vec<f32> = x.try_into_vec_as::<f32>().expect("token ids read back");
        let vocab = self.vocab;
        let tok: Vec<usize> = ids.iter().map(|&v| (v as usize).min(vocab - 1)).collect();
        let pos: Vec<usize> = (0..b * t).map(|r| r % t).collect();
        let fused = ctx.arith.fused();
        let wte: Tensor<2> = p.get("wte.weight");
        let wpe: Tensor<2> = p.get("wpe.weight");
        let mut h = add(embedding(wte.clone(), &tok), embedding(wpe, &pos), ctx);
        h = dropout("drop", self.dropout, h, ctx);
        let zeros = Tensor::<2>::zeros(h.dims(), &h.device());
        for i in 0..self.cfg.n_layer {
            let a = self.ln(p, &format!("h.{i}.ln_1"), h.clone(), &zeros);
            h = add(h, self.attn(p, i, a, b, t, ctx), ctx);
            let m = self.ln(p, &format!("h.{i}.ln_2"), h.clone(), &zeros);
            h = add(h, self.mlp(p, i, m, ctx), ctx);
        }
        let h = self.ln(p, "ln_f", h, &zeros);
        if self.cfg.tie_weights {
            matmul_in(h, wte.transpose(), fused)
        } else {
            matmul_in(h, p.get("lm_head.weight"), fused)
        }
    }
}
