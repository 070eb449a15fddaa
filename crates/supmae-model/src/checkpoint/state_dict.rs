//! `StateDict`: a PyTorch (`torch.save`) or safetensors state dict on disk, read lazily,
//! and written back as safetensors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;

use super::tensor_ref::TensorRef;
use super::torch::{Record, TorchFile, read_values};
use crate::error::CheckpointError;

/// One tensor of a state dict: official key, PyTorch-layout shape, `f32` values.
pub type Entry = (String, Vec<usize>, Vec<f32>);

/// Where a tensor's values are: in a `torch.save` file (read on demand), or in memory.
#[derive(Debug, Clone)]
enum Stored {
    Torch(TensorRef, Record),
    Data(TensorData),
}

impl Stored {
    fn shape(&self) -> Vec<usize> {
        match self {
            Self::Torch(t, _) => t.shape.clone(),
            Self::Data(d) => d.shape.to_vec(),
        }
    }
    fn is_float(&self) -> bool {
        match self {
            Self::Torch(t, _) => t.dtype.is_float(),
            Self::Data(d) => d.dtype.is_float(),
        }
    }
}

/// A PyTorch state dict read from disk: official key → tensor (read lazily).
pub struct StateDict {
    path: PathBuf,
    tensors: BTreeMap<String, Stored>,
}

impl std::fmt::Debug for StateDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDict")
            .field("path", &self.path)
            .field("keys", &self.tensors.len())
            .finish()
    }
}

impl StateDict {
    /// Reads a `.pth` / `.pt` file written by `torch.save`, either a bare state dict or a
    /// dict holding it under `model` (or `state_dict`).
    ///
    /// The reader is strict and bounded (see `docs/decisions.md`): a corrupt, truncated or
    /// inconsistent file (CRC mismatch, missing or short storage, negative offsets, a
    /// global outside the allowlist, a pickle over its budgets) is a
    /// [`CheckpointError::Format`] naming the problem; nothing is allocated from a declared
    /// size before it is checked against the bytes stored.
    pub fn from_pytorch(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref().to_path_buf();
        if let Err(source) = std::fs::metadata(&path) {
            return Err(CheckpointError::Io { path, source });
        }
        let file = TorchFile::open(&path).map_err(|message| CheckpointError::Format {
            path: path.clone(),
            message,
        })?;
        let mut tensors: BTreeMap<String, Stored> = file
            .tensors
            .into_iter()
            .map(|(k, t)| {
                let rec = file.records[&t.storage];
                (k, Stored::Torch(t, rec))
            })
            .collect();
        for wrapper in ["model.", "state_dict.", "model_state_dict."] {
            if !tensors.is_empty() && tensors.keys().any(|k| k.starts_with(wrapper)) {
                tensors = tensors
                    .into_iter()
                    .filter_map(|(k, v)| k.strip_prefix(wrapper).map(|s| (s.to_string(), v)))
                    .collect();
                break;
            }
        }
        if tensors.is_empty() {
            return Err(CheckpointError::Format {
                path,
                message: "the file holds no tensors".into(),
            });
        }
        Ok(Self { path, tensors })
    }

    /// A state dict from in-memory tensors `(key, shape, values)` in PyTorch layout, as
    /// [`export_state_dict`](super::export_state_dict) returns them; `label` stands in for the path in messages.
    pub fn from_entries(
        label: impl Into<PathBuf>,
        entries: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
    ) -> Self {
        let mut state = Self {
            path: label.into(),
            tensors: BTreeMap::new(),
        };
        for (key, shape, values) in entries {
            state.insert_f32(&key, values, shape);
        }
        state
    }

    /// Reads a checkpoint by its content: a safetensors file (official key names, as
    /// `supmae convert` writes) or a PyTorch `.pth` / `.pt`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let mut head = [0u8; 9];
        let n = super::open_regular(path)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .map_err(|source| CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        // safetensors: an 8-byte little-endian header length, then a JSON object.
        if n == 9 && head[8] == b'{' {
            Self::from_safetensors(path)
        } else {
            Self::from_pytorch(path)
        }
    }

