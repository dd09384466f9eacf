//! Conv backward on the seed model's layers at batch 64: GFLOP/s of `conv2d_backward` and its
//! speed-up over the direct-loop `conv2d_backward_reference`, and (on AVX-512) the same backward
//! on lane tensors (`conv2d_backward_lanes`, the trainer's path) as a ratio to the image path.
//!
//! `cargo bench -p cnn-runtime --bench grad` prints a table first (median of timed runs, 1 and
//! 2 threads, reference timed once), then criterion's own measurements, whose throughput
//! ("elem/s") counts FLOPs (2 per multiply-add; the weight gradient and, except for the first
//! layer, the input gradient each cost one forward's worth).
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use cnn_runtime::geom::{Conv2dGeom, LinearGeom, Pool2dGeom};
use cnn_runtime::grad::{
    conv2d_backward, conv2d_backward_lanes, conv2d_backward_lanes_scratch_len,
    conv2d_backward_reference, conv2d_backward_scratch_len, linear_backward, max_pool2d_backward,
    relu_backward_inplace, softmax_cross_entropy,
};
use cnn_runtime::kernels::max_pool2d_train_forward;
use cnn_runtime::lanes::{LANES, conv2d_lanes_usable, lane_slots, to_lanes};
use cnn_runtime::optim::{Optimizer, Sgd};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BATCH: usize = 64;

fn conv(cin: usize, cout: usize, hw: usize) -> Conv2dGeom {
    Conv2dGeom {
        in_channels: cin,
        in_h: hw,
        in_w: hw,
        out_channels: cout,
        out_h: hw,
        out_w: hw,
        kernel_h: 5,
        kernel_w: 5,
        stride_h: 1,
        stride_w: 1,
        pad_top: 2,
        pad_left: 2,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
    }
}

/// The seed layers; the first needs no input gradient.
fn layers() -> [(&'static str, Conv2dGeom, bool); 4] {
    [
        ("conv1_1x16_28", conv(1, 16, 28), false),
        ("conv2_16x32_14", conv(16, 32, 14), true),
        ("conv3_32x32_14", conv(32, 32, 14), true),
        ("conv4_32x64_7", conv(32, 64, 7), true),
    ]
}

/// Multiply-adds of one forward pass counting padding taps (how PyTorch's figures count).
fn flops(g: &Conv2dGeom, d_input: bool) -> u64 {
    let macs = (g.out_len() * g.in_channels / g.groups * g.kernel_h * g.kernel_w * BATCH) as u64;
    2 * macs * if d_input { 2 } else { 1 }
}

struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    dy: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
    scratch: Vec<f32>,
}

impl Data {
    fn new(g: &Conv2dGeom) -> Self {
        let fill = |n: usize, k: u32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(k) >> 8) as f32
                        / (1 << 24) as f32
                        - 0.5
                })
                .collect()
        };
        Self {
            x: fill(BATCH * g.in_len(), 1),
            w: fill(g.weight_len(), 2),
            dy: fill(BATCH * g.out_len(), 3),
            dx: vec![0.0; BATCH * g.in_len()],
            dw: vec![0.0; g.weight_len()],
            db: vec![0.0; g.out_channels],
            scratch: vec![0.0; conv2d_backward_scratch_len(g, BATCH)],
        }
    }

    fn fast(&mut self, g: &Conv2dGeom, d_input: bool) {
        conv2d_backward(
            g,
            BATCH,
            &self.x,
            &self.w,
            &self.dy,
            d_input.then_some(&mut self.dx[..]),
            &mut self.dw,
            Some(&mut self.db),
            &mut self.scratch,
        );
        black_box(&self.dw);
    }

    /// The same backward on lane tensors (the trainer's path on AVX-512), if available: the
    /// operands converted once, outside the timing.
    fn lanes(&self, g: &Conv2dGeom) -> Option<impl FnMut(bool) + Send + use<>> {
        if !conv2d_lanes_usable(g) {
            return None;
        }
        let slots = lane_slots(BATCH);
        let conv = |v: &[f32], len: usize| {
            let mut l = vec![0.0; slots * len * LANES];
            to_lanes(BATCH, len, v, &mut l);
            l
        };
        let (x, dy) = (conv(&self.x, g.in_len()), conv(&self.dy, g.out_len()));
        let (w, g) = (self.w.clone(), *g);
        let mut dx = vec![0.0; x.len()];
        let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; g.out_channels]);
        let mut scratch = vec![0.0; conv2d_backward_lanes_scratch_len(&g, slots)];
        Some(move |d_input: bool| {
            conv2d_backward_lanes(
                &g,
                slots,
                &x,
                &w,
                &dy,
                d_input.then_some(&mut dx[..]),
                &mut dw,
                Some(&mut db),
                &mut scratch,
            );
            black_box(&dw);
        })
    }

    fn reference(&mut self, g: &Conv2dGeom, d_input: bool) {
        conv2d_backward_reference(
            g,
            BATCH,
            &self.x,
            &self.w,
            &self.dy,
            d_input.then_some(&mut self.dx[..]),
            &mut self.dw,
            Some(&mut self.db),
        );
        black_box(&self.dw);
    }
}

