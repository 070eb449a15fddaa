//! Resuming a fine-tuning run: model, every optimizer group and the schedule position
//! from its checkpoint.

use std::path::Path;

use burn::optim::{GradientsAccumulator, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use supmae_data::AnySource;

use super::{FinetuneConfig, Finetuner, Finetuning, optimizer_groups, run_spec};
use crate::checkpoint::CheckpointParts;
use crate::classifier::{ClassifierKind, ClassifierMeta, Resumable};
use crate::engine::Engine;
use crate::error::{Result, TrainError};
use crate::peers::{PeerArg, Peers};
use crate::run_dir::{CHECKPOINT_FILE, RunDir};

impl<B: AutodiffBackend> Finetuner<B> {
    /// Continues the fine-tuning run saved in `out_dir` (its `checkpoint.ckpt`), with the
    /// data of its recipe, to the parameters an uninterrupted run reaches.
    pub fn resume(out_dir: impl AsRef<Path>, device: B::Device) -> Result<Self> {
        let (run, parts, meta, config) = open_for_resume(out_dir.as_ref(), true)?;
        let (train, val) = crate::pretrain::load_data(&config.data)?;
        Self::resume_with(run, parts, meta, config, train, val, device, None)
    }

    /// [`resume_on`](Self::resume_on) as one peer of a data-parallel run (with the same
    /// number of peers): every peer reads the checkpoint, rank 0 goes on writing the folder.
    #[cfg(feature = "distributed")]
    pub fn resume_on_peer(
        out_dir: impl AsRef<Path>,
        train: AnySource,
        val: Option<AnySource>,
        device: B::Device,
        peer: crate::distributed::Peer<B::InnerBackend>,
    ) -> Result<Self> {
        let main = peer.rank() == 0;
        let (run, parts, meta, config) = open_for_resume(out_dir.as_ref(), main)?;
        Self::resume_with(run, parts, meta, config, train, val, device, Some(peer))
    }

    /// [`resume`](Self::resume) on explicit datasets (the same the run started with).
    pub fn resume_on(
        out_dir: impl AsRef<Path>,
        train: AnySource,
        val: Option<AnySource>,
        device: B::Device,
    ) -> Result<Self> {
        let (run, parts, meta, config) = open_for_resume(out_dir.as_ref(), true)?;
        Self::resume_with(run, parts, meta, config, train, val, device, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn resume_with(
        run: RunDir,
        parts: CheckpointParts,
        meta: ClassifierMeta,
        config: FinetuneConfig,
        train: AnySource,
        val: Option<AnySource>,
        device: B::Device,
        peer: PeerArg<B>,
    ) -> Result<Self> {
        let path = run.file(CHECKPOINT_FILE);
        let bad = |what: &str, e: String| TrainError::Checkpoint {
            path: path.clone(),
            reason: format!("{what}: {e}"),
        };
        let peers = Peers::new(peer);
        peers.check_count(config.peers)?;
        let spec = run_spec(&config, &peers);
        let (train, val, classes) = crate::classifier::loaders(&spec, train, val)?;
        let model = crate::checkpoint::load_model::<B, _>(
            &path,
            parts.model,
            config.model.param_count().total(),
            || config.model.init::<B>(&device),
            &device,
        )?;
        let (mut groups, group_of) = optimizer_groups(&model, &config);
        let records = crate::checkpoint::unpack(&parts.optim_decay)
            .filter(|r| r.len() == groups.len())
            .ok_or_else(|| {
                bad(
                    "cannot resume",
                    format!(
                        "it holds no optimizer state for the run's {} groups (written by an \
                         older supmae, or not a fine-tuning checkpoint)",
                        groups.len()
                    ),
                )
            })?;
        for (group, bytes) in groups.iter_mut().zip(records) {
            let record = crate::checkpoint::decode_record::<B, _>(bytes, &device)
                .map_err(|e| bad("optimizer record", e))?;
            group.opt = group.opt.clone().load_record(record);
        }
        let task = Finetuning {
            config,
            model: Some(model),
            groups,
            group_of,
            val,
            classes,
            device: device.clone(),
            load_report: None,
            accumulator: GradientsAccumulator::new(),
        };
        Engine::assemble(task, train, run, peers, device, meta.history)
    }
}

/// Reads the run folder's checkpoint and recipe (see
/// [`crate::classifier::open_for_resume`]) and checks the recipe.
fn open_for_resume(out_dir: &Path, lock: bool) -> Result<Resumable<FinetuneConfig>> {
    let opened: Resumable<FinetuneConfig> =
        crate::classifier::open_for_resume(out_dir, lock, ClassifierKind::Finetune)?;
    opened.3.validate()?;
    Ok(opened)
}
