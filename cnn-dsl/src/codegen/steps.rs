//! The forward pass of generated code, one kernel call per plan step: each op kind's method
//! adds its geometry constant, packed-convolution field, image-major call and, in the lane
//! prefix, its lane call.

use super::*;
use crate::plan::Step;

/// The field of tensor `i` in the generated tensors struct.
pub(super) fn tfield(i: usize) -> Ident {
    format_ident!("t{}", i)
}

/// The lane buffer `l0` or `l1`.
pub(super) fn lbuf(k: usize) -> TokenStream {
    if k == 0 { quote!(l0) } else { quote!(l1) }
}

/// What the code of every step accumulates.
pub(super) struct Steps {
    /// The runtime support path.
    rt: TokenStream,
    /// `const G{i}: …Geom` items.
    pub(super) consts: Vec<TokenStream>,
    /// Fields of the packed-convolution struct.
    pub(super) conv_fields: Vec<TokenStream>,
    /// Their initialisers.
    pub(super) conv_inits: Vec<TokenStream>,
    /// Their scratch needs.
    pub(super) conv_scratch: Vec<TokenStream>,
    /// Image-major calls, one per step.
    pub(super) body: Vec<TokenStream>,
    /// Lane calls of the lane prefix.
    pub(super) lane_body: Vec<TokenStream>,
    /// Scratch needs of the lane calls.
    pub(super) lane_scratch: Vec<TokenStream>,
    /// The lane buffer holding the current activation.
    pub(super) lcur: usize,
}

/// One step's names and slices.
struct StepCx {
    /// The step's index.
    index: usize,
    /// An activation fused into the step.
    fused: Option<Activation>,
    /// `G{i}`, its geometry constant.
    g: Ident,
    /// Elements per image written.
    n_out: Literal,
    /// `step {i}: {path}`, the constant's doc.
    path_doc: String,
    /// Source buffer (`x`, `b0`, `b1`).
    src: TokenStream,
    /// Destination buffer.
    dst: TokenStream,
    /// Source and destination are the same buffer.
    in_place: bool,
    /// The step is in the lane prefix.
    in_lanes: bool,
    /// Tensor indices of the step.
    params: Vec<usize>,
}

impl StepCx {
    /// Copies the source into the destination, unless the step runs in place.
    fn copy_in(&self) -> TokenStream {
        if self.in_place {
            quote!()
        } else {
            let (src, dst, n_out) = (&self.src, &self.dst, &self.n_out);
            quote!(#dst[..#n_out * batch].copy_from_slice(&#src[..#n_out * batch]);)
        }
    }
}

impl Steps {
    pub(super) fn new(rt: TokenStream) -> Steps {
        Steps {
            rt,
            consts: Vec::new(),
            conv_fields: Vec::new(),
            conv_inits: Vec::new(),
            conv_scratch: Vec::new(),
            body: Vec::new(),
            lane_body: Vec::new(),
            lane_scratch: Vec::new(),
            lcur: 0,
        }
    }

    /// `const G{i}: Geom = …;`, the step's geometry as a constant of the generated type.
    fn geom_const(&mut self, cx: &StepCx, ty: TokenStream, geom: TokenStream) {
        let (rt, g, doc) = (&self.rt, &cx.g, &cx.path_doc);
        self.consts.push(quote! {
            #[doc = #doc]
            const #g: #rt::#ty = #geom;
        });
    }

    /// Emits step `i`.
    pub(super) fn step(&mut self, i: usize, s: &Step, in_lanes: bool) {
        let (src, dst, in_place) = match (s.src, s.dst) {
            (Loc::Input, Loc::Buf(0)) => (quote!(x), quote!(b0), false),
            (Loc::Input, _) => (quote!(x), quote!(b1), false),
            (Loc::Buf(0), Loc::Buf(1)) => (quote!(b0), quote!(b1), false),
            (Loc::Buf(1), Loc::Buf(0)) => (quote!(b1), quote!(b0), false),
            (Loc::Buf(0), _) => (quote!(b0), quote!(b0), true),
            (_, _) => (quote!(b1), quote!(b1), true),
        };
        let cx = StepCx {
            index: i,
            fused: s.fused,
            g: format_ident!("G{}", i),
            n_out: lit(s.out_len),
            path_doc: format!("step {i}: {}", s.path),
            src,
            dst,
            in_place,
            in_lanes,
            params: s.params.clone(),
        };
        match &s.op {
            Op::Conv2d { bias, geom: cg } => self.conv2d(&cx, *bias, cg),
            Op::Pool2d { kind, geom: pg } => self.pool2d(&cx, *kind, pg),
            Op::AdaptiveAvgPool2d(ag) => self.adaptive_avg_pool2d(&cx, ag),
            Op::BatchNorm2d { eps, geom: bg, .. } => self.batch_norm2d(&cx, *eps, bg),
            Op::Activation { act, .. } => self.activation(&cx, *act),
            Op::Linear { geom: lg, bias } => self.linear(&cx, lg, *bias),
            &Op::Softmax {
                log,
                outer,
                axis,
                inner,
            } => self.softmax(&cx, log, outer, axis, inner),
            Op::Dropout { .. } | Op::Flatten { .. } => {}
        }
    }

