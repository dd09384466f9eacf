//! Forward kernels on the seed model's layers, at batch 1 and 64, on 1 and 2 threads.
//!
//! Throughput is in FLOP/s (criterion's "elem/s"; 2 FLOPs per multiply-add, padding taps
//! counted, as in `shared/bench/README.md`). `reference/*` runs the naive kernels at batch 1
//! on one thread for the speed-up ratio; `seed/forward` chains every layer like the model.
//!
//!     cargo bench -p cnn-runtime --bench kernels
//!     cargo bench -p cnn-runtime --bench kernels -- 'conv3'   # one layer
//!     CNN_ISA=avx2 cargo bench -p cnn-runtime --bench kernels -- 'lanes'   # lane vs pixel conv
//!
//! `lanes/*` times each seed convolution at batch 64 both ways: the pixel-vector kernel
//! (`PackedConv`, inference) and the lane kernel (`conv2d_lanes`, 16 images per slot, the
//! training path), with `CNN_ISA` choosing the instruction set of both.

use std::hint::black_box;
use std::time::Duration;

use cnn_runtime::geom::{Conv2dGeom, LinearGeom, Pool2dGeom};
use cnn_runtime::kernels::{self, Activation, PackedConv, reference};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn conv_geom(cin: usize, cout: usize, hw: usize) -> Conv2dGeom {
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

fn pool_geom(c: usize, hw: usize) -> Pool2dGeom {
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
        count_include_pad: false,
    }
}

fn conv_flops(g: &Conv2dGeom) -> u64 {
    2 * (g.out_len() * g.in_channels / g.groups * g.kernel_h * g.kernel_w) as u64
}

fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

/// The seed model's layers with their weights.
struct Seed {
    convs: Vec<(&'static str, PackedConv, Vec<f32>, Vec<f32>)>,
    pools: Vec<(&'static str, Pool2dGeom)>,
    fc: LinearGeom,
    fc_w: Vec<f32>,
    fc_b: Vec<f32>,
}

fn seed() -> Seed {
    let geoms = [
        ("conv1", conv_geom(1, 16, 28)),
        ("conv2", conv_geom(16, 32, 14)),
        ("conv3", conv_geom(32, 32, 14)),
        ("conv4", conv_geom(32, 64, 7)),
    ];
    let convs = geoms
        .iter()
        .enumerate()
        .map(|(i, (name, g))| {
            let w = values(g.weight_len(), i as u32 + 1);
            let b = values(g.out_channels, i as u32 + 11);
            let packed = PackedConv::new(g, &w, Some(&b), Activation::Relu);
            (*name, packed, w, b)
        })
        .collect();
    let fc = LinearGeom {
        in_features: 3136,
        out_features: 10,
    };
    Seed {
        convs,
        pools: vec![("pool1", pool_geom(16, 28)), ("pool2", pool_geom(32, 14))],
        fc,
        fc_w: values(3136 * 10, 21),
        fc_b: values(10, 22),
    }
}

fn pools() -> Vec<(usize, rayon::ThreadPool)> {
    [1, 2]
        .into_iter()
        .map(|t| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("thread pool");
            (t, pool)
        })
        .collect()
}

fn layers(c: &mut Criterion) {
    let s = seed();
    let mut group = c.benchmark_group("seed");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (threads, pool) in pools() {
        for batch in [1usize, 64] {
            for (name, conv, _, _) in &s.convs {
                let g = *conv.geom();
                let x = values(batch * g.in_len(), 3);
                let mut y = vec![0.0; batch * g.out_len()];
                let mut scratch = vec![0.0; conv.scratch_len(batch, threads)];
                group.throughput(Throughput::Elements(conv_flops(&g) * batch as u64));
                group.bench_function(format!("{name}/b{batch}/t{threads}"), |b| {
                    pool.install(|| b.iter(|| conv.run(batch, black_box(&x), &mut y, &mut scratch)))
                });
            }
            for (name, g) in &s.pools {
                let x = values(batch * g.in_len(), 4);
                let mut y = vec![0.0; batch * g.out_len()];
                // One comparison per input element.
                group.throughput(Throughput::Elements((batch * g.in_len()) as u64));
                group.bench_function(format!("{name}/b{batch}/t{threads}"), |b| {
                    pool.install(|| b.iter(|| kernels::max_pool2d(g, batch, black_box(&x), &mut y)))
                });
            }
            let x = values(batch * 3136, 5);
            let mut y = vec![0.0; batch * 10];
            group.throughput(Throughput::Elements(2 * 3136 * 10 * batch as u64));
            group.bench_function(format!("fc/b{batch}/t{threads}"), |b| {
                pool.install(|| {
                    b.iter(|| {
                        kernels::linear(&s.fc, batch, black_box(&x), &s.fc_w, Some(&s.fc_b), &mut y)
                    })
                })
            });
        }
    }
    group.finish();
}

fn lanes(c: &mut Criterion) {
    use cnn_runtime::lanes::{LANES, conv2d_lanes, conv2d_lanes_scratch_len};
    let s = seed();
    let mut group = c.benchmark_group("lanes");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let batch = 64;
    for (threads, pool) in pools() {
        for (name, conv, w, b) in &s.convs {
            let g = *conv.geom();
            group.throughput(Throughput::Elements(conv_flops(&g) * batch as u64));
            let x = values(batch * g.in_len(), 3);
            let mut y = vec![0.0; batch * g.out_len()];
            let mut scratch = vec![0.0; conv.scratch_len(batch, threads)];
            group.bench_function(format!("{name}/pixel/t{threads}"), |bn| {
                pool.install(|| bn.iter(|| conv.run(batch, black_box(&x), &mut y, &mut scratch)))
            });
            let slots = batch / LANES;
            let xl = values(slots * g.in_len() * LANES, 3);
            let mut yl = vec![0.0; slots * g.out_len() * LANES];
            let mut scratch = vec![0.0; conv2d_lanes_scratch_len(&g)];
            group.bench_function(format!("{name}/lanes/t{threads}"), |bn| {
                pool.install(|| {
                    bn.iter(|| {
                        conv2d_lanes(
                            &g,
                            slots,
                            black_box(&xl),
                            w,
                            Some(b),
                            Activation::Relu,
                            &mut yl,
                            &mut scratch,
                        )
                    })
                })
            });
        }
    }
    group.finish();
}

fn reference_layers(c: &mut Criterion) {
    let s = seed();
    let mut group = c.benchmark_group("reference");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(1));
    for (name, conv, w, b) in &s.convs {
        let g = *conv.geom();
        let x = values(g.in_len(), 3);
        let mut y = vec![0.0; g.out_len()];
        group.throughput(Throughput::Elements(conv_flops(&g)));
        group.bench_function(format!("{name}/b1/t1"), |bench| {
            bench.iter(|| reference::conv2d(&g, 1, black_box(&x), w, Some(b), &mut y))
        });
    }
    let x = values(3136, 5);
    let mut y = vec![0.0; 10];
    group.throughput(Throughput::Elements(2 * 3136 * 10));
    group.bench_function("fc/b1/t1", |b| {
        b.iter(|| reference::linear(&s.fc, 1, black_box(&x), &s.fc_w, Some(&s.fc_b), &mut y))
    });
    group.finish();
}

