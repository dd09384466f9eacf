//! `--max-memory`: the limit a command's memory estimate ([`cnn::memory::estimate`]) must fit,
//! by default the memory the machine has available.

use cnn::dsl::CheckedModel;
use cnn::memory::available;
pub use cnn::memory::{Workload, estimate, human, parse_size};
use std::sync::OnceLock;

/// The `--max-memory` given on the command line, if any.
static LIMIT: OnceLock<u64> = OnceLock::new();

/// Sets the limit from `--max-memory` (once, in `main`).
pub fn set_limit(bytes: Option<u64>) {
    if let Some(b) = bytes {
        let _ = LIMIT.set(b);
    }
}

/// The limit in bytes and whether it was given (`false`: the machine's available memory),
/// or `None` when neither is known.
fn limit() -> Option<(u64, bool)> {
    LIMIT
        .get()
        .map(|&b| (b, true))
        .or_else(|| available().map(|b| (b, false)))
}

/// Refuses (exit 1) when `model` for `work` would need more than the limit; a no-op when no
/// limit is known.
pub fn check(model: &CheckedModel, work: Workload) -> anyhow::Result<()> {
    let Some((limit, given)) = limit() else {
        return Ok(());
    };
    let e = estimate(model, work);
    if e.total <= u128::from(limit) {
        return Ok(());
    }
    let batch = match work {
        Workload::Inference { batch, .. } | Workload::Training { batch, .. } => batch,
    };
    let (verb, fix) = match work {
        Workload::Inference { .. } => ("run", "a smaller layer or batch"),
        Workload::Training { .. } => ("train", "a smaller layer or --batch"),
    };
    let room = if given {
        format!("--max-memory is {}", human(limit.into()))
    } else {
        format!("{} are available", human(limit.into()))
    };
    anyhow::bail!(
        "`{}` cannot {verb} here: `{}` needs {} of {}, and the whole {verb} (batch {batch}) needs about {}; {room}: use {fix}, or set --max-memory to change the limit",
        model.name(),
        e.layer,
        human(e.bytes),
        e.what,
        human(e.total)
    )
}
