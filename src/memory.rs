//! The memory running or training a model will need, estimated from the checked model before
//! anything is allocated (`cnnc` refuses a model over its `--max-memory` limit with the layer
//! responsible). `tests/memory_estimate.rs` checks the estimate against a counting allocator.
//!
//! The total comes from the runtime's own sizes for the model's plan
//! ([`Executor::estimate_bytes`], [`Trainer::estimate_bytes`]: parameters, packed weights,
//! gradients and optimizer state, the buffers and scratch the first call reserves) plus the
//! input batch. The largest part named in messages comes from the checked layers. A first pass
//! in 128-bit integers bounds it, so absurd sizes neither overflow nor reach the runtime's
//! `usize` arithmetic: above 256 TiB that bound is the answer.

use crate::dsl::CheckedModel;
use crate::dsl::check::Op;
use crate::dsl::plan::{Mode, plan};
use crate::runtime::exec::Executor;
use crate::runtime::train::Trainer;

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `--max-memory`: a size such as `512M`, `8G`, `1.5TiB` or a byte count (units are powers
/// of 1024; `K`, `KB` and `KiB` mean the same).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 512M, 8G or 1.5T"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown unit `{other}` in `{s}`: use K, M, G or T")),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}` must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// `bytes` in binary units with three significant digits (`1.17 TiB`).
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{bytes} bytes"),
        _ if v >= 100.0 => format!("{v:.0} {}", UNITS[u]),
        _ if v >= 10.0 => format!("{v:.1} {}", UNITS[u]),
        _ => format!("{v:.2} {}", UNITS[u]),
    }
}

/// What a command does with the model.
#[derive(Clone, Copy, Debug)]
pub enum Workload {
    /// Forward passes of `batch` images.
    Inference {
        /// Images per pass.
        batch: usize,
        /// Worker threads (0 = one per core); convolution scratch grows with them.
        threads: usize,
    },
    /// Training steps of `batch` images; the optimizer keeps `state` floats per parameter
    /// (Adam 2, SGD with momentum 1).
    Training {
        /// Images per step.
        batch: usize,
        /// Optimizer state per parameter.
        state: u32,
        /// Worker threads (0 = one per core).
        threads: usize,
    },
}

/// The estimate: the total, and its largest single part.
#[derive(Debug, PartialEq)]
pub struct Estimate {
    /// Bytes in all.
    pub total: u128,
    /// The layer of the largest part (its `state_dict` path).
    pub layer: String,
    /// `weights` or `activations`.
    pub what: &'static str,
    /// Bytes of that part.
    pub bytes: u128,
}

