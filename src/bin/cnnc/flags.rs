//! clap value parsers for numeric flags: each flag is refused at parse time (a usage error,
//! exit 2) when its value cannot make sense, instead of hanging, aborting or failing late.

use std::str::FromStr;

/// The most worker threads a run may ask for: more than 4 per core (or 256 in all) only adds
/// start-up time and contention.
pub fn max_threads() -> usize {
    (4 * cores()).min(256)
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn parse<T: FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| format!("`{s}` is not {what}"))
}

/// `--threads`: 0 (one per core) up to [`max_threads`].
pub fn threads(s: &str) -> Result<usize, String> {
    let n: usize = parse(s, "a whole number of threads")?;
    let max = max_threads();
    if n > max {
        let cores = cores();
        return Err(format!(
            "{n} threads cannot help on this machine, which has {cores} core{}: use at most {max} (0 = one per core)",
            if cores == 1 { "" } else { "s" }
        ));
    }
    Ok(n)
}

/// A whole number of at least 1 (`--epochs`, `--batch`, `--step-size`, `--seeds`).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match parse::<usize>(s, "a whole number")? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

/// [`at_least_one`] as a `u64`.
pub fn at_least_one_u64(s: &str) -> Result<u64, String> {
    at_least_one(s).map(|n| n as u64)
}

/// The largest `bench --batch`: bigger batches measure nothing new, and their buffers alone
/// could exhaust memory before a single image is timed.
pub const MAX_BENCH_BATCH: usize = 65_536;

/// `bench --batch`: 1 ..= [`MAX_BENCH_BATCH`].
pub fn bench_batch(s: &str) -> Result<usize, String> {
    let n = at_least_one(s)?;
    if n > MAX_BENCH_BATCH {
        return Err(format!(
            "a batch of {n} is larger than a benchmark needs (at most {MAX_BENCH_BATCH}): images/s stop changing long before"
        ));
    }
    Ok(n)
}

fn finite(s: &str) -> Result<f64, String> {
    let v: f64 = parse(s, "a number")?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("must be a finite number, not {v}"))
    }
}

/// A finite number above 0 (`--lr`, `--gamma`).
pub fn positive(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("must be above 0, not {v}"))
    }
}

/// A finite number of at least 0 (`--weight-decay`).
pub fn non_negative(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("must be 0 or more, not {v}"))
    }
}

/// SGD `--momentum`: 0 ≤ m < 1 (at 1 and above the velocity never decays and training diverges).
pub fn momentum(s: &str) -> Result<f64, String> {
    let v = non_negative(s)?;
    if v < 1.0 {
        Ok(v)
    } else {
        Err(format!("must be below 1 (0.9 is usual), not {v}"))
    }
}

/// The longest `bench --seconds`: one day.
pub const MAX_BENCH_SECONDS: f64 = 86_400.0;

/// `bench --seconds`: finite, above 0, at most [`MAX_BENCH_SECONDS`].
pub fn seconds(s: &str) -> Result<f64, String> {
    let v = positive(s)?;
    if v <= MAX_BENCH_SECONDS {
        Ok(v)
    } else {
        Err(format!(
            "must be at most {MAX_BENCH_SECONDS} (one day), not {v}"
        ))
    }
}

/// A finite per-channel statistic (`--mean`).
pub fn finite_f32(s: &str) -> Result<f32, String> {
    let v = finite(s)?;
    let f = v as f32;
    if f.is_finite() {
        Ok(f)
    } else {
        Err(format!("{v} does not fit a 32-bit float"))
    }
}

/// A finite per-channel statistic above 0 (`--std`).
pub fn positive_f32(s: &str) -> Result<f32, String> {
    let f = finite_f32(s)?;
    if f > 0.0 {
        Ok(f)
    } else {
        Err(format!("must be above 0, not {f}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_bounded_by_the_cores() {
        assert_eq!(threads("0"), Ok(0));
        assert_eq!(threads("1"), Ok(1));
        assert_eq!(threads(&max_threads().to_string()), Ok(max_threads()));
        let e = threads(&(max_threads() + 1).to_string()).unwrap_err();
        assert!(e.contains(&format!("{} core", cores())), "{e}");
        assert!(threads("10000").is_err());
        assert!(threads("-1").is_err());
        assert!(max_threads() <= 256);
    }

    #[test]
    fn floats_reject_nan_inf_and_senseless_signs() {
        for bad in ["nan", "NaN", "inf", "-inf", "0", "-3", "x", ""] {
            assert!(positive(bad).is_err(), "{bad}");
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(positive("1e-3"), Ok(1e-3));
        assert_eq!(seconds("0.5"), Ok(0.5));
        assert!(seconds("1e300").is_err());
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(non_negative("-5").is_err());
        assert!(non_negative("nan").is_err());
        assert_eq!(momentum("0.9"), Ok(0.9));
        assert!(momentum("1").is_err());
        assert!(momentum("nan").is_err());
        assert!(positive_f32("1e39").is_err());
        assert!(positive_f32("0").is_err());
        assert_eq!(finite_f32("-0.5"), Ok(-0.5));
    }

    #[test]
    fn counts_start_at_one() {
        assert!(at_least_one("0").is_err());
        assert_eq!(at_least_one("3"), Ok(3));
        assert_eq!(at_least_one_u64("2"), Ok(2));
        assert!(bench_batch("100000000").is_err());
        assert_eq!(bench_batch("64"), Ok(64));
    }
}