/// CPU time of the calling thread (Linux `schedstat`), so figures survive a busy machine;
/// `None` elsewhere.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        s.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Mean CPU time of `f` on a one-thread pool over `reps` calls (the kernel's tick-granular
/// counter is only good for totals); wall time if CPU time is unavailable.
fn mean_cpu_1thread(pool: &rayon::ThreadPool, mut f: impl FnMut() + Send, reps: u32) -> Duration {
    pool.install(|| {
        f();
        let (c, w) = (thread_cpu(), Instant::now());
        for _ in 0..reps {
            f();
        }
        match (c, thread_cpu()) {
            (Some(a), Some(b)) => (b - a) / reps,
            _ => w.elapsed() / reps,
        }
    })
}

/// User + system CPU time of the whole process (Linux `/proc/self/stat`, 100 Hz ticks).
fn process_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn median_time(mut f: impl FnMut(), reps: usize) -> Duration {
    f();
    let mut t: Vec<Duration> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[reps / 2]
}

fn table() {
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("pool")
    };
    let (p1, p2) = (pool(1), pool(2));
    println!(
        "conv2d_backward, batch {BATCH}: GFLOP/s (1 thread: CPU time of the worker; 2 threads: wall time) and speed-up over the direct-loop reference (1 thread)"
    );
    let (mut total1, mut total2) = (Duration::ZERO, Duration::ZERO);
    let (mut total_lanes, mut total_lanes2) = (Duration::ZERO, Duration::ZERO);
    for (name, g, dx) in layers() {
        let mut d = Data::new(&g);
        let t1 = mean_cpu_1thread(&p1, || d.fast(&g, dx), 40);
        let (c0, w0) = (process_cpu(), Instant::now());
        let t2 = p2.install(|| median_time(|| d.fast(&g, dx), 15));
        let busy = match (c0, process_cpu()) {
            (Some(a), Some(b)) => (b - a).as_secs_f64() / w0.elapsed().as_secs_f64(),
            _ => f64::NAN,
        };
        let s = Instant::now();
        d.reference(&g, dx);
        let tr = s.elapsed();
        let lanes = d.lanes(&g).map(|mut f| {
            let t1 = mean_cpu_1thread(&p1, || f(dx), 40);
            let t2 = p2.install(|| median_time(|| f(dx), 15));
            (t1, t2)
        });
        total1 += t1;
        total2 += t2;
        let gf = |t: Duration| flops(&g, dx) as f64 / t.as_secs_f64() / 1e9;
        if let Some((tl, tl2)) = lanes {
            total_lanes += tl;
            total_lanes2 += tl2;
            println!(
                "  {name:<16} lanes: {:>8.3} ms {:>6.1} GFLOP/s | {:>8.3} ms {:>6.1} GFLOP/s | {:.2}x / {:.2}x the image path",
                tl.as_secs_f64() * 1e3,
                gf(tl),
                tl2.as_secs_f64() * 1e3,
                gf(tl2),
                t1.as_secs_f64() / tl.as_secs_f64(),
                t2.as_secs_f64() / tl2.as_secs_f64()
            );
        }
        println!(
            "  {name:<16} {:>8.3} ms {:>6.1} GFLOP/s | {:>8.3} ms {:>6.1} GFLOP/s | cores busy {busy:.2} | reference {:>9.1} ms, {:>6.1}x slower than 1 thread",
            t1.as_secs_f64() * 1e3,
            gf(t1),
            t2.as_secs_f64() * 1e3,
            gf(t2),
            tr.as_secs_f64() * 1e3,
            tr.as_secs_f64() / t1.as_secs_f64(),
        );
    }
    let all: u64 = layers().iter().map(|(_, g, dx)| flops(g, *dx)).sum();
    println!(
        "  all four layers: {:.3} ms ({:.1} GFLOP/s) on 1 thread, {:.3} ms ({:.1} GFLOP/s) on 2 threads = {:.0} img/s of conv backward",
        total1.as_secs_f64() * 1e3,
        all as f64 / total1.as_secs_f64() / 1e9,
        total2.as_secs_f64() * 1e3,
        all as f64 / total2.as_secs_f64() / 1e9,
        BATCH as f64 / total2.as_secs_f64(),
    );
    if total_lanes > Duration::ZERO {
        println!(
            "  all four layers on lane tensors: {:.3} ms on 1 thread, {:.3} ms on 2 threads ({:.2}x / {:.2}x the image path)",
            total_lanes.as_secs_f64() * 1e3,
            total_lanes2.as_secs_f64() * 1e3,
            total1.as_secs_f64() / total_lanes.as_secs_f64(),
            total2.as_secs_f64() / total_lanes2.as_secs_f64()
        );
    }
    seed_table(&p1, &p2);
}

