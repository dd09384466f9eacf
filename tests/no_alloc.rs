//! After the first call, `forward` does no heap allocation (plan interpreter and generated code),
//! counted with a global allocator that tallies every allocation of this test process.

use cnn::dsl::{
    SourceMap, compile_source,
    plan::{Mode, plan},
};
use cnn::models::SeedCnn;
use cnn::runtime::exec::Executor;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn forward_does_not_allocate_after_the_first_call() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/models/seed.yaml"
    ))
    .unwrap();
    let model = compile_source(&mut SourceMap::new(), "seed.yaml", &text).unwrap();
    let input = vec![0.5f32; 32 * 784];
    for threads in [1, 2] {
        let mut exec = Executor::with_init(plan(&model, Mode::Infer), 1, threads).unwrap();
        exec.forward(&input, 32).unwrap();
        exec.forward(&input, 32).unwrap();
        assert!(exec.uses_lanes(32));
        let before = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..5 {
            exec.forward(&input, 32).unwrap();
            exec.forward(&input[..8 * 784], 8).unwrap();
            exec.forward(&input[..784], 1).unwrap();
        }
        let n = ALLOCS.load(Ordering::SeqCst) - before;
        assert_eq!(
            n, 0,
            "plan interpreter, {threads} threads: {n} allocations in steady state"
        );
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        let mut m = SeedCnn::init(1).unwrap();
        let samples: &[[f32; 784]] = input.as_chunks::<784>().0;
        m.forward(samples);
        m.forward(samples);
        let before = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..5 {
            m.forward(samples);
        }
        let n = ALLOCS.load(Ordering::SeqCst) - before;
        assert_eq!(n, 0, "generated code: {n} allocations in steady state");
    });
}
