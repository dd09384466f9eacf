//! The memory estimate (`cnn::memory::estimate`, what `cnnc` checks against `--max-memory`)
//! against what running and training really allocate, counted by a global allocator: for
//! every model below the estimate must cover the peak of live heap bytes of building the
//! model and running it (one forward pass, or one training step), and stay within 2× of it.
//!
//! The estimate adds the runtime's own buffer sizes (`Executor::estimate_bytes`,
//! `Trainer::estimate_bytes`) and a margin of 1/8 + 64 KiB; on 2026-12-02 (AMD EPYC) it came to
//! 1.1–1.7× of the measured peak for every case below. `cargo test --test memory_estimate --
//! --nocapture` prints both numbers per case.

use cnn::dsl::{CheckedModel, SourceMap, compile_source};
use cnn::memory::{Workload, estimate, human};
use cnn::runtime::exec::Executor;
use cnn::runtime::optim::Adam;
use cnn::runtime::train::Trainer;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts live heap bytes and their peak since the last [`reset_peak`].
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's arguments.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let now = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The tests share the counters, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Peak live bytes above the level at the start of `f`.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

fn model(text: &str) -> CheckedModel {
    compile_source(&mut SourceMap::new(), "m.cnn", text).unwrap_or_else(|d| panic!("{d:?}"))
}

/// Models of different shapes: the seed, a wide first layer, a deep 3×3 stack with batch
/// norm, strides and pooling, a 1×1 bottleneck, and a linear-heavy head.
fn models() -> Vec<(&'static str, CheckedModel)> {
    vec![
        ("seed", model(include_str!("../examples/models/seed.cnn"))),
        (
            "wide",
            model(
                "model Wide(input = [3, 32, 32]) { conv2d(out_channels = 64, kernel_size = 3, padding = 1), relu, maxpool2d(2), flatten, linear(out_features = 10) }",
            ),
        ),
        (
            "deep",
            model(
                "model Deep(input = [1, 28, 28]) { conv2d(out_channels = 8, kernel_size = 3, padding = 1), batchnorm2d, relu, conv2d(out_channels = 16, kernel_size = 3, stride = 2, padding = 1), relu, conv2d(out_channels = 16, kernel_size = 3, padding = 1), relu, avgpool2d(2), flatten, linear(out_features = 10) }",
            ),
        ),
        (
            "bottleneck",
            model(
                "model Bottleneck(input = [16, 14, 14]) { conv2d(out_channels = 4, kernel_size = 1), relu, conv2d(out_channels = 4, kernel_size = 3, padding = 1), relu, conv2d(out_channels = 32, kernel_size = 1), relu, flatten, linear(out_features = 10) }",
            ),
        ),
        (
            "mlp",
            model(
                "model Mlp(input = [784]) { linear(out_features = 512), relu, linear(out_features = 256), relu, linear(out_features = 10) }",
            ),
        ),
    ]
}

fn within(name: &str, what: &str, est: u128, used: usize) {
    let used = used as u128;
    println!(
        "{name} {what}: estimate {} for {} allocated",
        human(est),
        human(used)
    );
    assert!(
        est >= used,
        "{name} {what}: estimate {} is below the {} allocated",
        human(est),
        human(used)
    );
    assert!(
        est <= 2 * used,
        "{name} {what}: estimate {} is over twice the {} allocated",
        human(est),
        human(used)
    );
}

#[test]
fn inference_estimate_covers_what_a_forward_pass_allocates() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (name, m) in models() {
        for batch in [1, 64] {
            let plan = cnn::dsl::plan::plan(&m, cnn::dsl::plan::Mode::Infer);
            let input = vec![0.5f32; plan.input_len() * batch];
            let used = peak_of(|| {
                let mut exec = Executor::with_init(plan.clone(), 0, 1).expect("builds");
                exec.forward(&input, batch).expect("runs");
            });
            within(
                name,
                &format!("inference batch {batch}"),
                estimate(&m, Workload::Inference { batch, threads: 1 }).total,
                used,
            );
        }
    }
}

#[test]
fn training_estimate_covers_what_a_training_step_allocates() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (name, m) in models() {
        for batch in [1, 64] {
            let plan = cnn::dsl::plan::plan(&m, cnn::dsl::plan::Mode::Infer);
            let input = vec![0.5f32; plan.input_len() * batch];
            let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
            let used = peak_of(|| {
                let mut t =
                    Trainer::new(&m, Box::new(Adam::new().with_lr(1e-3)), 0, 1).expect("builds");
                t.train_step(&input, &labels).expect("steps");
            });
            within(
                name,
                &format!("training batch {batch}"),
                estimate(
                    &m,
                    Workload::Training {
                        batch,
                        state: 2,
                        threads: 1,
                    },
                )
                .total,
                used,
            );
        }
    }
}
