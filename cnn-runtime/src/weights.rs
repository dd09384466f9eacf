//! Model parameters in safetensors files, with PyTorch `state_dict` names and layouts.
//!
//! The caller states what the model expects — a list of [`ParamSpec`]s such as
//! `conv1.weight [6, 1, 5, 5]` — and [`load`] either returns every tensor, in that order, as
//! `f32`, or one [`WeightsError::Mismatch`] listing *all* the problems in the file at once:
//! missing, unexpected (with a "did you mean" for a near name), mis-shaped and wrongly typed
//! tensors, NaN or infinite values (name, count and first index), negative batch-norm running
//! variances, and a training checkpoint given where weights belong.
//!
//! Element types on load:
//! - `F32` is read as is.
//! - `F16` and `BF16` are widened to `f32` exactly; `F64` is rounded to the nearest `f32`
//!   (values beyond ±3.4·10³⁸ would become infinite and are reported like any non-finite
//!   value). Models saved in half or double precision load without a conversion step.
//! - Integer and other types are rejected, except for `num_batches_tracked`
//!   ([`ParamKind::NumBatchesTracked`]), which PyTorch stores as a 0-d `I64`: any integer or
//!   float type is accepted and kept as an `f32` count (exact below 2²⁴). A missing
//!   `num_batches_tracked` is not an error (checkpoints from before PyTorch 0.4.1 lack it,
//!   and PyTorch itself then uses 0); it is set to 0.
//!
//! On save every tensor is `F32`, except `num_batches_tracked`, written as a 0-d `I64` so that
//! `model.load_state_dict(safetensors.torch.load_file(path), strict=True)` accepts the file.
//! The header metadata gets `"format": "pt"` (as `safetensors.torch.save_file` writes) plus the
//! caller's entries, e.g. the model name.
//!
//! ```
//! use cnn_runtime::weights::{load_bytes, to_bytes, ParamKind, ParamSpec, Weights};
//! let specs = [
//!     ParamSpec::new("fc.weight", [2, 3], ParamKind::Weight),
//!     ParamSpec::new("fc.bias", [2], ParamKind::Bias),
//! ];
//! let w = Weights::new(&specs, vec![vec![0.5; 6], vec![0.0; 2]])?.with_metadata("model", "tiny");
//! let bytes = to_bytes(&w)?;
//! let back = load_bytes(&bytes, "memory".as_ref(), &specs)?;
//! assert_eq!(back.get("fc.weight"), Some(&[0.5; 6][..]));
//! assert_eq!(back.metadata().get("model").map(String::as_str), Some("tiny"));
//! # Ok::<(), cnn_runtime::weights::WeightsError>(())
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensorError, SafeTensors, View};

/// What a parameter is; decides how its type is checked and saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// A learned weight (convolution kernel, linear matrix, batch-norm γ).
    Weight,
    /// A learned bias (including batch-norm β).
    Bias,
    /// Batch-norm running mean (a buffer).
    RunningMean,
    /// Batch-norm running variance (a buffer).
    RunningVar,
    /// Batch-norm step counter: a 0-d `I64` in PyTorch, shape `[]`.
    NumBatchesTracked,
}

/// One tensor the model expects: its `state_dict` name, shape and kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParamSpec {
    /// The `state_dict` key, e.g. `features.0.weight`.
    pub name: String,
    /// The shape in PyTorch's layout (`[out, in/groups, kH, kW]` for a convolution,
    /// `[out, in]` for a linear layer, `[]` for `num_batches_tracked`).
    pub shape: Vec<usize>,
    /// What it is.
    pub kind: ParamKind,
}

impl ParamSpec {
    /// A spec from a name, a shape and a kind.
    pub fn new(name: impl Into<String>, shape: impl Into<Vec<usize>>, kind: ParamKind) -> Self {
        Self {
            name: name.into(),
            shape: shape.into(),
            kind,
        }
    }

    /// Number of elements: the product of the shape (1 for a 0-d tensor), or `None` on overflow.
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
}

