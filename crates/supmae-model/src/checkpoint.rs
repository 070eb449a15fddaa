//! Loading PyTorch state dicts saved with the official key names.
//!
//! The Rust module tree mirrors the official one, so a Burn parameter path maps to a
//! PyTorch key by three documented rules:
//!
//! | Burn path | PyTorch key | note |
//! | --- | --- | --- |
//! | `….{norm1,norm2,norm,fc_norm,decoder_norm}.gamma` / `.beta` | `….weight` / `.bias` | LayerNorm names |
//! | `cls_head.fc1.*`, `cls_head.bn.*`, `cls_head.fc2.*` | `cls_head.0.*`, `cls_head.1.*`, `cls_head.3.*` | `nn.Sequential` indices; `projection_head.*` accepted as an alias |
//! | every `Linear` `weight` `[in, out]` | `weight` `[out, in]` | transposed on load |
//!
//! Everything else is identical (`blocks.3.attn.qkv.bias`, `patch_embed.proj.weight`, …).
//! Files written by `torch.save` as a bare state dict or wrapped as `{'model': state_dict,
//! ...}` (the official training scripts) both load.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::{ModuleMapper, Param};
use burn::prelude::*;
use burn_store::TensorSnapshot;
use burn_store::pytorch::PytorchReader;

use crate::error::CheckpointError;

/// One tensor of a state dict: official key, PyTorch-layout shape, `f32` values.
pub type Entry = (String, Vec<usize>, Vec<f32>);

/// A PyTorch state dict read from disk: official key → tensor (read lazily).
pub struct StateDict {
    path: PathBuf,
    tensors: BTreeMap<String, TensorSnapshot>,
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
    pub fn from_pytorch(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref().to_path_buf();
        if let Err(source) = std::fs::metadata(&path) {
            return Err(CheckpointError::Io { path, source });
        }
        let reader = PytorchReader::new(&path).map_err(|e| CheckpointError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut tensors: BTreeMap<String, TensorSnapshot> =
            reader.into_tensors().into_iter().collect();
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
    /// [`export_state_dict`] returns them; `label` stands in for the path in messages.
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
        let n = std::fs::File::open(path)
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
        let bytes = std::fs::read(&path).map_err(|source| CheckpointError::Io {
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
            let snapshot = TensorSnapshot::from_data(
                data,
                key.split('.').map(str::to_string).collect(),
                Vec::new(),
                burn::module::ParamId::new(),
            );
            tensors.insert(key, snapshot);
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
        for (key, snapshot) in &self.tensors {
            let data = snapshot.to_data().map_err(|e| CheckpointError::DType {
                key: key.clone(),
                message: format!("{e:?}"),
            })?;
            let shape = data.shape.to_vec();
            let (dtype, bytes) =
                if data.dtype.is_float() {
                    let values = data.convert::<f32>().to_vec::<f32>().map_err(|e| {
                        CheckpointError::DType {
                            key: key.clone(),
                            message: format!("{e:?}"),
                        }
                    })?;
                    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                    (safetensors::Dtype::F32, bytes)
                } else {
                    let values = data.convert::<i64>().to_vec::<i64>().map_err(|e| {
                        CheckpointError::DType {
                            key: key.clone(),
                            message: format!("{e:?}"),
                        }
                    })?;
                    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
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
        let snapshot = TensorSnapshot::from_data(
            TensorData::new(values, shape),
            key.split('.').map(str::to_string).collect(),
            Vec::new(),
            burn::module::ParamId::new(),
        );
        self.tensors.insert(key.to_string(), snapshot);
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
        self.tensors.get(key).map(|t| t.shape.to_vec())
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
        let snapshot = self
            .tensors
            .get(key)
            .ok_or_else(|| CheckpointError::KeyMismatch {
                missing: vec![key.to_string()],
                unexpected: vec![],
            })?;
        let data = snapshot.to_data().map_err(|e| CheckpointError::DType {
            key: key.to_string(),
            message: format!("{e:?}"),
        })?;
        let shape = data.shape.to_vec();
        let values = data
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| CheckpointError::DType {
                key: key.to_string(),
                message: format!("{e:?}"),
            })?;
        Ok((values, shape))
    }

    /// Replaces (or adds) `key` with `f32` values in PyTorch layout.
    pub fn insert_f32(&mut self, key: &str, values: Vec<f32>, shape: Vec<usize>) {
        let data = TensorData::new(values, shape);
        let snapshot = TensorSnapshot::from_data(
            data,
            key.split('.').map(str::to_string).collect(),
            Vec::new(),
            burn::module::ParamId::new(),
        );
        self.tensors.insert(key.to_string(), snapshot);
    }

    /// Drops every key for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.tensors.retain(|k, _| keep(k));
    }
}

/// Which keys a load may leave missing or unused without it being an error.
#[derive(Debug, Clone, Default)]
pub struct KeyPolicy {
    /// Model keys that the file may lack (the model keeps its fresh initialisation).
    pub may_be_missing: Vec<KeyPattern>,
    /// File keys the model may ignore.
    pub may_be_unused: Vec<KeyPattern>,
}

/// An exact key or a key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPattern {
    /// This exact key.
    Exact(String),
    /// Every key starting with this prefix.
    Prefix(String),
    /// Every key ending with this suffix.
    Suffix(String),
}

impl KeyPattern {
    /// Whether `key` matches.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Self::Exact(k) => key == k,
            Self::Prefix(p) => key.starts_with(p.as_str()),
            Self::Suffix(s) => key.ends_with(s.as_str()),
        }
    }
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Keys copied into the model.
    pub applied: BTreeSet<String>,
    /// Model keys the file lacked (allowed by the policy).
    pub missing: BTreeSet<String>,
    /// File keys the model did not use (allowed by the policy).
    pub unused: BTreeSet<String>,
}