fn fill(n: usize, k: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(k.wrapping_mul(40_503))
                >> 8) as f32
                / (1 << 24) as f32
                - 0.5
        })
        .collect()
}

fn pool2(c: usize, hw: usize) -> Pool2dGeom {
    Pool2dGeom {
        channels: c,
        in_h: hw,
        in_w: hw,
        out_h: hw / 2,
        out_w: hw / 2,
        kernel_h: 2,
        kernel_w: 2,
        stride_h: 2,
        stride_w: 2,
        pad_h: 0,
        pad_w: 0,
        dilation_h: 1,
        dilation_w: 1,
        count_include_pad: true,
    }
}

/// A conv layer's geometry, weight, weight gradient and bias gradient.
type ConvParams = (Conv2dGeom, Vec<f32>, Vec<f32>, Vec<f32>);

/// Everything the seed model's backward pass and SGD update touch, for batch 64. Activations
/// are arbitrary numbers (the work does not depend on them).
struct Seed {
    convs: [ConvParams; 4],
    biases: [Vec<f32>; 4],
    scratch: Vec<f32>,
    x0: Vec<f32>,
    a: [Vec<f32>; 4], // post-ReLU conv outputs (ReLU masks)
    p1: Vec<f32>,
    p3: Vec<f32>,
    idx1: Vec<u32>,
    idx3: Vec<u32>,
    lin_w: Vec<f32>,
    lin_b: Vec<f32>,
    d_lin_w: Vec<f32>,
    d_lin_b: Vec<f32>,
    logits: Vec<f32>,
    labels: Vec<u8>,
    d_logits: Vec<f32>,
    g: [Vec<f32>; 4], // gradients w.r.t. the conv outputs
    d_p1: Vec<f32>,
    d_p3: Vec<f32>,
    opt: Sgd,
}

impl Seed {
    fn new() -> Self {
        let geoms = [
            conv(1, 16, 28),
            conv(16, 32, 14),
            conv(32, 32, 14),
            conv(32, 64, 7),
        ];
        let scratch = geoms
            .iter()
            .map(|g| conv2d_backward_scratch_len(g, BATCH))
            .max()
            .unwrap_or(0);
        let convs = geoms.map(|g| {
            (
                g,
                fill(g.weight_len(), 7),
                vec![0.0; g.weight_len()],
                vec![0.0; g.out_channels],
            )
        });
        let a = geoms.map(|g| fill(BATCH * g.out_len(), 11));
        let (q1, q3) = (pool2(16, 28), pool2(32, 14));
        let (mut p1, mut p3) = (
            vec![0.0; BATCH * q1.out_len()],
            vec![0.0; BATCH * q3.out_len()],
        );
        let (mut idx1, mut idx3) = (vec![0; p1.len()], vec![0; p3.len()]);
        max_pool2d_train_forward(&q1, BATCH, &a[0], &mut p1, &mut idx1);
        max_pool2d_train_forward(&q3, BATCH, &a[2], &mut p3, &mut idx3);
        Self {
            biases: geoms.map(|g| vec![0.0; g.out_channels]),
            g: geoms.map(|g| vec![0.0; BATCH * g.out_len()]),
            convs,
            scratch: vec![0.0; scratch],
            x0: fill(BATCH * 784, 1),
            a,
            d_p1: vec![0.0; p1.len()],
            d_p3: vec![0.0; p3.len()],
            p1,
            p3,
            idx1,
            idx3,
            lin_w: fill(10 * 3136, 5),
            lin_b: vec![0.0; 10],
            d_lin_w: vec![0.0; 10 * 3136],
            d_lin_b: vec![0.0; 10],
            logits: fill(BATCH * 10, 9),
            labels: (0..BATCH as u8).map(|i| i % 10).collect(),
            d_logits: vec![0.0; BATCH * 10],
            opt: Sgd::new(0.01).momentum(0.9),
        }
    }

