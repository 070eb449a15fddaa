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

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::{ModuleMapper, Param};
use burn::prelude::*;

use crate::error::CheckpointError;

mod pickle;
mod state_dict;
mod tensor_ref;
mod torch;

/// Opens `path` for reading if it is a regular file (after following symlinks): a FIFO, a
/// device or a directory is an error instead of a read that hangs or never ends. The open
/// itself does not block on a FIFO.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a directory, FIFO or device)",
        ));
    }
    Ok(file)
}

pub use state_dict::{Entry, StateDict};

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
            // `iter` converts every element (no error path to swallow).
            let values: Vec<f32> = tensor.into_data().iter::<f32>().collect();
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

/// The lengths of a module's lists of blocks next to a record's, so a record with more or
/// fewer blocks than the config is a typed error before Burn's `load_record` (which
/// asserts on a length mismatch) sees it.
pub trait BlockCounts<B: Backend>: Module<B> {
    /// `(list name, blocks in the module, blocks in the record)` for every list of blocks.
    fn block_counts(&self, record: &Self::Record) -> Vec<(&'static str, usize, usize)>;
}

impl<B: Backend> BlockCounts<B> for crate::SupMae<B> {
    fn block_counts(&self, record: &Self::Record) -> Vec<(&'static str, usize, usize)> {
        vec![
            ("blocks", self.blocks.len(), record.blocks.len()),
            (
                "decoder_blocks",
                self.decoder_blocks.len(),
                record.decoder_blocks.len(),
            ),
        ]
    }
}

impl<B: Backend> BlockCounts<B> for crate::VitClassifier<B> {
    fn block_counts(&self, record: &Self::Record) -> Vec<(&'static str, usize, usize)> {
        vec![("blocks", self.blocks.len(), record.blocks.len())]
    }
}
