//! An op's `Autodiff<B, C>` methods (`B` the inner backend, `C` the checkpointing strategy),
//! written inside `impl<B: XOps, C: CheckpointStrategy> XOps for Autodiff<B, C>` with the
//! macros below. A backward runs the op's own kernels on `B`, so gradients keep the forward's
//! fixed orders.
//!
//! The tape's record of an op is `Grad`: what the op keeps (`S`) and a function pointer to its
//! backward, written where `B`'s bounds are known (a closure that captures nothing).

use burn::backend::{
    Backend,
    autodiff::{
        checkpoint::base::Checkpointer,
        grads::Gradients,
        ops::{Backward, Ops, unary},
    },
    tensor::FloatTensor,
};
use std::{fmt, marker::PhantomData};

/// A backward with `N` tracked inputs on backend `B`, keeping `S` (stateless itself: the state
/// and the backward function travel in `Backward::State`).
pub(crate) struct Grad<B, S, const N: usize>(PhantomData<fn() -> (B, S)>);

impl<B, S, const N: usize> Grad<B, S, N> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<B, S, const N: usize> fmt::Debug for Grad<B, S, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lockstep backward ({N} inputs)")
    }
}

impl<B: Backend, S: Clone + Send + fmt::Debug + 'static> Backward<B, 1> for Grad<B, S, 1> {
    /// What the op keeps and `f(kept, g)`, the input's gradient for the incoming `g`.
    type State = (S, fn(S, FloatTensor<B>) -> FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (kept, f) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |g| f(kept, g));
    }
}

/// `f(g, kept, [a needs one, b needs one]) -> [a's gradient, b's]` (each `Some` when needed).
pub(crate) type Grad2Fn<B, S> = fn(FloatTensor<B>, S, [bool; 2]) -> [Option<FloatTensor<B>>; 2];

impl<B: Backend, S: Clone + Send + fmt::Debug + 'static> Backward<B, 2> for Grad<B, S, 2> {
    type State = (S, Grad2Fn<B, S>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_a, node_b] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        let (kept, f) = ops.state;
        let [da, db] = f(g, kept, [node_a.is_some(), node_b.is_some()]);
        for (node, d) in [(node_a, da), (node_b, db)] {
            if let (Some(node), Some(d)) = (node, d) {
                grads.register::<B>(node.id, d);
            }
        }
    }
}

/// A method with one tracked float input `$x`; its other arguments `$a` are `Copy` constants.
/// The tape keeps `$keep` — the `input` or `output` tensor, or the input's `shape` — bound to
/// `$s` in the backward together with the constants (by their names); the backward maps the
/// incoming gradient `$g` to `$x`'s.
macro_rules! unary_autodiff {
    (fn $name:ident($x:ident $(, $a:ident: $t:ty)*) keep $keep:ident,
     |$g:ident, $s:ident| $body:expr) => {
        fn $name(
            $x: ::burn::backend::tensor::FloatTensor<Self>,
            $($a: $t),*
        ) -> ::burn::backend::tensor::FloatTensor<Self> {
            use ::burn::backend::autodiff::ops::{Backward as _, OpsKind};
            use ::burn::backend::tensor::FloatTensor;
            let grad: fn(
                ($crate::seam::autodiff::unary_autodiff!(@kept $keep), ($($t,)*)),
                FloatTensor<B>,
            ) -> FloatTensor<B> = |($s, ($($a,)*)), $g| $body;
            let grad_fn = $crate::seam::autodiff::Grad::<B, _, 1>::new();
            match grad_fn.prepare::<C>([$x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let (kept, out) = $crate::seam::autodiff::unary_autodiff!(
                        @keep $keep, $x, |x| B::$name(x, $($a),*)
                    );
                    prep.finish(((kept, ($($a,)*)), grad), out)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::$name($x.into_primitive(), $($a),*)),
            }
        }
    };
    (@keep output, $x:ident, $f:expr) => {{
        let out = $f($x.into_primitive());
        (out.clone(), out)
    }};
    (@keep input, $x:ident, $f:expr) => {{
        let xp = $x.primitive().clone();
        (xp.clone(), $f(xp))
    }};
    (@keep shape, $x:ident, $f:expr) => {{
        use ::burn::backend::TensorMetadata as _;
        let shape = $x.primitive().shape();
        (shape, $f($x.into_primitive()))
    }};
    (@kept shape) => { ::burn::backend::Shape };
    (@kept $tensor:ident) => { ::burn::backend::tensor::FloatTensor<B> };
}
pub(crate) use unary_autodiff;