    /// Reads a safetensors file (float tensors of any precision, integer counters).
    pub fn from_safetensors(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref().to_path_buf();
        let mut bytes = Vec::new();
        super::open_regular(&path)
            .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut bytes))
            .map_err(|source| CheckpointError::Io {
                path: path.clone(),
                source,
            })?;
        let bad = |message: String| CheckpointError::Format {
            path: path.clone(),
            message,
        };
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (key, view) in file.tensors() {
            use safetensors::Dtype as S;
            let dtype = match view.dtype() {
                S::F32 => burn::tensor::DType::F32,
                S::F64 => burn::tensor::DType::F64,
                S::F16 => burn::tensor::DType::F16,
                S::BF16 => burn::tensor::DType::BF16,
                S::I64 => burn::tensor::DType::I64,
                S::I32 => burn::tensor::DType::I32,
                other => {
                    return Err(bad(format!(
                        "tensor `{key}` has unsupported dtype {other:?}"
                    )));
                }
            };
            let data =
                TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype);
            tensors.insert(key, Stored::Data(data));
        }
        if tensors.is_empty() {
            return Err(bad("the file holds no tensors".into()));
        }
        Ok(Self { path, tensors })
    }

    /// Writes the state dict as safetensors (atomically: a temporary file renamed over
    /// `path`). Float tensors are stored as F32, integer counters as I64.
    pub fn write_safetensors(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for key in self.tensors.keys() {
            let (values, shape) = self.read_f64(key)?;
            let (dtype, bytes) = if self.tensors[key].is_float() {
                let bytes = values
                    .iter()
                    .flat_map(|&v| (v as f32).to_le_bytes())
                    .collect();
                (safetensors::Dtype::F32, bytes)
            } else {
                let bytes = values
                    .iter()
                    .flat_map(|&v| (v as i64).to_le_bytes())
                    .collect();
                (safetensors::Dtype::I64, bytes)
            };
            owned.push((key.clone(), dtype, shape, bytes));
        }
        let io = |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut views = Vec::with_capacity(owned.len());
        for (key, dtype, shape, bytes) in &owned {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).map_err(
                |e| CheckpointError::Format {
                    path: path.to_path_buf(),
                    message: format!("tensor `{key}`: {e}"),
                },
            )?;
            views.push((key.as_str(), view));
        }
        let bytes = safetensors::serialize(views, None).map_err(|e| CheckpointError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Every tensor read as `f32` values in PyTorch layout, integer counters included.
    pub fn entries_f32(&self) -> Result<Vec<Entry>, CheckpointError> {
        self.tensors
            .keys()
            .map(|k| self.read_f32(k).map(|(v, s)| (k.clone(), s, v)))
            .collect()
    }

    /// Adds an integer counter (e.g. BatchNorm's `num_batches_tracked`, a 0-d int64).
    pub fn insert_i64(&mut self, key: &str, values: Vec<i64>, shape: Vec<usize>) {
        self.tensors.insert(
            key.to_string(),
            Stored::Data(TensorData::new(values, shape)),
        );
    }

    /// Where the state dict was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The PyTorch-layout shape of `key`.
    pub fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.tensors.get(key).map(Stored::shape)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Reads one tensor as `f32` values, in PyTorch layout.
    pub fn read_f32(&self, key: &str) -> Result<(Vec<f32>, Vec<usize>), CheckpointError> {
        let (values, shape) = self.read_f64(key)?;
        Ok((values.into_iter().map(|v| v as f32).collect(), shape))
    }

    /// Reads one tensor's values as `f64`, in PyTorch layout (exact for every float type and
    /// for integers up to 2^53).
    pub fn read_f64(&self, key: &str) -> Result<(Vec<f64>, Vec<usize>), CheckpointError> {
        let stored = self
            .tensors
            .get(key)
            .ok_or_else(|| CheckpointError::KeyMismatch {
                missing: vec![key.to_string()],
                unexpected: vec![],
            })?;
        let dtype_error = |e| CheckpointError::DType {
            key: key.to_string(),
            message: format!("{e:?}"),
        };
        match stored {
            Stored::Torch(t, rec) => {
                let values = read_values(&self.path, t, *rec).map_err(|message| {
                    CheckpointError::Format {
                        path: self.path.clone(),
                        message: format!("tensor `{key}`: {message}"),
                    }
                })?;
                Ok((values, t.shape.clone()))
            }
            Stored::Data(data) => {
                let values = data.clone().convert::<f64>().to_vec::<f64>();
                Ok((values.map_err(dtype_error)?, data.shape.to_vec()))
            }
        }
    }

    /// Replaces (or adds) `key` with `f32` values in PyTorch layout.
    pub fn insert_f32(&mut self, key: &str, values: Vec<f32>, shape: Vec<usize>) {
        self.tensors.insert(
            key.to_string(),
            Stored::Data(TensorData::new(values, shape)),
        );
    }

    /// Drops every key for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.tensors.retain(|k, _| keep(k));
    }
}
