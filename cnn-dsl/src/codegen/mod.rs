//! Code generation: a checked model's [`Plan`] as specialised Rust.
//!
//! The generated struct has its sizes as constants (`INPUT_SHAPE`, one `const` geometry per
//! kernel call), its parameters as fields, and a straight-line `forward` that calls the runtime's
//! kernels through `::cnn::__private` on two preallocated ping-pong buffers. The input and
//! output types carry the sizes (`&[[f32; 784]]` → `&[[f32; 10]]`), so `forward` needs no shape
//! checks at run time; `forward_array` checks an ndarray's trailing dimensions once.
//! The same emitter serves `cnnc gen`, the `cnn!` macro and the build.rs [`crate::build`] API.

use crate::check::{Activation, CheckedModel, Op, TensorRole};
use crate::geom::{AdaptivePoolGeom, BatchNormGeom, Conv2dGeom, LinearGeom, Pool2dGeom};
use crate::ir::PoolKind;
use crate::plan::{Loc, Mode, Plan, plan};
use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};

mod steps;

/// Options for the emitted code.
#[derive(Debug, Clone)]
pub struct Options {
    /// Path of the runtime support module (`::cnn::__private`).
    pub runtime: TokenStream,
    /// Where the spec came from, for the header comment.
    pub source_name: String,
    /// Emit the training plan and `trainer()` (needs the runtime's `train` feature).
    pub training: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runtime: quote!(::cnn::__private),
            source_name: String::from("<inline>"),
            training: true,
        }
    }
}

fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

/// `Conv2dGeom { … }` as a constant expression (every field a literal).
fn conv_geom_tokens(rt: &TokenStream, g: &Conv2dGeom) -> TokenStream {
    let Conv2dGeom {
        in_channels,
        in_h,
        in_w,
        out_channels,
        out_h,
        out_w,
        kernel_h,
        kernel_w,
        stride_h,
        stride_w,
        pad_top,
        pad_left,
        dilation_h,
        dilation_w,
        groups,
    } = *g;
    let [a, b, c, d, e, f, kh, kw, sh, sw, pt, pl, dh, dw, gr] = [
        in_channels,
        in_h,
        in_w,
        out_channels,
        out_h,
        out_w,
        kernel_h,
        kernel_w,
        stride_h,
        stride_w,
        pad_top,
        pad_left,
        dilation_h,
        dilation_w,
        groups,
    ]
    .map(lit);
    quote! {
        #rt::Conv2dGeom {
            in_channels: #a, in_h: #b, in_w: #c, out_channels: #d, out_h: #e, out_w: #f,
            kernel_h: #kh, kernel_w: #kw, stride_h: #sh, stride_w: #sw, pad_top: #pt, pad_left: #pl,
            dilation_h: #dh, dilation_w: #dw, groups: #gr,
        }
    }
}

/// `Pool2dGeom { … }` as a constant expression.
fn pool_geom_tokens(rt: &TokenStream, g: &Pool2dGeom) -> TokenStream {
    let Pool2dGeom {
        channels,
        in_h,
        in_w,
        out_h,
        out_w,
        kernel_h,
        kernel_w,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dilation_h,
        dilation_w,
        count_include_pad,
    } = *g;
    let [c, ih, iw, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw] = [
        channels, in_h, in_w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
        dilation_h, dilation_w,
    ]
    .map(lit);
    quote! {
        #rt::Pool2dGeom {
            channels: #c, in_h: #ih, in_w: #iw, out_h: #oh, out_w: #ow, kernel_h: #kh, kernel_w: #kw,
            stride_h: #sh, stride_w: #sw, pad_h: #ph, pad_w: #pw, dilation_h: #dh, dilation_w: #dw,
            count_include_pad: #count_include_pad,
        }
    }
}