/// Whole seed forward pass (conv+ReLU fused, max pools, classifier), like the peer benchmarks.
fn forward(c: &mut Criterion) {
    let s = seed();
    let mut group = c.benchmark_group("seed/forward");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let macs_per_image = 10_380_160u64;
    for (threads, pool) in pools() {
        for batch in [1usize, 64] {
            let c1 = &s.convs[0].1;
            let c2 = &s.convs[1].1;
            let c3 = &s.convs[2].1;
            let c4 = &s.convs[3].1;
            let x = values(batch * 784, 6);
            let mut a1 = vec![0.0; batch * 16 * 784];
            let mut p1 = vec![0.0; batch * 16 * 196];
            let mut a2 = vec![0.0; batch * 32 * 196];
            let mut a3 = vec![0.0; batch * 32 * 196];
            let mut p2 = vec![0.0; batch * 32 * 49];
            let mut a4 = vec![0.0; batch * 64 * 49];
            let mut out = vec![0.0; batch * 10];
            let len = [c1, c2, c3, c4]
                .iter()
                .map(|c| c.scratch_len(batch, threads))
                .max()
                .unwrap_or(0);
            let mut scratch = vec![0.0; len];
            group.throughput(Throughput::Elements(2 * macs_per_image * batch as u64));
            group.bench_function(format!("b{batch}/t{threads}"), |b| {
                pool.install(|| {
                    b.iter(|| {
                        c1.run(batch, black_box(&x), &mut a1, &mut scratch);
                        kernels::max_pool2d(&s.pools[0].1, batch, &a1, &mut p1);
                        c2.run(batch, &p1, &mut a2, &mut scratch);
                        c3.run(batch, &a2, &mut a3, &mut scratch);
                        kernels::max_pool2d(&s.pools[1].1, batch, &a3, &mut p2);
                        c4.run(batch, &p2, &mut a4, &mut scratch);
                        kernels::linear(&s.fc, batch, &a4, &s.fc_w, Some(&s.fc_b), &mut out);
                    })
                })
            });
        }
    }
    group.finish();
}

/// Convolutions off the direct path (strided, unpadded): the im2col (gather) path.
fn general(c: &mut Criterion) {
    let mut group = c.benchmark_group("general");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let stride2 = Conv2dGeom {
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 2,
        stride_w: 2,
        pad_top: 1,
        pad_left: 1,
        out_h: 14,
        out_w: 14,
        ..conv_geom(32, 64, 28)
    };
    let valid = Conv2dGeom {
        pad_top: 0,
        pad_left: 0,
        out_h: 24,
        out_w: 24,
        ..conv_geom(16, 32, 28)
    };
    for (threads, pool) in pools() {
        for (name, g) in [("conv_s2", stride2), ("conv_valid", valid)] {
            let batch = 64;
            let w = values(g.weight_len(), 7);
            let conv = PackedConv::new(&g, &w, None, Activation::Relu);
            let x = values(batch * g.in_len(), 8);
            let mut y = vec![0.0; batch * g.out_len()];
            let mut scratch = vec![0.0; conv.scratch_len(batch, threads)];
            group.throughput(Throughput::Elements(conv_flops(&g) * batch as u64));
            group.bench_function(format!("{name}/b{batch}/t{threads}"), |b| {
                pool.install(|| b.iter(|| conv.run(batch, black_box(&x), &mut y, &mut scratch)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, forward, layers, lanes, reference_layers, general);
criterion_main!(benches);