/// Aliases tried, in order, when a key is absent: the released SupMAE pre-training
/// checkpoint names the classification branch `projection_head` (enyac-group/supmae#4).
const ALIASES: &[(&str, &str)] = &[("cls_head.", "projection_head.")];

/// The PyTorch key of a Burn parameter path (see the module docs for the rules).
fn torch_key(path: &[String], containers: &[String]) -> String {
    let mut parts: Vec<&str> = path.iter().map(String::as_str).collect();
    let owner = containers.last().map(String::as_str).unwrap_or("");
    if let Some(last) = parts.last_mut()
        && owner == "Struct:LayerNorm"
    {
        *last = match *last {
            "gamma" => "weight",
            "beta" => "bias",
            other => other,
        };
    }
    if parts.first() == Some(&"cls_head") && parts.len() > 1 {
        parts[1] = match parts[1] {
            "fc1" => "0",
            "bn" => "1",
            "fc2" => "3",
            other => other,
        };
    }
    parts.join(".")
}

/// The module path a visitor or mapper is at, with the container type of each level.
#[derive(Default)]
struct PathTracker {
    path: Vec<String>,
    containers: Vec<String>,
}

impl PathTracker {
    fn enter(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit(&mut self) {
        self.path.pop();
        self.containers.pop();
    }

    /// The PyTorch key of the parameter at the current path.
    fn key(&self) -> String {
        torch_key(&self.path, &self.containers)
    }

    /// Whether the parameter at the current path is a `Linear` weight, whose PyTorch layout
    /// is the transpose of Burn's.
    fn is_linear_weight(&self, rank: usize) -> bool {
        self.containers.last().map(String::as_str) == Some("Struct:Linear")
            && self.path.last().map(String::as_str) == Some("weight")
            && rank == 2
    }
}

struct Loader<'a> {
    state: &'a StateDict,
    at: PathTracker,
    report: LoadReport,
    errors: Vec<CheckpointError>,
}

impl Loader<'_> {
    fn resolve(&self, key: &str) -> Option<String> {
        if self.state.contains(key) {
            return Some(key.to_string());
        }
        ALIASES.iter().find_map(|(from, to)| {
            let alias = key.strip_prefix(from).map(|rest| format!("{to}{rest}"))?;
            self.state.contains(&alias).then_some(alias)
        })
    }
}

