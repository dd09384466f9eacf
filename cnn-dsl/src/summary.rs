//! `cnnc summary`: a torchinfo/Keras-style table of a checked model (also of the checked prefix
//! of a broken one), and `--explain`, which says where every dimension comes from.

use crate::check::{CheckReport, CheckedLayer, CheckedModel};
use crate::ir::Model;
use serde_json::json;
use std::fmt::Write as _;

/// Groups digits in thousands: `121514` → `121,514`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn shape(d: &[u64]) -> String {
    format!(
        "[{}]",
        d.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    )
}

/// `floats` f32 values as KiB or MiB (in 128 bits: a checked model's sizes fit in `u64`, their
/// bytes may not).
fn kib(floats: u64) -> String {
    let bytes = u128::from(floats) * 4;
    if bytes >= 1 << 20 {
        format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// `u64`s added without overflow (saturating at `u64::MAX`).
fn total(it: impl Iterator<Item = u64>) -> u64 {
    it.fold(0, u64::saturating_add)
}

/// Activation memory per image if each layer's output lives in its own buffer (an upper bound),
/// and the peak of a two-buffer ping-pong plan (largest input + output of any layer), in floats.
pub fn activation_floats(input: &[u64], layers: &[CheckedLayer]) -> (u64, u64) {
    let numel = |d: &[u64]| d.iter().fold(1u64, |a, &x| a.saturating_mul(x));
    let in_len = numel(input);
    let all = in_len.saturating_add(total(layers.iter().map(|l| numel(&l.output))));
    let peak = layers
        .iter()
        .map(|l| numel(&l.input).saturating_add(numel(&l.output)))
        .max()
        .unwrap_or(in_len);
    (all, peak)
}

/// Renders the table. `failed` marks the first layer that could not be checked.
pub fn table(
    model: &Model,
    layers: &[CheckedLayer],
    failed_at: Option<usize>,
    explain: bool,
) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "Layer (path)".into(),
        "Type".into(),
        "Output shape".into(),
        "Params".into(),
        "MACs".into(),
    ]];
    rows.push([
        "(input)".into(),
        String::new(),
        shape(&model.input.value),
        String::new(),
        String::new(),
    ]);
    for l in layers {
        let dash = |x: u64| {
            if x == 0 {
                "—".to_string()
            } else {
                thousands(x)
            }
        };
        rows.push([
            l.layer.path.clone(),
            l.layer.kind.torch_name().into(),
            shape(&l.output),
            dash(l.params),
            dash(l.macs),
        ]);
    }
    if let Some(i) = failed_at {
        if let Some(l) = model.layers.get(i) {
            rows.push([
                l.path.clone(),
                l.kind.torch_name().into(),
                "✗ error, see below".into(),
                "?".into(),
                "?".into(),
            ]);
        } else {
            rows.push([
                "(output)".into(),
                String::new(),
                "✗ error, see below".into(),
                String::new(),
                String::new(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let total_w: usize = widths.iter().sum::<usize>() + 4 * 3;
    let rule = "─".repeat(total_w);
    let mut out = String::new();
    let _ = writeln!(out, "Model: {}", model.name);
    let _ = writeln!(out, "{rule}");
    for (i, r) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c >= 3 {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
            if c < 4 {
                line.push_str("   ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
        if i == 0 {
            let _ = writeln!(out, "{rule}");
        }
    }
    let _ = writeln!(out, "{rule}");
    let params = total(layers.iter().map(|l| l.params));
    let tensors: Vec<_> = layers.iter().flat_map(|l| l.tensors.iter()).collect();
    let trainable = tensors.iter().filter(|t| t.role.trainable()).count();
    let macs = total(layers.iter().map(|l| l.macs));
    let (total_floats, peak) = activation_floats(&model.input.value, layers);
    let prefix = if failed_at.is_some() {
        " (up to the error)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "Parameters{prefix}: {} in {trainable} tensors ({} as f32)",
        thousands(params),
        kib(params)
    );
    if tensors.len() > trainable {
        let _ = writeln!(
            out,
            "Buffers: {} (batchnorm running statistics)",
            tensors.len() - trainable
        );
    }
    let _ = writeln!(out, "Multiply-adds per image{prefix}: {}", thousands(macs));
    let _ = writeln!(
        out,
        "Activations per image: {} floats in all layer outputs ({}); peak of one layer's input + output: {} ({})",
        thousands(total_floats),
        kib(total_floats),
        thousands(peak),
        kib(peak)
    );
    if explain {
        let _ = writeln!(out, "\nWhere each dimension comes from:");
        let _ = writeln!(out, "  (input) {}", shape(&model.input.value));
        for l in layers {
            if l.output == l.input {
                continue;
            }
            let _ = writeln!(out, "  {} → {}", l.layer.path, shape(&l.output));
            for o in &l.origins {
                let _ = writeln!(out, "      {o}");
            }
        }
    }
    out
}

/// The summary of a checked model.
pub fn summary(model: &CheckedModel, explain: bool) -> String {
    let mut out = table(model.model(), model.layers(), None, explain);
    // The inference plan's buffers: what `cnnc run` and the generated code really allocate.
    let plan = crate::plan::plan(model, crate::plan::Mode::Infer);
    let per_buf = plan.buffer_len.max(plan.output_len()) as u64;
    let line = format!(
        "Inference plan: {} kernel calls, 2 ping-pong buffers × {} floats = {} per image (peak activation memory)\n",
        plan.steps.len(),
        thousands(per_buf),
        kib(per_buf.saturating_mul(2))
    );
    match out.find("\nWhere each dimension") {
        Some(i) => out.insert_str(i + 1, &line),
        None => out.push_str(&line),
    }
    out
}

/// The summary of a model that may have failed to check: layers up to the error, marked.
pub fn summary_report(model: &Model, report: &CheckReport, explain: bool) -> String {
    table(model, &report.layers, report.failed_at, explain)
}

/// JSON form of the summary, for scripts.
pub fn to_json(model: &Model, layers: &[CheckedLayer]) -> serde_json::Value {
    let (all, peak) = activation_floats(&model.input.value, layers);
    json!({
        "name": model.name,
        "input": model.input.value,
        "layers": layers.iter().map(|l| json!({
            "path": l.layer.path, "type": l.layer.kind.torch_name(), "input": l.input, "output": l.output,
            "params": l.params, "macs": l.macs,
            "tensors": l.tensors.iter().map(|t| json!({"name": t.name, "shape": t.shape})).collect::<Vec<_>>(),
            "origins": l.origins,
        })).collect::<Vec<_>>(),
        "params": total(layers.iter().map(|l| l.params)),
        "macs": total(layers.iter().map(|l| l.macs)),
        "activation_floats": all,
        "peak_activation_floats": peak,
        "output": layers.last().map_or(model.input.value.clone(), |l| l.output.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(121514), "121,514");
        assert_eq!(thousands(10380160), "10,380,160");
    }
}