/// One way a file fails to match the expected parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorProblem {
    /// An expected tensor is not in the file.
    Missing {
        /// Its name.
        name: String,
        /// Its expected shape.
        expected: Vec<usize>,
    },
    /// The file has a tensor the model does not.
    Unexpected {
        /// Its name.
        name: String,
        /// Its shape in the file.
        shape: Vec<usize>,
        /// The closest expected name, if one is close.
        did_you_mean: Option<String>,
    },
    /// A tensor has the wrong shape.
    Shape {
        /// Its name.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor's element type cannot be read as `f32`.
    Dtype {
        /// Its name.
        name: String,
        /// Its shape in the file.
        shape: Vec<usize>,
        /// The type in the file, e.g. `I32`.
        found: String,
    },
    /// A tensor holds NaN or infinite values.
    NonFinite {
        /// Its name.
        name: String,
        /// How many values are not finite.
        count: usize,
        /// The flat (C-order) index of the first one.
        first: usize,
        /// That value.
        value: f32,
    },
    /// A batch-norm running variance holds negative values.
    NegativeVariance {
        /// Its name.
        name: String,
        /// How many values are negative.
        count: usize,
        /// The flat index of the first one.
        first: usize,
        /// That value.
        value: f32,
    },
    /// The file is a training checkpoint (weights plus optimizer state), not a weights file.
    Checkpoint {
        /// How many optimizer tensors (named `__optim__.…`) it holds.
        optimizer_tensors: usize,
    },
}

struct Dims<'a>(&'a [usize]);

impl fmt::Display for Dims<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl fmt::Display for TensorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorProblem::Missing { name, expected } => {
                write!(f, "missing tensor `{name}` {}", Dims(expected))
            }
            TensorProblem::Unexpected {
                name,
                shape,
                did_you_mean,
            } => {
                write!(f, "unexpected tensor `{name}` {}", Dims(shape))?;
                match did_you_mean {
                    Some(near) => write!(f, ": did you mean `{near}`?"),
                    None => write!(f, ": the model has no parameter of that name"),
                }
            }
            TensorProblem::Shape {
                name,
                expected,
                found,
            } => write!(
                f,
                "tensor `{name}` has shape {}, expected {}",
                Dims(found),
                Dims(expected)
            ),
            TensorProblem::Dtype { name, shape, found } => write!(
                f,
                "tensor `{name}` {} has element type {found}, expected F32 (F64, F16 and BF16 are converted)",
                Dims(shape)
            ),
            TensorProblem::NonFinite {
                name,
                count,
                first,
                value,
            } => write!(
                f,
                "tensor `{name}` holds {count} non-finite value{} (the first is {value}, at flat index {first}): training diverged or the file is damaged; use weights from an earlier epoch",
                plural(*count)
            ),
            TensorProblem::NegativeVariance {
                name,
                count,
                first,
                value,
            } => write!(
                f,
                "tensor `{name}` is a batch-norm running variance but holds {count} negative value{} (the first is {value}, at flat index {first}); a variance is never negative, so the file is damaged",
                plural(*count)
            ),
            TensorProblem::Checkpoint { optimizer_tensors } => write!(
                f,
                "this is a training checkpoint (weights plus {optimizer_tensors} optimizer tensor{} named `{OPTIM_PREFIX}…`): use it with `--resume`, or give the weights file the run wrote (weights.safetensors)",
                plural(*optimizer_tensors)
            ),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The name prefix of the optimizer-state tensors in a training checkpoint.
pub const OPTIM_PREFIX: &str = "__optim__.";

/// The problem with values that were read correctly but cannot be parameters: NaN or
/// infinite values anywhere, negative values in a batch-norm running variance.
fn value_problem(name: &str, kind: ParamKind, values: &[f32]) -> Option<TensorProblem> {
    let first_and_count = |bad: &dyn Fn(f32) -> bool| {
        let first = values.iter().position(|v| bad(*v))?;
        let count = values[first..].iter().filter(|v| bad(**v)).count();
        Some((first, count))
    };
    if let Some((first, count)) = first_and_count(&|v| !v.is_finite()) {
        return Some(TensorProblem::NonFinite {
            name: name.to_string(),
            count,
            first,
            value: values[first],
        });
    }
    if kind == ParamKind::RunningVar
        && let Some((first, count)) = first_and_count(&|v| v < 0.0)
    {
        return Some(TensorProblem::NegativeVariance {
            name: name.to_string(),
            count,
            first,
            value: values[first],
        });
    }
    None
}