impl<B: Backend> ModuleMapper<B> for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.at.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let key = self.at.key();
        let Some(file_key) = self.resolve(&key) else {
            self.report.missing.insert(key);
            return param;
        };
        let transpose = self.at.is_linear_weight(D);
        let mut expected = param.lazy_shape().to_vec();
        if transpose {
            expected.reverse();
        }
        let (values, found) = match self.state.read_f32(&file_key) {
            Ok(v) => v,
            Err(e) => {
                self.errors.push(e);
                return param;
            }
        };
        // A 0-d tensor and a [1] tensor hold the same single value.
        let same = found == expected || (found.is_empty() && expected == [1]);
        if !same {
            self.errors.push(CheckpointError::ShapeMismatch {
                key: file_key,
                expected,
                found,
            });
            return param;
        }
        let device = param.lazy_device();
        let mut tensor = Tensor::<B, D>::from_data(TensorData::new(values, expected), &device);
        if transpose {
            tensor = tensor.transpose();
        }
        self.report.applied.insert(file_key);
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// Copies a state dict into `module`, checking that the keys left missing and unused are
/// exactly those `policy` allows.
///
/// On error the module is dropped and nothing is half-loaded in the caller's hands.
pub fn load_state_dict<B: Backend, M: Module<B>>(
    module: M,
    state: &StateDict,
    policy: &KeyPolicy,
) -> Result<(M, LoadReport), CheckpointError> {
    let mut loader = Loader {
        state,
        at: PathTracker::default(),
        report: LoadReport::default(),
        errors: Vec::new(),
    };
    let module = module.map(&mut loader);
    if let Some(error) = loader.errors.into_iter().next() {
        return Err(error);
    }
    let mut report = loader.report;
    report.unused = state
        .keys()
        .filter(|k| !report.applied.contains(*k))
        .map(str::to_string)
        .collect();
    let missing: Vec<String> = report
        .missing
        .iter()
        .filter(|k| !policy.may_be_missing.iter().any(|p| p.matches(k)))
        .cloned()
        .collect();
    let unexpected: Vec<String> = report
        .unused
        .iter()
        .filter(|k| !policy.may_be_unused.iter().any(|p| p.matches(k)))
        .cloned()
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(CheckpointError::KeyMismatch {
            missing,
            unexpected,
        });
    }
    Ok((module, report))
}

/// Every parameter of `module` under its PyTorch key, in PyTorch layout (Linear weights
/// transposed back): `(key, shape, values)`.
pub fn export_state_dict<B: Backend, M: Module<B>>(
    module: &M,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Exporter {
        at: PathTracker,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl<B: Backend> burn::module::ModuleVisitor<B> for Exporter {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.at.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.at.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let key = self.at.key();
            let mut tensor = param.val();
            if self.at.is_linear_weight(D) {
                tensor = tensor.transpose();
            }
            let shape = tensor.dims().to_vec();
            let values = tensor
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap_or_default();
            self.out.push((key, shape, values));
        }
    }
    let mut exporter = Exporter {
        at: PathTracker::default(),
        out: Vec::new(),
    };
    module.visit(&mut exporter);
    exporter.out
}

fn prefixes(list: &[&str]) -> Vec<KeyPattern> {
    list.iter()
        .map(|p| KeyPattern::Prefix(p.to_string()))
        .collect()
}

impl<B: Backend> crate::SupMae<B> {
    /// Loads an official-format pre-training checkpoint (SupMAE, or MAE `*_full.pth`).
    ///
    /// Every model key must be present. The file may additionally hold BatchNorm
    /// `num_batches_tracked` counters and, when this model is plain MAE, a classification
    /// branch (`cls_head.*` / `projection_head.*`); anything else unused is an error.
    pub fn load_pytorch(
        self,
        path: impl AsRef<Path>,
    ) -> Result<(Self, LoadReport), CheckpointError> {
        let state = StateDict::from_pytorch(path)?;
        self.load_state_dict(&state)
    }

    /// [`load_pytorch`](Self::load_pytorch) from an already read [`StateDict`].
    pub fn load_state_dict(self, state: &StateDict) -> Result<(Self, LoadReport), CheckpointError> {
        let mut policy = KeyPolicy {
            may_be_missing: vec![],
            may_be_unused: vec![KeyPattern::Suffix(".num_batches_tracked".into())],
        };
        if self.cls_head.is_none() {
            policy
                .may_be_unused
                .extend(prefixes(&["cls_head.", "projection_head."]));
        }
        load_state_dict(self, state, &policy)
    }
}