/// `AdaptivePoolGeom { … }` as a constant expression.
fn adaptive_geom_tokens(rt: &TokenStream, g: &AdaptivePoolGeom) -> TokenStream {
    let AdaptivePoolGeom {
        channels,
        in_h,
        in_w,
        out_h,
        out_w,
    } = *g;
    let [c, ih, iw, oh, ow] = [channels, in_h, in_w, out_h, out_w].map(lit);
    quote!(#rt::AdaptivePoolGeom { channels: #c, in_h: #ih, in_w: #iw, out_h: #oh, out_w: #ow })
}

/// `BatchNormGeom { … }` as a constant expression.
fn batch_norm_geom_tokens(rt: &TokenStream, g: &BatchNormGeom) -> TokenStream {
    let BatchNormGeom { channels, spatial } = *g;
    let [c, sp] = [channels, spatial].map(lit);
    quote!(#rt::BatchNormGeom { channels: #c, spatial: #sp })
}

/// `LinearGeom { … }` as a constant expression.
fn linear_geom_tokens(rt: &TokenStream, g: &LinearGeom) -> TokenStream {
    let LinearGeom {
        in_features,
        out_features,
    } = *g;
    let [fi, fo] = [in_features, out_features].map(lit);
    quote!(#rt::LinearGeom { in_features: #fi, out_features: #fo })
}

fn act_tokens(rt: &TokenStream, a: Option<Activation>) -> TokenStream {
    match a {
        Some(Activation::Relu) => quote!(#rt::KernelActivation::Relu),
        Some(Activation::LeakyRelu(s)) => {
            let s = f32_tokens(s);
            quote!(#rt::KernelActivation::LeakyRelu(#s))
        }
        _ => quote!(#rt::KernelActivation::Identity),
    }
}

/// An `f32` as a constant expression: a literal (Rust prints the shortest string that reads
/// back to the same value), or its bits when it has no literal (infinite or NaN).
fn f32_tokens(x: f32) -> TokenStream {
    if x.is_finite() {
        let l = Literal::f32_suffixed(x);
        quote!(#l)
    } else {
        let bits = Literal::u32_suffixed(x.to_bits());
        quote!(f32::from_bits(#bits))
    }
}

/// `cnn_ir::checked::Activation` as an expression (names imported by [`plan_tokens`]).
fn ir_act_tokens(a: Activation) -> TokenStream {
    match a {
        Activation::Relu => quote!(Activation::Relu),
        Activation::LeakyRelu(s) => {
            let s = f32_tokens(s);
            quote!(Activation::LeakyRelu(#s))
        }
        Activation::Sigmoid => quote!(Activation::Sigmoid),
        Activation::Tanh => quote!(Activation::Tanh),
        Activation::Gelu => quote!(Activation::Gelu),
    }
}

/// A checked [`Op`] as an expression (names imported by [`plan_tokens`]); `geom` is the path of
/// the geometry structs.
fn op_tokens(geom: &TokenStream, op: &Op) -> TokenStream {
    match *op {
        Op::Conv2d { geom: g, bias } => {
            let g = conv_geom_tokens(geom, &g);
            quote!(Op::Conv2d { geom: #g, bias: #bias })
        }
        Op::Pool2d { kind, geom: g } => {
            let kind = match kind {
                PoolKind::Max => quote!(PoolKind::Max),
                PoolKind::Avg => quote!(PoolKind::Avg),
            };
            let g = pool_geom_tokens(geom, &g);
            quote!(Op::Pool2d { kind: #kind, geom: #g })
        }
        Op::AdaptiveAvgPool2d(g) => {
            let g = adaptive_geom_tokens(geom, &g);
            quote!(Op::AdaptiveAvgPool2d(#g))
        }
        Op::BatchNorm2d {
            geom: g,
            eps,
            momentum,
        } => {
            let g = batch_norm_geom_tokens(geom, &g);
            let [e, m] = [eps, momentum].map(f32_tokens);
            quote!(Op::BatchNorm2d { geom: #g, eps: #e, momentum: #m })
        }
        Op::Activation { act, len } => {
            let a = ir_act_tokens(act);
            let n = lit(len);
            quote!(Op::Activation { act: #a, len: #n })
        }
        Op::Dropout { p, len } => {
            let p = f32_tokens(p);
            let n = lit(len);
            quote!(Op::Dropout { p: #p, len: #n })
        }
        Op::Flatten { len } => {
            let n = lit(len);
            quote!(Op::Flatten { len: #n })
        }
        Op::Linear { geom: g, bias } => {
            let g = linear_geom_tokens(geom, &g);
            quote!(Op::Linear { geom: #g, bias: #bias })
        }
        Op::Softmax {
            log,
            outer,
            axis,
            inner,
        } => {
            let [o, a, i] = [outer, axis, inner].map(lit);
            quote!(Op::Softmax { log: #log, outer: #o, axis: #a, inner: #i })
        }
    }
}

fn loc_tokens(l: Loc) -> TokenStream {
    match l {
        Loc::Input => quote!(Loc::Input),
        Loc::Buf(k) => {
            let k = Literal::u32_unsuffixed(k);
            quote!(Loc::Buf(#k))
        }
    }
}

/// A [`Plan`] as a block expression under `ir` (the path of `cnn_ir`): what generated code embeds
/// instead of its spec, so the runtime can train it without the compiler.
pub fn plan_tokens(ir: &TokenStream, p: &Plan) -> TokenStream {
    let name = &p.name;
    let mode = match p.mode {
        Mode::Infer => quote!(Mode::Infer),
        Mode::Train => quote!(Mode::Train),
    };
    let dims = |d: &[usize]| {
        let d = d.iter().map(|x| lit(*x));
        quote!(::std::vec::Vec::from([#(#d),*]))
    };
    let (input_shape, output_shape) = (dims(&p.input_shape), dims(&p.output_shape));
    let tensors = p.tensors.iter().map(|t| {
        let name = &t.name;
        let shape = dims(&t.shape);
        let role = match t.role {
            TensorRole::Weight => quote!(Weight),
            TensorRole::Bias => quote!(Bias),
            TensorRole::RunningMean => quote!(RunningMean),
            TensorRole::RunningVar => quote!(RunningVar),
            TensorRole::NumBatchesTracked => quote!(NumBatchesTracked),
        };
        let fan_in = lit(t.fan_in);
        quote!(ParamTensor {
            name: ::std::string::String::from(#name), shape: #shape,
            role: TensorRole::#role, fan_in: #fan_in,
        })
    });
    let steps = p.steps.iter().map(|s| {
        let path = &s.path;
        let op = op_tokens(&quote!(#ir::geom), &s.op);
        let fused = match s.fused {
            Some(a) => {
                let a = ir_act_tokens(a);
                quote!(::std::option::Option::Some(#a))
            }
            None => quote!(::std::option::Option::None),
        };
        let (src, dst) = (loc_tokens(s.src), loc_tokens(s.dst));
        let params = dims(&s.params);
        let macs = Literal::u64_unsuffixed(s.macs);
        let (in_len, out_len) = (lit(s.in_len), lit(s.out_len));
        quote!(Step {
            path: ::std::string::String::from(#path), op: #op, fused: #fused, src: #src,
            dst: #dst, params: #params, macs: #macs, in_len: #in_len, out_len: #out_len,
        })
    });
    let buffer_len = lit(p.buffer_len);
    let output = loc_tokens(p.output);
    quote!({
        #[allow(unused_imports)]
        use #ir::{checked::{Activation, Op, ParamTensor, TensorRole}, ir::PoolKind, plan::{Loc, Mode, Plan, Step}};
        Plan {
        name: ::std::string::String::from(#name),
        mode: #mode,
        input_shape: #input_shape,
        output_shape: #output_shape,
        tensors: ::std::vec::Vec::from([#(#tensors),*]),
        steps: ::std::vec::Vec::from([#(#steps),*]),
        buffer_len: #buffer_len,
        output: #output,
    }})
}

/// Emits the model as tokens (not formatted): the specialised forward pass of its inference
/// plan, and its training plan as data with a `trainer()` that follows it.
pub fn tokens(model: &CheckedModel, opts: &Options) -> TokenStream {
    let rt = &opts.runtime;
    let name = Ident::new(model.name(), Span::call_site());
    let base = tokens_for_plan(
        &plan(model, Mode::Infer),
        &crate::summary::summary(model, false),
        opts,
    );
    if !opts.training {
        return base;
    }
    let ir = quote!(#rt::ir);
    let train_plan = plan_tokens(&ir, &plan(model, Mode::Train));
    quote! {
        #base

        impl #name {
            /// The training plan (`cnn_ir::plan::plan(model, Mode::Train)`), as the compiler
            /// made it: one step per layer, with every size resolved.
            pub fn train_plan() -> #ir::plan::Plan #train_plan

            /// A trainer (forward, backward, optimizer) starting from this model's weights.
            /// After training, [`Self::load_trained`] copies the weights back.
            pub fn trainer(&self, optimizer: ::std::boxed::Box<dyn #rt::Optimizer + Send>, seed: u64, threads: usize) -> ::std::result::Result<#rt::Trainer, #rt::Error> {
                #rt::trainer_for(Self::train_plan(), &self.weights()?, optimizer, seed, threads)
            }

            /// Replaces this model's weights with a trainer's.
            pub fn load_trained(&mut self, trainer: &#rt::Trainer) -> ::std::result::Result<(), #rt::Error> {
                let w = trainer.weights()?;
                *self = Self::from_weights(&w)?;
                Ok(())
            }
        }
    }
}

/// Emits a plan as tokens; `summary` becomes `SUMMARY`.
pub fn tokens_for_plan(p: &Plan, summary: &str, opts: &Options) -> TokenStream {
    let rt = &opts.runtime;
    let name = Ident::new(&p.name, Span::call_site());
    let input_len = lit(p.input_len());
    let output_len = lit(p.output_len());
    let in_shape: Vec<Literal> = p.input_shape.iter().map(|d| lit(*d)).collect();
    let out_shape: Vec<Literal> = p.output_shape.iter().map(|d| lit(*d)).collect();
    let in_rank = lit(p.input_shape.len());
    let out_rank = lit(p.output_shape.len());
    let buf_len = lit(p.buffer_len.max(p.output_len()));
    let param_count: usize = p
        .tensors
        .iter()
        .filter(|t| t.role.trainable())
        .map(|t| t.numel())
        .sum();
    let param_count = lit(param_count);

    // Parameter tensors: one field each, named after the state_dict key.
    let tfield = steps::tfield;
    let tensor_names: Vec<&str> = p.tensors.iter().map(|t| t.name.as_str()).collect();
    let tensor_shapes: Vec<TokenStream> = p
        .tensors
        .iter()
        .map(|t| {
            let dims = t.shape.iter().map(|d| lit(*d));
            quote!(&[#(#dims),*])
        })
        .collect();
    let tensor_kinds: Vec<TokenStream> = p
        .tensors
        .iter()
        .map(|t| {
            use crate::check::TensorRole::*;
            match t.role {
                Weight => quote!(#rt::ParamKind::Weight),
                Bias => quote!(#rt::ParamKind::Bias),
                RunningMean => quote!(#rt::ParamKind::RunningMean),
                RunningVar => quote!(#rt::ParamKind::RunningVar),
                NumBatchesTracked => quote!(#rt::ParamKind::NumBatchesTracked),
            }
        })
        .collect();
    let n_tensors = lit(p.tensors.len());

    // The lane path of the leading steps (see `Plan::lane_prefix`): `lane_body` runs them on
    // the two lane buffers `l0`/`l1`, for batches that fill slots of 16; `body[..lane_end]`
    // stays the image-major path for the others.
    let lane_end = p.lane_prefix();
    let mut emitted = steps::Steps::new(rt.clone());
    for (i, s) in p.steps.iter().enumerate() {
        emitted.step(i, s, i < lane_end);
    }
    let steps::Steps {
        consts,
        conv_fields,
        conv_inits,
        conv_scratch,
        body,
        lane_body,
        lane_scratch,
        lcur,
        ..
    } = emitted;
    let out_buf = match p.output {
        Loc::Buf(1) => quote!(b1),
        _ => quote!(b0),
    };
    let lane_len = lit(p.lane_len());
    let (image_prefix, image_rest) = body.split_at(lane_end);
    let steps = if lane_end == 0 {
        quote!(#(#body)*)
    } else {
        let last = &p.steps[lane_end - 1];
        let n_last = lit(last.out_len);
        let lfinal = steps::lbuf(lcur);
        let bfinal = match last.dst {
            Loc::Buf(1) => quote!(b1),
            _ => quote!(b0),
        };
        quote! {
            if #rt::lanes_pay(batch) {
                let slots = #rt::lanes::lane_slots(batch);
                let lb = slots * #rt::lanes::LANES;
                let [l0, l1] = lanes;
                #rt::lanes::to_lanes(batch, #input_len, x, &mut l0[..#input_len * lb]);
                #(#lane_body)*
                #rt::lanes::from_lanes(batch, #n_last, &#lfinal[..#n_last * lb], &mut #bfinal[..#n_last * batch]);
            } else {
                #(#image_prefix)*
            }
            #(#image_rest)*
        }
    };
    let lane_reserve = if lane_end == 0 {
        quote!()
    } else {
        quote! {
            if batch >= #rt::lanes::LANES {
                let lb = #rt::lanes::lane_slots(batch) * #rt::lanes::LANES;
                for l in &mut self.lanes {
                    l.grow(Self::LANE_LEN * lb);
                }
                let lane_need = [#(#lane_scratch),*].into_iter().max().unwrap_or(0);
                self.scratch.grow(lane_need);
            }
        }
    };
    let copy_input_if_no_steps = if p.output == Loc::Input {
        quote!(b0[..#output_len * batch].copy_from_slice(&x[..#output_len * batch]);)
    } else {
        quote!()
    };
    let tensor_fields: Vec<Ident> = (0..p.tensors.len()).map(tfield).collect();
    let tensor_idx: Vec<Literal> = (0..p.tensors.len()).map(lit).collect();
    let tensors_struct = format_ident!("{}Tensors", p.name);
    let convs_struct = format_ident!("{}Convs", p.name);
    let doc = format!(
        "The `{}` model, generated by cnn from `{}`.\n\n```text\n{}```",
        p.name, opts.source_name, summary
    );
    let tensors_doc = format!(
        "Parameters of [`{}`], one field per `state_dict` entry, in order.",
        p.name
    );
    let convs_doc = format!("Packed convolution kernels of [`{}`].", p.name);
    let field_docs: Vec<String> = p
        .tensors
        .iter()
        .map(|t| format!("`{}` {:?}", t.name, t.shape))
        .collect();
    let unused_scratch = if conv_scratch.is_empty() {
        quote!(let _ = threads;)
    } else {
        quote!()
    };
    let scratch_expr = if conv_scratch.is_empty() {
        quote!(0usize)
    } else {
        quote!([#(#conv_scratch),*].into_iter().max().unwrap_or(0))
    };
    // The memory figures as constants users can assert on; weights no 64-bit address space can
    // hold are a compile error where the code is compiled.
    let weight_bytes: u128 = p.tensors.iter().map(|t| t.numel() as u128 * 4).sum();
    let too_big = if weight_bytes > isize::MAX as u128 {
        let msg = format!(
            "model `{}` needs {weight_bytes} bytes of weights, more than a 64-bit address space can hold",
            p.name
        );
        quote!(::core::compile_error!(#msg);)
    } else {
        quote!()
    };
    let weight_bytes = Literal::u64_unsuffixed(u64::try_from(weight_bytes).unwrap_or(u64::MAX));
    let buffer_bytes = Literal::u64_unsuffixed(
        u64::try_from(p.buffer_len.max(p.output_len()) as u128 * 8).unwrap_or(u64::MAX),
    );
    quote! {
        #too_big

        #[doc = #doc]
        pub struct #name {
            tensors: #tensors_struct,
            convs: #convs_struct,
            bufs: [#rt::AlignedBuf; 2],
            /// Lane buffers of the leading steps (empty when the model has no lane prefix).
            lanes: [#rt::AlignedBuf; 2],
            scratch: #rt::AlignedBuf,
            capacity: usize,
            threads: usize,
        }

        #[doc = #tensors_doc]
        #[derive(Debug, Clone)]
        pub struct #tensors_struct {
            #(
                #[doc = #field_docs]
                pub #tensor_fields: ::std::vec::Vec<f32>,
            )*
        }

        #[doc = #convs_doc]
        #[derive(Debug, Clone)]
        struct #convs_struct {
            #(#conv_fields,)*
        }

        impl ::std::fmt::Debug for #name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!(#name)).field("capacity", &self.capacity).finish_non_exhaustive()
            }
        }

        impl #name {
            /// Per-image input shape (batch implicit).
            pub const INPUT_SHAPE: [usize; #in_rank] = [#(#in_shape),*];
            /// Per-image output shape.
            pub const OUTPUT_SHAPE: [usize; #out_rank] = [#(#out_shape),*];
            /// Elements of one input image.
            pub const INPUT_LEN: usize = #input_len;
            /// Elements of one output.
            pub const OUTPUT_LEN: usize = #output_len;
            /// Trainable parameters.
            pub const PARAMS: usize = #param_count;
            /// Bytes of the `state_dict` (parameters and buffers, `f32`), as `cnnc` counts them
            /// for `--max-memory`; e.g. `const _: () = assert!(Model::WEIGHT_BYTES < 1 << 30);`.
            pub const WEIGHT_BYTES: u64 = #weight_bytes;
            /// Bytes per image of the two activation buffers `forward` keeps (scratch and the
            /// packed convolution weights come on top).
            pub const BUFFER_BYTES_PER_IMAGE: u64 = #buffer_bytes;
            /// The `cnnc summary` table of this model.
            pub const SUMMARY: &'static str = #summary;
            /// Per-image length of each activation buffer.
            const BUF_LEN: usize = #buf_len;
            /// Per-image length of each lane buffer (0: no lane prefix).
            #[allow(dead_code)]
            const LANE_LEN: usize = #lane_len;
            /// `state_dict` names in order.
            pub const TENSOR_NAMES: [&'static str; #n_tensors] = [#(#tensor_names),*];
            #(#consts)*

            /// Trainable parameter count.
            pub const fn param_count() -> usize {
                Self::PARAMS
            }

            /// The summary table (same as `cnnc summary`).
            pub fn summary() -> &'static str {
                Self::SUMMARY
            }

            /// The `state_dict` entries this model expects (names, PyTorch shapes, kinds).
            pub fn param_specs() -> ::std::vec::Vec<#rt::ParamSpec> {
                let shapes: [&[usize]; #n_tensors] = [#(#tensor_shapes),*];
                let kinds: [#rt::ParamKind; #n_tensors] = [#(#tensor_kinds),*];
                Self::TENSOR_NAMES.iter().zip(shapes).zip(kinds).map(|((n, s), k)| #rt::ParamSpec::new(*n, s.to_vec(), k)).collect()
            }

            /// Builds the model from weights whose names and shapes were checked against
            /// [`Self::param_specs`].
            pub fn from_weights(weights: &#rt::Weights) -> ::std::result::Result<Self, #rt::Error> {
                #rt::check_weights(weights, &Self::param_specs())?;
                let tensors = #tensors_struct {
                    #( #tensor_fields: weights.get(Self::TENSOR_NAMES[#tensor_idx]).map(<[f32]>::to_vec).unwrap_or_default(), )*
                };
                Ok(Self::from_tensors(tensors))
            }

            fn from_tensors(tensors: #tensors_struct) -> Self {
                let convs = #convs_struct { #(#conv_inits,)* };
                Self { tensors, convs, bufs: [#rt::AlignedBuf::default(), #rt::AlignedBuf::default()], lanes: [#rt::AlignedBuf::default(), #rt::AlignedBuf::default()], scratch: #rt::AlignedBuf::default(), capacity: 0, threads: 0 }
            }

            /// Loads a safetensors file with PyTorch `state_dict` names; every missing, extra,
            /// mis-shaped or mistyped tensor is reported at once.
            pub fn from_safetensors(path: impl ::std::convert::AsRef<::std::path::Path>) -> ::std::result::Result<Self, #rt::Error> {
                let w = #rt::load_weights(path.as_ref(), &Self::param_specs())?;
                Self::from_weights(&w)
            }

            /// PyTorch's default initialisation, from `seed`.
            pub fn init(seed: u64) -> ::std::result::Result<Self, #rt::Error> {
                let w = #rt::default_weights(&Self::param_specs(), seed)?;
                Self::from_weights(&w)
            }

            /// The current weights, `state_dict` order.
            pub fn weights(&self) -> ::std::result::Result<#rt::Weights, #rt::Error> {
                let t = &self.tensors;
                #rt::make_weights(&Self::param_specs(), ::std::vec![#(t.#tensor_fields.clone()),*])
            }

            /// Sizes the buffers for `batch` images under the current rayon pool; `forward`
            /// calls it, so only the first call at a larger batch allocates.
            pub fn reserve(&mut self, batch: usize) {
                let threads = #rt::current_num_threads();
                if batch <= self.capacity && threads <= self.threads {
                    return;
                }
                let batch = batch.max(self.capacity);
                #unused_scratch
                let need = #scratch_expr;
                self.scratch.grow(need);
                for b in &mut self.bufs {
                    b.grow(Self::BUF_LEN * batch);
                }
                #lane_reserve
                self.capacity = batch;
                self.threads = threads.max(self.threads);
            }

            /// Runs a batch. The sizes are in the types, so nothing is checked at run time.
            pub fn forward(&mut self, input: &[[f32; #input_len]]) -> &[[f32; #output_len]] {
                let batch = input.len();
                self.reserve(batch);
                let x: &[f32] = input.as_flattened();
                let Self { tensors, convs, bufs, scratch, lanes, .. } = self;
                let _ = (&tensors, &convs, &scratch, &lanes);
                let [b0, b1] = bufs;
                #copy_input_if_no_steps
                #steps
                let out: &[f32] = &#out_buf[..#output_len * batch];
                out.as_chunks::<#output_len>().0
            }

            /// Runs an ndarray batch `[N, …INPUT_SHAPE]`, checking its trailing dimensions.
            pub fn forward_array(&mut self, input: #rt::ndarray::ArrayViewD<'_, f32>) -> ::std::result::Result<#rt::ndarray::ArrayD<f32>, #rt::Error> {
                let batch = #rt::check_batch_shape(input.shape(), &Self::INPUT_SHAPE)?;
                let flat = #rt::contiguous(&input);
                let samples: &[[f32; #input_len]] = flat.as_chunks::<#input_len>().0;
                let out = self.forward(samples).as_flattened().to_vec();
                let mut shape = ::std::vec![batch];
                shape.extend_from_slice(&Self::OUTPUT_SHAPE);
                #rt::array_from(shape, out)
            }
        }
    }
}

/// Formatted source with a header, from tokens.
pub fn format(ts: TokenStream, source_name: &str) -> Result<String, syn::Error> {
    let file: syn::File = syn::parse2(ts)?;
    let body = prettyplease::unparse(&file);
    Ok(format!(
        "// @generated by cnn-dsl {} from `{}`: do not edit; change the spec and regenerate.\n\n{body}",
        env!("CARGO_PKG_VERSION"),
        source_name
    ))
}

/// Emits formatted source with a `// @generated` header.
pub fn source(model: &CheckedModel, opts: &Options) -> Result<String, syn::Error> {
    format(tokens(model, opts), &opts.source_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SourceMap, compile_source};

    #[test]
    fn weights_no_address_space_holds_are_a_compile_error() {
        // 2³¹ × 2³¹ weights, 2⁶⁵ bytes: the spec checks, the generated code must not compile.
        let text = "model Vast(input = [2147483648]) { linear(2147483648, 2147483648) }";
        let m = compile_source(&mut SourceMap::new(), "m.cnn", text).unwrap();
        let src = source(&m, &Options::default()).expect("formats");
        assert!(
            src.contains("compile_error!(\n") || src.contains("compile_error!("),
            "{src}"
        );
        assert!(
            src.contains("more than a 64-bit address space can hold"),
            "{src}"
        );
        let small = compile_source(
            &mut SourceMap::new(),
            "m.cnn",
            "model S(input = [4]) { linear(4, 2) }",
        )
        .unwrap();
        assert!(
            !source(&small, &Options::default())
                .unwrap()
                .contains("compile_error")
        );
    }

    #[test]
    fn a_slope_without_an_f32_literal_is_emitted_by_its_bits() {
        // 1e300 checks (PyTorch takes any float) but is infinite as f32, which has no literal.
        let text = "model M(input = [1, 4, 4]) { conv2d(1, 2, 3), leaky_relu(negative_slope = 1e300), flatten, linear(8, 2) }";
        let m = compile_source(&mut SourceMap::new(), "m.cnn", text).unwrap();
        let src = source(&m, &Options::default()).expect("formats");
        assert!(src.contains("f32::from_bits(2139095040u32)"), "{src}");
    }

    #[test]
    fn seed_model_source_has_constants_and_formats() {
        let text = include_str!("../../../examples/models/seed.yaml");
        let m = compile_source(&mut SourceMap::new(), "seed.yaml", text).unwrap();
        let src = source(
            &m,
            &Options {
                source_name: "seed.yaml".into(),
                ..Options::default()
            },
        )
        .unwrap();
        assert!(src.starts_with("// @generated"));
        assert!(src.contains("pub const INPUT_SHAPE: [usize; 3] = [1, 28, 28];"));
        assert!(src.contains("pub fn forward(&mut self, input: &[[f32; 784]]) -> &[[f32; 10]]"));
        assert!(src.contains("out_channels: 64"));
        assert!(src.contains("\"conv2.2.weight\""));
    }
}
