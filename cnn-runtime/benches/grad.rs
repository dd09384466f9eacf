//! Conv backward on the seed model's layers at batch 64: GFLOP/s of `conv2d_backward` and its
//! speed-up over the direct-loop `conv2d_backward_reference`.
//!
//! `cargo bench -p cnn-runtime --bench grad` prints a table first (median of timed runs, 1 and
//! 2 threads, reference timed once), then criterion's own measurements, whose throughput
//! ("elem/s") counts FLOPs (2 per multiply-add; the weight gradient and, except for the first
//! layer, the input gradient each cost one forward's worth).
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use cnn_runtime::geom::Conv2dGeom;
use cnn_runtime::grad::{conv2d_backward, conv2d_backward_reference, conv2d_backward_scratch_len};
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
        total1 += t1;
        total2 += t2;
        let gf = |t: Duration| flops(&g, dx) as f64 / t.as_secs_f64() / 1e9;
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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