impl<B: Backend> crate::VitClassifier<B> {
    /// Loads a fine-tuned classifier checkpoint (`mae_finetuned_vit_*`,
    /// `supmae_vitb_ft_100e.pth`, or one of ours): every key must match exactly.
    pub fn load_pytorch_finetuned(
        self,
        path: impl AsRef<Path>,
    ) -> Result<(Self, LoadReport), CheckpointError> {
        let state = StateDict::from_pytorch(path)?;
        load_state_dict(self, &state, &KeyPolicy::default())
    }

    /// Loads the encoder of a pre-training checkpoint for fine-tuning, as `main_finetune.py`
    /// does: the decoder, `mask_token` and the classification branch are ignored (and `norm`
    /// in global-pool mode), and exactly `head.*` (plus `fc_norm.*` in global-pool mode) stay
    /// freshly initialised. A `head` of another shape in the file is dropped, and a
    /// `pos_embed` of another resolution is resampled (bicubic, cls row kept).
    pub fn load_pytorch_pretrained(
        self,
        path: impl AsRef<Path>,
    ) -> Result<(Self, LoadReport), CheckpointError> {
        self.load_pretrained_state(StateDict::from_pytorch(path)?)
    }

    /// [`load_pytorch_pretrained`](Self::load_pytorch_pretrained) from a state dict already
    /// in memory (e.g. [`export_state_dict`] of a [`SupMae`](crate::SupMae) trained here).
    pub fn load_pretrained_state(
        self,
        mut state: StateDict,
    ) -> Result<(Self, LoadReport), CheckpointError> {
        // Another resolution: resample the patch rows of pos_embed (MAE's
        // interpolate_pos_embed); the cls row is kept.
        let (d, grid) = (self.config.embed_dim, self.config.grid_size());
        if let Some(shape) = state.shape("pos_embed")
            && shape.len() == 3
            && shape[2] == d
            && shape[1] != grid * grid + 1
        {
            let old = ((shape[1].saturating_sub(1)) as f64).sqrt().round() as usize;
            if old * old + 1 == shape[1] {
                let (table, _) = state.read_f32("pos_embed")?;
                let resized = crate::pos_embed::interpolate_pos_embed(&table, d, 1, old, grid);
                state.insert_f32("pos_embed", resized, vec![1, grid * grid + 1, d]);
            }
        }
        let head = [self.config.num_classes, self.config.embed_dim];
        if state.shape("head.weight").is_some_and(|s| s != head) {
            state.retain(|k| k != "head.weight" && k != "head.bias");
        }
        let mut missing = vec!["head.weight", "head.bias"];
        let mut unused = vec!["mask_token", "decoder_", "cls_head.", "projection_head."];
        if self.config.global_pool {
            missing.extend(["fc_norm.weight", "fc_norm.bias"]);
            unused.push("norm.");
        }
        let policy = KeyPolicy {
            may_be_missing: missing
                .iter()
                .map(|k| KeyPattern::Exact(k.to_string()))
                .collect(),
            may_be_unused: prefixes(&unused),
        };
        load_state_dict(self, &state, &policy)
    }
}

/// One parameter of a module as the official checkpoints name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamKey {
    /// The PyTorch state-dict key (e.g. `blocks.0.attn.qkv.weight`).
    pub key: String,
    /// The Burn parameter id.
    pub id: burn::module::ParamId,
    /// Shape in Burn's layout.
    pub shape: Vec<usize>,
    /// Whether the PyTorch layout is the transpose of Burn's (Linear weights).
    pub transposed: bool,
    /// Whether the parameter receives gradients.
    pub trainable: bool,
}

/// Every parameter (and BatchNorm running statistic) of `module` with its PyTorch key.
pub fn param_keys<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamKey> {
    struct Keys {
        at: PathTracker,
        out: Vec<ParamKey>,
    }
    impl<B: Backend> burn::module::ModuleVisitor<B> for Keys {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.at.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.at.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.out.push(ParamKey {
                key: self.at.key(),
                id: param.id,
                shape: param.lazy_shape().to_vec(),
                transposed: self.at.is_linear_weight(D),
                trainable: param.is_require_grad(),
            });
        }
    }
    let mut keys = Keys {
        at: PathTracker::default(),
        out: Vec::new(),
    };
    module.visit(&mut keys);
    keys.out
}