/// Estimates the memory `model` needs for `work`.
pub fn estimate(model: &CheckedModel, work: Workload) -> Estimate {
    const F: u128 = 4;
    let (batch, param_copies, training) = match work {
        Workload::Inference { batch, .. } => (batch as u128, 1, false),
        // Weights, gradients and the optimizer's buffers.
        Workload::Training { batch, state, .. } => (batch as u128, 2 + u128::from(state), true),
    };
    let mut total: u128 = 0;
    let mut largest = (0u128, String::new(), "weights");
    let mut max_out: u128 = 0;
    let mut widest = String::new();
    let mut max_scratch: u128 = 0;
    for l in model.layers() {
        let weights = u128::from(l.params) * F * param_copies;
        let out: u128 = l.output.iter().map(|&d| u128::from(d)).product();
        if out > max_out {
            max_out = out;
            widest = l.layer.path.clone();
        }
        // Training keeps every output (and its gradient's share) for the backward pass.
        let acts = if training { 2 * out * batch * F } else { 0 };
        if let Op::Conv2d { geom: g, .. } = l.op {
            let per_image = (g.in_channels / g.groups.max(1)) as u128
                * g.kernel_h as u128
                * g.kernel_w as u128
                * g.out_h as u128
                * g.out_w as u128;
            max_scratch = max_scratch.max(per_image * batch * F);
        }
        total = total.saturating_add(weights).saturating_add(acts);
        for (bytes, what) in [(weights, "weights"), (acts, "activations")] {
            if bytes > largest.0 {
                largest = (bytes, l.layer.path.clone(), what);
            }
        }
    }
    let input: u128 = model.input_shape().iter().map(|&d| u128::from(d)).product();
    // Two ping-pong activation buffers (or the backward pass's two gradient buffers), the
    // input batch and the largest unfolded convolution input.
    let buffers = 2 * max_out * batch * F;
    total = total
        .saturating_add(buffers)
        .saturating_add(input * batch * F)
        .saturating_add(max_scratch);
    if !training && buffers > largest.0 {
        // Inference activations live in the ping-pong buffers, sized by the widest layer.
        largest = (buffers, widest, "activations");
    }
    // The runtime's own sizes, once the bound above shows they fit its arithmetic, plus 1/8 and
    // 24 KiB for what they leave out (tensor names, maps, the thread pool, allocator rounding,
    // a step's small temporaries).
    if total < 1 << 48 {
        let inputs = input * batch * F;
        let sized = match work {
            Workload::Inference { batch, threads } => {
                Executor::estimate_bytes(&plan(model, Mode::Infer), batch, threads) + inputs
            }
            Workload::Training {
                batch,
                state,
                threads,
            } => Trainer::estimate_bytes(&plan(model, Mode::Train), batch, threads, state) + inputs,
        };
        total = sized + sized / 8 + (24 << 10);
    }
    Estimate {
        total,
        layer: largest.1,
        what: largest.2,
        bytes: largest.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(text: &str) -> CheckedModel {
        crate::dsl::compile_source(&mut crate::dsl::SourceMap::new(), "m.cnn", text)
            .expect("checks")
    }

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8 GiB"), Ok(8 << 30));
        assert_eq!(parse_size("1.5t"), Ok(3 << 39));
        for bad in ["", "0", "-1", "nan", "1X", "1e3", "G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(human(512), "512 bytes");
        assert_eq!(human(1536), "1.50 KiB");
        assert_eq!(human(321_000_000_000 * 4), "1.17 TiB");
    }

    #[test]
    fn the_huge_linear_is_named_with_its_size() {
        let m = model(
            "model Huge(input = [1, 28, 28]) { conv2d(out_channels = 4096, kernel_size = 3, padding = 1), flatten, out: linear(out_features = 100000) }",
        );
        let e = estimate(
            &m,
            Workload::Inference {
                batch: 1,
                threads: 1,
            },
        );
        assert_eq!((e.layer.as_str(), e.what), ("out", "weights"));
        // 4096·28·28 inputs × 100,000 outputs, plus biases, in f32.
        assert_eq!(e.bytes, (4096 * 784 * 100_000 + 100_000) * 4);
        assert!(e.total >= e.bytes);
        let t = estimate(
            &m,
            Workload::Training {
                batch: 64,
                state: 2,
                threads: 1,
            },
        );
        assert_eq!(
            t.bytes,
            e.bytes * 4,
            "weights, gradients and two Adam buffers"
        );
    }

    #[test]
    fn wide_activations_are_named_and_the_seed_model_is_small() {
        let m = model(
            "model Wide(input = [1, 28, 28]) { wide: conv2d(out_channels = 99999999, kernel_size = 1), flatten, linear(out_features = 2) }",
        );
        let e = estimate(
            &m,
            Workload::Training {
                batch: 64,
                state: 2,
                threads: 1,
            },
        );
        assert_eq!(e.layer, "wide");
        assert!(e.total > 1u128 << 40, "{}", human(e.total));
        let seed = model(include_str!("../examples/models/seed.cnn"));
        let s = estimate(
            &seed,
            Workload::Training {
                batch: 64,
                state: 2,
                threads: 1,
            },
        );
        assert!(s.total < 100 << 20, "{}", human(s.total));
        assert!(s.total > 121_514 * 4 * 4, "{}", human(s.total));
    }
}