/// The problems of one file, rendered one per line under a summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Problems(pub Vec<TensorProblem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong loading or saving weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read or written.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The file is not a valid safetensors file (truncated, corrupt header, bad offsets).
    #[error(
        "`{}` is not a valid safetensors file ({source}); it may be truncated or not safetensors: re-export it with `safetensors.torch.save_file`",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: SafeTensorError,
    },
    /// The file's tensors do not match the model's parameters; every problem is listed.
    #[error(
        "`{}` does not match the model: {} problem{}{problems}",
        file.display(),
        problems.0.len(),
        if problems.0.len() == 1 { "" } else { "s" }
    )]
    Mismatch {
        /// The file.
        file: PathBuf,
        /// All problems found.
        problems: Problems,
    },
    /// Values handed to [`Weights::new`] do not fit a spec.
    #[error(
        "parameter `{name}` has {found} values but its shape {} needs {expected}",
        Dims(shape)
    )]
    WrongLength {
        /// The parameter.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// The spec list and the value list differ in length, or a name repeats.
    #[error("invalid parameter list: {0}")]
    BadSpecs(String),
    /// safetensors refused to serialise (e.g. a header over 100 MB).
    #[error("cannot serialise weights: {0}")]
    Serialize(SafeTensorError),
}

/// Shorthand for results in this module.
pub type Result<T, E = WeightsError> = std::result::Result<T, E>;

/// Parameter values in the model's order, each `f32` and contiguous in PyTorch's layout, plus
/// the header metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    specs: Vec<ParamSpec>,
    values: Vec<Vec<f32>>,
    index: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl Weights {
    /// Weights from specs and values in the same order; each value's length must equal its
    /// spec's element count, and names must be unique.
    pub fn new(specs: &[ParamSpec], values: Vec<Vec<f32>>) -> Result<Self> {
        if specs.len() != values.len() {
            return Err(WeightsError::BadSpecs(format!(
                "{} specs but {} value arrays",
                specs.len(),
                values.len()
            )));
        }
        for (spec, v) in specs.iter().zip(&values) {
            let expected = spec.numel().ok_or_else(|| {
                WeightsError::BadSpecs(format!("shape of `{}` overflows", spec.name))
            })?;
            if v.len() != expected {
                return Err(WeightsError::WrongLength {
                    name: spec.name.clone(),
                    shape: spec.shape.clone(),
                    expected,
                    found: v.len(),
                });
            }
        }
        Ok(Self {
            index: index_of(specs)?,
            specs: specs.to_vec(),
            values,
            metadata: BTreeMap::new(),
        })
    }

    /// Adds or replaces a header metadata entry (e.g. `"model"`), saved with the weights.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The header metadata (from the file when loaded).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The specs, in order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The values of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.index.get(name).map(|&i| self.values[i].as_slice())
    }

    /// The values of parameter `name`, mutably (the length cannot change).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        self.index.get(name).map(|&i| self.values[i].as_mut_slice())
    }

    /// Specs with their values, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&ParamSpec, &[f32])> {
        self.specs.iter().zip(self.values.iter().map(Vec::as_slice))
    }

    /// The values, in spec order.
    pub fn into_values(self) -> Vec<Vec<f32>> {
        self.values
    }

    /// Number of parameters (tensors).
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}

fn index_of(specs: &[ParamSpec]) -> Result<HashMap<String, usize>> {
    let mut index = HashMap::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        if index.insert(s.name.clone(), i).is_some() {
            return Err(WeightsError::BadSpecs(format!(
                "`{}` appears twice",
                s.name
            )));
        }
    }
    Ok(index)
}

/// Reads `path` and matches its tensors against `specs`.
pub fn load(path: &Path, specs: &[ParamSpec]) -> Result<Weights> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    load_bytes(&bytes, path, specs)
}

