//! Where a classifier's weights start, and building it from there.

#[allow(unused_imports)]
use super::*;

/// Where a classifier's weights start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Init {
    /// Random weights (supervised training from scratch).
    Scratch,
    /// A pre-training checkpoint: a run folder or `checkpoint.ckpt` of ours, or an official
    /// PyTorch `.pth` (SupMAE, MAE).
    Pretrained {
        /// The file or run folder.
        path: PathBuf,
    },
}

/// Whether `path` is (or holds) one of our training checkpoints.
pub fn is_native_checkpoint(path: &Path) -> bool {
    let file = crate::run_dir::checkpoint_in(path);
    let mut magic = [0u8; 18];
    std::fs::File::open(&file)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic.as_slice() == crate::checkpoint::MAGIC
}

/// The encoder weights of a pre-training checkpoint as an official-key state dict.
pub fn pretrained_state<B: Backend>(path: &Path, device: &B::Device) -> Result<StateDict> {
    if is_native_checkpoint(path) {
        let (model, _) = load_pretrained::<B>(path, device)?;
        Ok(StateDict::from_entries(path, export_state_dict(&model)))
    } else {
        Ok(StateDict::from_pytorch(path)?)
    }
}

/// Builds a classifier with `seed` and, for [`Init::Pretrained`], loads the encoder as
/// `main_finetune.py` does (exact missing/unused key sets, `pos_embed` resampled, fresh
/// head).
pub fn init_classifier<B: Backend>(
    model: &VitConfig,
    init: &Init,
    seed: u64,
    device: &B::Device,
) -> Result<(VitClassifier<B>, Option<LoadReport>)> {
    let vit = model.init_seeded::<B>(seed, device)?;
    match init {
        Init::Scratch => Ok((vit, None)),
        Init::Pretrained { path } => {
            let state = pretrained_state::<B>(path, device)?;
            let (vit, report) = vit.load_pretrained_state(state)?;
            Ok((vit, Some(report)))
        }
    }
}

pub(crate) fn append_jsonl<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    let line = serde_json::to_string(value).map_err(json("a log.jsonl line"))?;
    writeln!(file, "{line}").map_err(io(path))
}