    /// Calls a packed convolution (and its lane form in the lane prefix).
    fn conv2d(&mut self, cx: &StepCx, bias: bool, cg: &Conv2dGeom) {
        let rt = &self.rt.clone();
        let g = &cx.g;
        let n_out = &cx.n_out;
        let src = &cx.src;
        let dst = &cx.dst;
        let in_lanes = cx.in_lanes;
        let t = |j: usize| tfield(cx.params[j]);
        let f = format_ident!("conv{}", cx.index);
        let geom = conv_geom_tokens(rt, cg);
        self.geom_const(cx, quote!(Conv2dGeom), geom);
        let act = act_tokens(rt, cx.fused);
        let w = t(0);
        let b = if bias {
            let bf = t(1);
            quote!(Some(&tensors.#bf[..]))
        } else {
            quote!(None)
        };
        self.conv_fields.push(quote!(#f: #rt::PackedConv));
        self.conv_inits
            .push(quote!(#f: #rt::PackedConv::new(&Self::#g, &tensors.#w, #b, #act)));
        self.conv_scratch
            .push(quote!(self.convs.#f.scratch_len(batch, threads)));
        let n_in = lit(cg.in_len());
        self.body.push(quote! {
            convs.#f.run(batch, &#src[..#n_in * batch], &mut #dst[..#n_out * batch], scratch);
        });
        if in_lanes {
            let (ls, ld) = (lbuf(self.lcur), lbuf(1 - self.lcur));
            self.lane_scratch
                .push(quote!(#rt::lanes::conv2d_lanes_scratch_len(&Self::#g)));
            self.lane_body.push(quote! {
                #rt::lanes::conv2d_lanes(&Self::#g, slots, &#ls[..#n_in * lb], &tensors.#w, #b, #act, &mut #ld[..#n_out * lb], scratch);
            });
            self.lcur = 1 - self.lcur;
        }
    }

    /// Calls max or average pooling (max pooling also on lanes).
    fn pool2d(&mut self, cx: &StepCx, kind: PoolKind, pg: &Pool2dGeom) {
        let rt = &self.rt.clone();
        let g = &cx.g;
        let n_out = &cx.n_out;
        let src = &cx.src;
        let dst = &cx.dst;
        let in_lanes = cx.in_lanes;
        let geom = pool_geom_tokens(rt, pg);
        self.geom_const(cx, quote!(Pool2dGeom), geom);
        let f = if kind == PoolKind::Max {
            quote!(max_pool2d)
        } else {
            quote!(avg_pool2d)
        };
        let n_in = lit(pg.in_len());
        self.body.push(quote! {
            #rt::kernels::#f(&Self::#g, batch, &#src[..#n_in * batch], &mut #dst[..#n_out * batch]);
        });
        if in_lanes {
            let (ls, ld) = (lbuf(self.lcur), lbuf(1 - self.lcur));
            self.lane_body.push(quote! {
                #rt::lanes::max_pool2d_lanes(&Self::#g, slots, &#ls[..#n_in * lb], &mut #ld[..#n_out * lb]);
            });
            self.lcur = 1 - self.lcur;
        }
    }

    /// Calls adaptive average pooling.
    fn adaptive_avg_pool2d(&mut self, cx: &StepCx, ag: &AdaptivePoolGeom) {
        let rt = &self.rt.clone();
        let g = &cx.g;
        let n_out = &cx.n_out;
        let src = &cx.src;
        let dst = &cx.dst;
        let geom = adaptive_geom_tokens(rt, ag);
        self.geom_const(cx, quote!(AdaptivePoolGeom), geom);
        let n_in = lit(ag.channels * ag.in_h * ag.in_w);
        self.body.push(quote! {
            #rt::kernels::adaptive_avg_pool2d(&Self::#g, batch, &#src[..#n_in * batch], &mut #dst[..#n_out * batch]);
        });
    }

    /// Calls batch norm with running statistics, in place.
    fn batch_norm2d(&mut self, cx: &StepCx, eps: f32, bg: &BatchNormGeom) {
        let rt = &self.rt.clone();
        let g = &cx.g;
        let n_out = &cx.n_out;
        let dst = &cx.dst;
        let t = |j: usize| tfield(cx.params[j]);
        let geom = batch_norm_geom_tokens(rt, bg);
        let eps = f32_tokens(eps);
        self.geom_const(cx, quote!(BatchNormGeom), geom);
        let (w, b, m, v) = (t(0), t(1), t(2), t(3));
        let copy = cx.copy_in();
        self.body.push(quote! {
            #copy
            #rt::kernels::batch_norm2d_inplace(&Self::#g, batch, &mut #dst[..#n_out * batch], &#rt::kernels::BatchNormParams {
                mean: &tensors.#m, var: &tensors.#v, gamma: Some(&tensors.#w), beta: Some(&tensors.#b), eps: #eps,
            });
        });
    }

    /// Calls an activation in place (also on lanes).
    fn activation(&mut self, cx: &StepCx, act: Activation) {
        let rt = &self.rt;
        let n_out = &cx.n_out;
        let dst = &cx.dst;
        let in_lanes = cx.in_lanes;
        let copy = cx.copy_in();
        let act_call = |buf: &TokenStream, n: TokenStream| match act {
            Activation::Relu => quote!(#rt::kernels::relu_inplace(&mut #buf[..#n])),
            Activation::LeakyRelu(a) => {
                let a = f32_tokens(a);
                quote!(#rt::kernels::leaky_relu_inplace(#a, &mut #buf[..#n]))
            }
            Activation::Sigmoid => quote!(#rt::kernels::sigmoid_inplace(&mut #buf[..#n])),
            Activation::Tanh => quote!(#rt::kernels::tanh_inplace(&mut #buf[..#n])),
            Activation::Gelu => quote!(#rt::kernels::gelu_inplace(&mut #buf[..#n])),
        };
        let call = act_call(dst, quote!(#n_out * batch));
        if in_lanes {
            // Element-wise: the zero lanes of missing images stay harmless.
            let c = act_call(&lbuf(self.lcur), quote!(#n_out * lb));
            self.lane_body.push(quote!(#c;));
        }
        self.body.push(quote! {
            #copy
            #call;
        });
    }

    /// Calls the fully connected kernel.
    fn linear(&mut self, cx: &StepCx, lg: &LinearGeom, bias: bool) {
        let rt = &self.rt.clone();
        let g = &cx.g;
        let n_out = &cx.n_out;
        let src = &cx.src;
        let dst = &cx.dst;
        let t = |j: usize| tfield(cx.params[j]);
        let geom = linear_geom_tokens(rt, lg);
        let fi = lit(lg.in_features);
        self.geom_const(cx, quote!(LinearGeom), geom);
        let w = t(0);
        let b = if bias {
            let bf = t(1);
            quote!(Some(&tensors.#bf[..]))
        } else {
            quote!(None)
        };
        self.body.push(quote! {
            #rt::kernels::linear(&Self::#g, batch, &#src[..#fi * batch], &tensors.#w, #b, &mut #dst[..#n_out * batch]);
        });
    }

    /// Calls softmax or log-softmax over one axis.
    fn softmax(&mut self, cx: &StepCx, log: bool, outer: usize, axis: usize, inner: usize) {
        let rt = &self.rt;
        let n_out = &cx.n_out;
        let src = &cx.src;
        let dst = &cx.dst;
        let [o, a, inn] = [outer, axis, inner].map(lit);
        let call = if inner == 1 {
            if log {
                quote!(#rt::kernels::log_softmax(batch * #o, #a, &#src[..#n_out * batch], &mut #dst[..#n_out * batch]))
            } else {
                quote!(#rt::kernels::softmax(batch * #o, #a, &#src[..#n_out * batch], &mut #dst[..#n_out * batch]))
            }
        } else {
            let ln = if log {
                quote!(#dst[..#n_out * batch].iter_mut().for_each(|v| *v = v.ln());)
            } else {
                quote!()
            };
            quote!({ #rt::kernels::softmax_channels(batch * #o, #a, #inn, &#src[..#n_out * batch], &mut #dst[..#n_out * batch]); #ln })
        };
        self.body.push(quote! {
            #call;
        });
    }
}