    /// Loss gradient, backward through every layer, then one SGD-with-momentum step.
    fn backward_and_step(&mut self) {
        black_box(softmax_cross_entropy(
            &self.logits,
            &self.labels,
            10,
            &mut self.d_logits,
        ));
        let lin = LinearGeom {
            in_features: 3136,
            out_features: 10,
        };
        let [g1, g2, g3, g4] = &mut self.g;
        linear_backward(
            &lin,
            BATCH,
            &self.a[3],
            &self.lin_w,
            &self.d_logits,
            Some(g4),
            &mut self.d_lin_w,
            Some(&mut self.d_lin_b),
        );
        relu_backward_inplace(&self.a[3], g4);
        let [c1, c2, c3, c4] = &mut self.convs;
        let sc = &mut self.scratch;
        conv2d_backward(
            &c4.0,
            BATCH,
            &self.p3,
            &c4.1,
            g4,
            Some(&mut self.d_p3),
            &mut c4.2,
            Some(&mut c4.3),
            sc,
        );
        max_pool2d_backward(&pool2(32, 14), BATCH, &self.idx3, &self.d_p3, g3);
        relu_backward_inplace(&self.a[2], g3);
        conv2d_backward(
            &c3.0,
            BATCH,
            &self.a[1],
            &c3.1,
            g3,
            Some(&mut *g2),
            &mut c3.2,
            Some(&mut c3.3),
            sc,
        );
        relu_backward_inplace(&self.a[1], g2);
        conv2d_backward(
            &c2.0,
            BATCH,
            &self.p1,
            &c2.1,
            g2,
            Some(&mut self.d_p1),
            &mut c2.2,
            Some(&mut c2.3),
            sc,
        );
        max_pool2d_backward(&pool2(16, 28), BATCH, &self.idx1, &self.d_p1, g1);
        relu_backward_inplace(&self.a[0], g1);
        conv2d_backward(
            &c1.0,
            BATCH,
            &self.x0,
            &c1.1,
            g1,
            None,
            &mut c1.2,
            Some(&mut c1.3),
            sc,
        );
        let [b1, b2, b3, b4] = &mut self.biases;
        let mut params: Vec<&mut [f32]> = vec![
            &mut c1.1,
            b1,
            &mut c2.1,
            b2,
            &mut c3.1,
            b3,
            &mut c4.1,
            b4,
            &mut self.lin_w,
            &mut self.lin_b,
        ];
        let grads: Vec<&[f32]> = vec![
            &c1.2,
            &c1.3,
            &c2.2,
            &c2.3,
            &c3.2,
            &c3.3,
            &c4.2,
            &c4.3,
            &self.d_lin_w,
            &self.d_lin_b,
        ];
        self.opt.step(&mut params, &grads);
    }
}

fn seed_table(p1: &rayon::ThreadPool, p2: &rayon::ThreadPool) {
    let mut s = Seed::new();
    let t1 = mean_cpu_1thread(p1, || s.backward_and_step(), 20);
    let (c0, w0) = (process_cpu(), Instant::now());
    let t2 = p2.install(|| median_time(|| s.backward_and_step(), 15));
    let busy = match (c0, process_cpu()) {
        (Some(a), Some(b)) => (b - a).as_secs_f64() / w0.elapsed().as_secs_f64(),
        _ => f64::NAN,
    };
    println!(
        "seed model backward + SGD step, batch {BATCH}: {:.3} ms CPU on 1 thread ({:.0} img/s), {:.3} ms wall on 2 threads ({:.0} img/s, cores busy {busy:.2})",
        t1.as_secs_f64() * 1e3,
        BATCH as f64 / t1.as_secs_f64(),
        t2.as_secs_f64() * 1e3,
        BATCH as f64 / t2.as_secs_f64(),
    );
}

fn bench(c: &mut Criterion) {
    table();
    let mut group = c.benchmark_group("conv2d_backward_b64");
    group.sample_size(20);
    for (name, g, dx) in layers() {
        let mut d = Data::new(&g);
        group.throughput(Throughput::Elements(flops(&g, dx)));
        group.bench_function(name, |b| b.iter(|| d.fast(&g, dx)));
    }
    let mut s = Seed::new();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("seed_backward_and_sgd_step_img", |b| {
        b.iter(|| s.backward_and_step())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