/// Matches the safetensors image `bytes` against `specs`; `file` names it in errors.
pub fn load_bytes(bytes: &[u8], file: &Path, specs: &[ParamSpec]) -> Result<Weights> {
    let corrupt = |source| WeightsError::Corrupt {
        path: file.to_owned(),
        source,
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
    let st = SafeTensors::deserialize(bytes).map_err(corrupt)?;
    let index = index_of(specs)?;
    let mut values: Vec<Option<Vec<f32>>> = vec![None; specs.len()];
    let mut problems = Vec::new();
    let mut unexpected = Vec::new();

    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in tensors {
        let Some(&i) = index.get(&name) else {
            unexpected.push((name, view.shape().to_vec()));
            continue;
        };
        let spec = &specs[i];
        if view.shape() != spec.shape.as_slice() {
            problems.push(TensorProblem::Shape {
                name,
                expected: spec.shape.clone(),
                found: view.shape().to_vec(),
            });
            continue;
        }
        match to_f32(view.dtype(), view.data(), spec.kind) {
            Some(v) if Some(v.len()) == spec.numel() => match value_problem(&name, spec.kind, &v) {
                Some(p) => problems.push(p),
                None => values[i] = Some(v),
            },
            Some(_) => problems.push(TensorProblem::Shape {
                name,
                expected: spec.shape.clone(),
                found: view.shape().to_vec(),
            }),
            None => problems.push(TensorProblem::Dtype {
                name,
                shape: view.shape().to_vec(),
                found: view.dtype().to_string(),
            }),
        }
    }

    let missing: Vec<&ParamSpec> = specs
        .iter()
        .zip(&values)
        .filter(|(s, v)| v.is_none() && !problems.iter().any(|p| problem_name(p) == s.name))
        .map(|(s, _)| s)
        .collect();
    // A checkpoint's optimizer state is one problem ("this is a checkpoint"), not one
    // "unexpected tensor" per moment buffer.
    let optimizer_tensors = unexpected
        .iter()
        .filter(|(n, _)| n.starts_with(OPTIM_PREFIX))
        .count();
    if optimizer_tensors > 0 {
        unexpected.retain(|(n, _)| !n.starts_with(OPTIM_PREFIX));
        problems.push(TensorProblem::Checkpoint { optimizer_tensors });
    }
    for (name, shape) in unexpected {
        let did_you_mean = suggest(&name, missing.iter().map(|s| s.name.as_str()))
            .or_else(|| suggest(&name, specs.iter().map(|s| s.name.as_str())));
        problems.push(TensorProblem::Unexpected {
            name,
            shape,
            did_you_mean,
        });
    }
    for s in &missing {
        if s.kind == ParamKind::NumBatchesTracked && s.numel() == Some(1) {
            values[index[&s.name]] = Some(vec![0.0]);
        } else {
            problems.push(TensorProblem::Missing {
                name: s.name.clone(),
                expected: s.shape.clone(),
            });
        }
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| match p {
            TensorProblem::Checkpoint { .. } => 0,
            TensorProblem::Missing { .. } => 1,
            TensorProblem::Unexpected { .. } => 2,
            TensorProblem::Shape { .. } => 3,
            TensorProblem::Dtype { .. } => 4,
            TensorProblem::NonFinite { .. } => 5,
            TensorProblem::NegativeVariance { .. } => 6,
        });
        return Err(WeightsError::Mismatch {
            file: file.to_owned(),
            problems: Problems(problems),
        });
    }
    let metadata = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(Weights {
        specs: specs.to_vec(),
        values: values.into_iter().flatten().collect(),
        index,
        metadata,
    })
}

fn problem_name(p: &TensorProblem) -> &str {
    match p {
        TensorProblem::Missing { name, .. }
        | TensorProblem::Unexpected { name, .. }
        | TensorProblem::Shape { name, .. }
        | TensorProblem::Dtype { name, .. }
        | TensorProblem::NonFinite { name, .. }
        | TensorProblem::NegativeVariance { name, .. } => name,
        TensorProblem::Checkpoint { .. } => "",
    }
}

/// Converts little-endian `data` of type `dtype` to `f32`, or `None` if `kind` does not allow it.
fn to_f32(dtype: Dtype, data: &[u8], kind: ParamKind) -> Option<Vec<f32>> {
    fn chunks<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        data.chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    let float = match dtype {
        Dtype::F32 => Some(chunks(data, f32::from_le_bytes)),
        Dtype::F64 => Some(chunks(data, |b| f64::from_le_bytes(b) as f32)),
        Dtype::F16 => Some(chunks(data, |b| half::f16::from_le_bytes(b).to_f32())),
        Dtype::BF16 => Some(chunks(data, |b| half::bf16::from_le_bytes(b).to_f32())),
        _ => None,
    };
    if float.is_some() || kind != ParamKind::NumBatchesTracked {
        return float;
    }
    match dtype {
        Dtype::I64 => Some(chunks(data, |b| i64::from_le_bytes(b) as f32)),
        Dtype::I32 => Some(chunks(data, |b| i32::from_le_bytes(b) as f32)),
        Dtype::I16 => Some(chunks(data, |b| f32::from(i16::from_le_bytes(b)))),
        Dtype::I8 => Some(data.iter().map(|&b| f32::from(b as i8)).collect()),
        Dtype::U64 => Some(chunks(data, |b| u64::from_le_bytes(b) as f32)),
        Dtype::U32 => Some(chunks(data, |b| u32::from_le_bytes(b) as f32)),
        Dtype::U16 => Some(chunks(data, |b| f32::from(u16::from_le_bytes(b)))),
        Dtype::U8 => Some(data.iter().map(|&b| f32::from(b)).collect()),
        _ => None,
    }
}