/// A two-input method that keeps both inputs for the backward, which maps the incoming gradient
/// `$g` to `$da` and `$db` with `$a`, `$b` bound to the inputs (each evaluated only when that
/// input takes part, `$da` first). Its other arguments `$c` are `Copy` constants, kept with the
/// inputs and bound by their names in the backward.
macro_rules! binary_autodiff {
    (fn $name:ident $(($($c:ident: $t:ty),*))?, |$g:ident, $a:ident, $b:ident| ($da:expr, $db:expr)) => {
        fn $name(
            a: ::burn::backend::tensor::FloatTensor<Self>,
            b: ::burn::backend::tensor::FloatTensor<Self>,
            $($($c: $t),*)?
        ) -> ::burn::backend::tensor::FloatTensor<Self> {
            use ::burn::backend::autodiff::ops::{Backward as _, OpsKind};
            use ::burn::backend::tensor::FloatTensor;
            #[allow(unused_parens)]
            let grad: $crate::seam::autodiff::Grad2Fn<
                B,
                (FloatTensor<B>, FloatTensor<B>, ($($($t,)*)?)),
            > = |$g, ($a, $b, ($($($c,)*)?)), [need_a, need_b]| {
                let da = need_a.then(|| $da);
                [da, need_b.then(|| $db)]
            };
            let grad_fn = $crate::seam::autodiff::Grad::<B, _, 2>::new();
            match grad_fn
                .prepare::<C>([a.node(), b.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (pa, pb) = (a.primitive().clone(), b.primitive().clone());
                    let out = B::$name(pa.clone(), pb.clone() $($(, $c)*)?);
                    prep.finish(((pa, pb, ($($($c,)*)?)), grad), out)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::$name(
                    a.into_primitive(),
                    b.into_primitive()
                    $($(, $c)*)?
                )),
            }
        }
    };
}
pub(crate) use binary_autodiff;

/// A method with no backward (an op's own gradient, an optimizer step, a mask, the probe): it
/// runs on the inner backend, taking its tensors' values (`$t` owned, `&$r` borrowed) and the
/// constants `$a`, and returns untracked tensors (one, or the tuple `($o, ...)`).
macro_rules! no_grad {
    (fn $name:ident($($t:ident),+ $(; $($a:ident: $ty:ty),*)?)) => {
        fn $name(
            $($t: ::burn::backend::tensor::FloatTensor<Self>,)+
            $($($a: $ty),*)?
        ) -> ::burn::backend::tensor::FloatTensor<Self> {
            <Self as ::burn::backend::AutodiffBackend>::from_inner(B::$name(
                $($t.into_primitive(),)+
                $($($a),*)?
            ))
        }
    };
    (fn $name:ident($($t:ident),+ $(; $($a:ident: $ty:ty),*)?) -> ($($o:ident),+)) => {
        fn $name(
            $($t: ::burn::backend::tensor::FloatTensor<Self>,)+
            $($($a: $ty),*)?
        ) -> ($($crate::seam::autodiff::no_grad!(@float $o)),+) {
            let ($($o),+) = B::$name($($t.into_primitive(),)+ $($($a),*)?);
            ($(<Self as ::burn::backend::AutodiffBackend>::from_inner($o)),+)
        }
    };
    (fn $name:ident(&$r:ident; $($a:ident: $ty:ty),*)) => {
        fn $name(
            $r: &::burn::backend::tensor::FloatTensor<Self>,
            $($a: $ty),*
        ) -> ::burn::backend::tensor::FloatTensor<Self> {
            <Self as ::burn::backend::AutodiffBackend>::from_inner(B::$name($r.primitive(), $($a),*))
        }
    };
    (@float $o:ident) => { ::burn::backend::tensor::FloatTensor<Self> };
}
pub(crate) use no_grad;
