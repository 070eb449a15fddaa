//! Resuming a linear-probing run: the probe, the LARS momentum and the schedule position
//! from its checkpoint.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use supmae_data::AnySource;

use super::{LinearProber, LinprobeConfig, Linprobing, run_spec};
use crate::checkpoint::CheckpointParts;
use crate::classifier::{ClassifierKind, ClassifierMeta, Resumable};
use crate::engine::Engine;
use crate::error::{Result, TrainError};
use crate::peers::{PeerArg, Peers};
use crate::probe::{LinearProbe, ProbeNorm};
use crate::run_dir::{CHECKPOINT_FILE, RunDir};

impl<B: AutodiffBackend> LinearProber<B> {
    /// Continues the linear-probing run saved in `out_dir` (its `checkpoint.ckpt`: probe,
    /// LARS momentum, schedule position), with the data of its recipe, to the parameters an
    /// uninterrupted run reaches.
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
        config: LinprobeConfig,
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
            || {
                Ok(LinearProbe {
                    bn: ProbeNorm::new(config.model.embed_dim, &device),
                    encoder: config.model.init::<B>(&device)?,
                })
            },
            &device,
        )?;
        let (d, c) = (config.model.embed_dim, config.model.num_classes);
        let [mw, mb] = crate::checkpoint::unpack(&parts.optim_decay)
            .and_then(|r| <[Vec<u8>; 2]>::try_from(r).ok())
            .ok_or_else(|| {
                bad(
                    "cannot resume",
                    "it holds no LARS momentum (written by an older supmae, or not a \
                     linear-probing checkpoint)"
                        .into(),
                )
            })?;
        let mu_weight = momentum_from_bytes::<B::InnerBackend, 2>(&mw, [d, c], &device)
            .map_err(|e| bad("LARS momentum of head.weight", e))?;
        let mu_bias = momentum_from_bytes::<B::InnerBackend, 1>(&mb, [c], &device)
            .map_err(|e| bad("LARS momentum of head.bias", e))?;
        let frozen = model.encoder.valid();
        let task = Linprobing {
            config,
            model,
            frozen,
            mu_weight,
            mu_bias,
            pending: None,
            val,
            classes,
            device: device.clone(),
            load_report: None,
        };
        Engine::assemble(task, train, run, peers, device, meta.history)
    }
}

/// A LARS momentum buffer as little-endian `f32` bytes (empty before the first step).
pub(super) fn momentum_bytes<B: Backend, const D: usize>(
    mu: Option<&Tensor<B, D>>,
) -> Result<Vec<u8>> {
    let Some(mu) = mu else {
        return Ok(Vec::new());
    };
    let values = mu
        .clone()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| TrainError::TensorRead {
            what: "the LARS momentum",
            reason: format!("{e:?}"),
        })?;
    Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// The inverse of [`momentum_bytes`] for a buffer of `shape`.
fn momentum_from_bytes<B: Backend, const D: usize>(
    bytes: &[u8],
    shape: [usize; D],
    device: &B::Device,
) -> std::result::Result<Option<Tensor<B, D>>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let n: usize = shape.iter().product();
    if bytes.len() != n * 4 {
        return Err(format!("{} bytes for a {shape:?} buffer", bytes.len()));
    }
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Some(Tensor::from_data(
        TensorData::new(values, shape),
        device,
    )))
}

/// Reads the run folder's checkpoint and recipe (see
/// [`crate::classifier::open_for_resume`]) and checks the recipe.
fn open_for_resume(out_dir: &Path, lock: bool) -> Result<Resumable<LinprobeConfig>> {
    let opened: Resumable<LinprobeConfig> =
        crate::classifier::open_for_resume(out_dir, lock, ClassifierKind::Linprobe)?;
    opened.3.validate()?;
    Ok(opened)
}