/// The closest of `candidates` to `name`, if close: edit distance at most a third of the
/// name's length (at least 2), or the same name without a `module.` (DataParallel) prefix or
/// with a different leading path.
fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let stripped = name.strip_prefix("module.");
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .filter_map(|c| {
            if stripped == Some(c) {
                return Some((0, c));
            }
            let d = edit_distance(name, c);
            (d <= limit).then_some((d, c))
        })
        .min_by_key(|&(d, c)| (d, c.len()))
        .map(|(_, c)| c.to_owned())
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

struct Tensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Tensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The safetensors image of `weights`: `F32` tensors, `num_batches_tracked` as 0-d `I64`,
/// metadata with `"format": "pt"` unless the weights set another format.
pub fn to_bytes(weights: &Weights) -> Result<Vec<u8>> {
    let tensors: Vec<(String, Tensor)> = weights
        .iter()
        .map(|(spec, v)| {
            let tensor = if spec.kind == ParamKind::NumBatchesTracked {
                Tensor {
                    dtype: Dtype::I64,
                    shape: spec.shape.clone(),
                    bytes: v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect(),
                }
            } else {
                Tensor {
                    dtype: Dtype::F32,
                    shape: spec.shape.clone(),
                    bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                }
            };
            (spec.name.clone(), tensor)
        })
        .collect();
    let mut metadata: HashMap<String, String> = weights
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata
        .entry("format".into())
        .or_insert_with(|| "pt".into());
    safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
        .map_err(WeightsError::Serialize)
}

/// Writes `weights` to `path` directly (see [`save_atomic`] to never leave a half-written
/// file behind).
pub fn save(path: &Path, weights: &Weights) -> Result<()> {
    let bytes = to_bytes(weights)?;
    std::fs::write(path, bytes).map_err(|source| WeightsError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// Writes `weights` to `path` atomically: a temporary file in the same folder is written and
/// flushed to disk, then renamed over `path`, and the folder is synced. A crash leaves either
/// the old file or the new one, never a mix.
pub fn save_atomic(path: &Path, weights: &Weights) -> Result<()> {
    let bytes = to_bytes(weights)?;
    crate::io::write_atomic(path, &bytes).map_err(|source| WeightsError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// Names of the tensors in a safetensors file, with their shapes and element types, without
/// checking them against a model (for `cnnc inspect`-style listings).
pub fn list(path: &Path) -> Result<Vec<(String, Vec<usize>, String)>> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    list_bytes(&bytes, path)
}

/// [`list`] for a safetensors image in memory; `path` names it in errors.
pub fn list_bytes(bytes: &[u8], path: &Path) -> Result<Vec<(String, Vec<usize>, String)>> {
    let st = SafeTensors::deserialize(bytes).map_err(|source| WeightsError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.dtype().to_string()))
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ParamKind::*;

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("conv1.weight", [2, 1, 3, 3], Weight),
            ParamSpec::new("conv1.bias", [2], Bias),
            ParamSpec::new("bn1.weight", [2], Weight),
            ParamSpec::new("bn1.bias", [2], Bias),
            ParamSpec::new("bn1.running_mean", [2], RunningMean),
            ParamSpec::new("bn1.running_var", [2], RunningVar),
            ParamSpec::new("bn1.num_batches_tracked", [], NumBatchesTracked),
            ParamSpec::new("fc.weight", [3, 8], Weight),
            ParamSpec::new("fc.bias", [3], Bias),
        ]
    }

    fn weights() -> Weights {
        let values = specs()
            .iter()
            .enumerate()
            .map(|(k, s)| match s.kind {
                NumBatchesTracked => vec![1234.0],
                _ => (0..s.numel().unwrap())
                    .map(|i| k as f32 + i as f32 * 0.01)
                    .collect(),
            })
            .collect();
        Weights::new(&specs(), values)
            .unwrap()
            .with_metadata("model", "tiny")
    }

    /// A safetensors image with the given tensors, written by the safetensors crate.
    fn file_with(tensors: &[(&str, Dtype, &[usize], Vec<u8>)]) -> Vec<u8> {
        let ts: Vec<(&str, Tensor)> = tensors
            .iter()
            .map(|(n, d, s, b)| {
                (
                    *n,
                    Tensor {
                        dtype: *d,
                        shape: s.to_vec(),
                        bytes: b.clone(),
                    },
                )
            })
            .collect();
        safetensors::serialize(ts.iter().map(|(n, t)| (*n, t)), None).unwrap()
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn mismatch(r: Result<Weights>) -> Vec<TensorProblem> {
        match r {
            Err(WeightsError::Mismatch { problems, .. }) => problems.0,
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_in_memory_and_on_disk() {
        let w = weights();
        let bytes = to_bytes(&w).unwrap();
        let back = load_bytes(&bytes, Path::new("m"), &specs()).unwrap();
        assert_eq!(back.into_values(), w.clone().into_values());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        save_atomic(&p, &w).unwrap();
        let back = load(&p, &specs()).unwrap();
        assert_eq!(back.get("fc.bias"), w.get("fc.bias"));
        assert_eq!(back.get("bn1.num_batches_tracked"), Some(&[1234.0][..]));
        assert_eq!(back.metadata()["model"], "tiny");
        assert_eq!(back.metadata()["format"], "pt");
        // No temporary file is left behind, and overwriting works.
        save_atomic(&p, &w).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        save(&dir.path().join("plain"), &w).unwrap();
        let listed = list(&p).unwrap();
        assert!(listed.contains(&("bn1.num_batches_tracked".into(), vec![], "I64".into())));
        assert!(listed.contains(&("fc.weight".into(), vec![3, 8], "F32".into())));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut t: Vec<(&str, Dtype, &[usize], Vec<u8>)> = vec![
            // Mis-shaped: in_channels 3 instead of 1.
            ("conv1.weight", Dtype::F32, &[2, 3, 3, 3], f32s(&[0.0; 54])),
            // Misspelt: conv1.bias missing, conv1.bais unexpected.
            ("conv1.bais", Dtype::F32, &[2], f32s(&[0.0; 2])),
            ("bn1.weight", Dtype::F32, &[2], f32s(&[1.0; 2])),
            ("bn1.bias", Dtype::F32, &[2], f32s(&[0.0; 2])),
            ("bn1.running_mean", Dtype::F32, &[2], f32s(&[0.0; 2])),
            // Wrong type.
            ("bn1.running_var", Dtype::I32, &[2], vec![0; 8]),
            ("fc.weight", Dtype::F32, &[3, 8], f32s(&[0.0; 24])),
            // Unrelated extra.
            ("head.extra", Dtype::F32, &[1], f32s(&[0.0])),
        ];
        t.push(("fc.bias", Dtype::F32, &[3], f32s(&[0.0; 3])));
        let bytes = file_with(&t);
        let err = load_bytes(&bytes, Path::new("model.safetensors"), &specs()).unwrap_err();
        let msg = err.to_string();
        let problems = mismatch(Err(err));
        assert_eq!(
            problems,
            [
                TensorProblem::Missing {
                    name: "conv1.bias".into(),
                    expected: vec![2]
                },
                TensorProblem::Unexpected {
                    name: "conv1.bais".into(),
                    shape: vec![2],
                    did_you_mean: Some("conv1.bias".into())
                },
                TensorProblem::Unexpected {
                    name: "head.extra".into(),
                    shape: vec![1],
                    did_you_mean: None
                },
                TensorProblem::Shape {
                    name: "conv1.weight".into(),
                    expected: vec![2, 1, 3, 3],
                    found: vec![2, 3, 3, 3]
                },
                TensorProblem::Dtype {
                    name: "bn1.running_var".into(),
                    shape: vec![2],
                    found: "I32".into()
                },
            ]
        );
        // Missing num_batches_tracked is filled with 0, not reported.
        assert!(!msg.contains("num_batches_tracked"), "{msg}");
        let want = "`model.safetensors` does not match the model: 5 problems
  missing tensor `conv1.bias` [2]
  unexpected tensor `conv1.bais` [2]: did you mean `conv1.bias`?
  unexpected tensor `head.extra` [1]: the model has no parameter of that name
  tensor `conv1.weight` has shape [2, 3, 3, 3], expected [2, 1, 3, 3]
  tensor `bn1.running_var` [2] has element type I32, expected F32 (F64, F16 and BF16 are converted)";
        assert_eq!(msg, want);
    }

    #[test]
    fn non_finite_values_negative_variances_and_checkpoints_are_named() {
        let w = weights();
        let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> = w
            .iter()
            .map(|(s, v)| (s.name.clone(), s.shape.clone(), v.to_vec()))
            .collect();
        for (name, _, v) in &mut owned {
            match name.as_str() {
                "fc.weight" => {
                    v[5] = f32::NAN;
                    v[7] = f32::NEG_INFINITY;
                }
                "bn1.running_var" => {
                    v[1] = -0.5;
                }
                _ => {}
            }
        }
        for k in 0..3 {
            owned.push((format!("{OPTIM_PREFIX}exp_avg.{k}"), vec![2], vec![0.0; 2]));
        }
        let t: Vec<(&str, Dtype, &[usize], Vec<u8>)> = owned
            .iter()
            .map(|(n, s, v)| (n.as_str(), Dtype::F32, &s[..], f32s(v)))
            .collect();
        let err = load_bytes(&file_with(&t), Path::new("ckpt.safetensors"), &specs()).unwrap_err();
        let msg = err.to_string();
        let problems = mismatch(Err(err));
        assert_eq!(problems.len(), 3, "{msg}");
        assert_eq!(
            problems[0],
            TensorProblem::Checkpoint {
                optimizer_tensors: 3
            }
        );
        assert!(
            matches!(&problems[1], TensorProblem::NonFinite { name, count: 2, first: 5, value } if name == "fc.weight" && value.is_nan()),
            "{msg}"
        );
        assert_eq!(
            problems[2],
            TensorProblem::NegativeVariance {
                name: "bn1.running_var".into(),
                count: 1,
                first: 1,
                value: -0.5
            }
        );
        assert!(msg.contains("this is a training checkpoint"), "{msg}");
        assert!(msg.contains("--resume"), "{msg}");
        assert!(!msg.contains("unexpected tensor"), "{msg}");
        assert!(
            msg.contains("2 non-finite values (the first is NaN, at flat index 5)"),
            "{msg}"
        );
        // Negative values are fine where they make sense (weights, biases, running means).
        let mut ok = w.clone().into_values();
        ok[0][0] = -3.0;
        let fine = Weights::new(&specs(), ok).unwrap();
        assert!(load_bytes(&to_bytes(&fine).unwrap(), Path::new("m"), &specs()).is_ok());
    }

    #[test]
    fn missing_num_batches_tracked_defaults_to_zero() {
        let all = specs();
        let t: Vec<(&str, Dtype, &[usize], Vec<u8>)> = all
            .iter()
            .filter(|s| s.kind != NumBatchesTracked)
            .map(|s| {
                let n = s.numel().unwrap();
                (
                    s.name.as_str(),
                    Dtype::F32,
                    s.shape.as_slice(),
                    f32s(&vec![0.5; n]),
                )
            })
            .collect();
        let w = load_bytes(&file_with(&t), Path::new("old.pt"), &specs()).unwrap();
        assert_eq!(w.get("bn1.num_batches_tracked"), Some(&[0.0][..]));
        assert_eq!(w.get("fc.bias"), Some(&[0.5; 3][..]));
    }

    #[test]
    fn half_double_and_bfloat_are_converted() {
        let s = [
            ParamSpec::new("a", [2], Weight),
            ParamSpec::new("b", [2], Weight),
            ParamSpec::new("c", [2], Bias),
        ];
        let f16: Vec<u8> = [1.5f32, -0.25]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        let bf16: Vec<u8> = [3.0f32, 0.5]
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        let f64s = |v: [f64; 2]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let bytes = file_with(&[
            ("a", Dtype::F16, &[2], f16.clone()),
            ("b", Dtype::BF16, &[2], bf16.clone()),
            ("c", Dtype::F64, &[2], f64s([0.1, -2.0])),
        ]);
        let w = load_bytes(&bytes, Path::new("x"), &s).unwrap();
        assert_eq!(w.get("a"), Some(&[1.5, -0.25][..]));
        assert_eq!(w.get("b"), Some(&[3.0, 0.5][..]));
        assert_eq!(w.get("c"), Some(&[0.1f32, -2.0][..]));
        // A double beyond f32's range would become infinite: reported, not loaded.
        let bytes = file_with(&[
            ("a", Dtype::F16, &[2], f16),
            ("b", Dtype::BF16, &[2], bf16),
            ("c", Dtype::F64, &[2], f64s([0.1, 1e300])),
        ]);
        let problems = mismatch(load_bytes(&bytes, Path::new("x"), &s));
        assert_eq!(
            problems,
            [TensorProblem::NonFinite {
                name: "c".into(),
                count: 1,
                first: 1,
                value: f32::INFINITY
            }]
        );
    }

    #[test]
    fn data_parallel_prefix_is_suggested() {
        let s = [ParamSpec::new("features.0.weight", [1], Weight)];
        let bytes = file_with(&[("module.features.0.weight", Dtype::F32, &[1], f32s(&[0.0]))]);
        let problems = mismatch(load_bytes(&bytes, Path::new("x"), &s));
        assert!(matches!(
            &problems[1],
            TensorProblem::Unexpected { did_you_mean: Some(n), .. } if n == "features.0.weight"
        ));
    }

    #[test]
    fn truncated_and_garbage_files_name_the_file() {
        let bytes = to_bytes(&weights()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("cut.safetensors", &bytes[..bytes.len() - 10]),
            ("header.safetensors", &bytes[..20]),
            ("tiny.safetensors", &bytes[..3]),
            ("text.safetensors", &b"hello world, not tensors"[..]),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            let err = load(&p, &specs()).unwrap_err();
            assert!(matches!(err, WeightsError::Corrupt { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains(name) && msg.contains("not a valid safetensors"),
                "{msg}"
            );
        }
        let missing = dir.path().join("nope.safetensors");
        let msg = load(&missing, &specs()).unwrap_err().to_string();
        assert!(
            msg.starts_with("cannot read") && msg.contains("nope.safetensors"),
            "{msg}"
        );
    }

    #[test]
    fn new_checks_lengths_and_names() {
        let s = [ParamSpec::new("w", [2, 2], Weight)];
        assert!(matches!(
            Weights::new(&s, vec![vec![0.0; 3]]),
            Err(WeightsError::WrongLength {
                expected: 4,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            Weights::new(&s, vec![]),
            Err(WeightsError::BadSpecs(_))
        ));
        let dup = [s[0].clone(), s[0].clone()];
        assert!(matches!(
            Weights::new(&dup, vec![vec![0.0; 4]; 2]),
            Err(WeightsError::BadSpecs(_))
        ));
        let mut w = Weights::new(&s, vec![vec![0.0; 4]]).unwrap();
        w.get_mut("w").unwrap()[3] = 7.0;
        assert_eq!(w.get("w"), Some(&[0.0, 0.0, 0.0, 7.0][..]));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn edit_distance_and_suggestions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("fc.bias", "fc.bias"), 0);
        let names = ["fc1.weight", "fc2.weight", "conv.bias"];
        assert_eq!(
            suggest("fc2.wieght", names.into_iter()),
            Some("fc2.weight".into())
        );
        assert_eq!(suggest("totally.else", names.into_iter()), None);
    }

    /// A file written by Python's safetensors (`tests/data/make_safetensors.py`).
    #[test]
    fn reads_file_written_by_python_safetensors() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_pt.safetensors");
        let w = load(&path, &specs()).unwrap();
        assert_eq!(w.metadata()["model"], "tiny");
        assert_eq!(w.metadata()["format"], "pt");
        // Each tensor holds arange(n) * 0.5 + k for its index k in the spec list; fc.weight is
        // stored as F16 and fc.bias as F64 there.
        for (k, (spec, v)) in w.iter().enumerate() {
            if spec.kind == NumBatchesTracked {
                assert_eq!(v, [937.0], "{}", spec.name);
                continue;
            }
            let want: Vec<f32> = (0..v.len()).map(|i| i as f32 * 0.5 + k as f32).collect();
            assert_eq!(v, want.as_slice(), "{}", spec.name);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        /// Damaged files give an error, never a panic.
        #[test]
        fn loading_damaged_files_never_panics(
            cut in 0usize..2000,
            flips in proptest::collection::vec((0usize..2000, 1u8..=255), 0..4),
        ) {
            let mut bytes = to_bytes(&weights()).unwrap();
            for (at, x) in flips {
                let n = bytes.len();
                bytes[at % n] ^= x;
            }
            bytes.truncate(cut.min(bytes.len()));
            let _ = load_bytes(&bytes, Path::new("x"), &specs());
        }
    }
}
