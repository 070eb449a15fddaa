//! Linear probing (`main_linprobe.py`, spec §2.4): a frozen pre-trained encoder, its cls
//! token after the final `norm`, then `BatchNorm1d(D, affine=False, eps=1e-6)` and a
//! `Linear(D → classes)` (weight `N(0, 0.01²)`, bias 0) trained with LARS. The
//! [`Linprobing`] task and its [`LinearProber`].

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use supmae_data::{AnySource, DataLoader, Geometry, HostBatch, Transform};
use supmae_model::VitClassifier;
use supmae_model::checkpoint::{LoadReport, StateDict};

use crate::classifier::{BatchReport, RunSpec, start_run};
use crate::engine::{At, Engine};
use crate::error::Result;
use crate::init::init_classifier;
use crate::peers::{PeerArg, Peers};

use crate::run_dir::{NewRun, RunDir};

mod config;
mod resume;
mod task;

pub use crate::probe::{LarsConfig, LinearProbe, PROBE_BN_EPS, ProbeNorm, lars_update};
pub use config::LinprobeConfig;

/// Accumulated gradients of the probe's weight and bias.
type HeadGrads<B> = (
    Tensor<<B as AutodiffBackend>::InnerBackend, 2>,
    Tensor<<B as AutodiffBackend>::InnerBackend, 1>,
);

/// The linear-probing task: BatchNorm + Linear on the frozen encoder's cls token, LARS
/// on the head alone, and top-1/top-5 on the validation split.
pub struct Linprobing<B: AutodiffBackend> {
    config: LinprobeConfig,
    model: LinearProbe<B>,
    frozen: VitClassifier<B::InnerBackend>,
    mu_weight: Option<Tensor<B::InnerBackend, 2>>,
    mu_bias: Option<Tensor<B::InnerBackend, 1>>,
    pending: Option<HeadGrads<B>>,
    val: Option<DataLoader<AnySource>>,
    classes: Vec<String>,
    device: B::Device,
    load_report: Option<LoadReport>,
}

/// Trains a linear probe on a frozen encoder; writes `config.json`, `log.jsonl`,
/// `checkpoint.ckpt` (every epoch) and `best.ckpt` (best `test_acc1`; the last epoch
/// without evaluation).
pub type LinearProber<B> = Engine<B, Linprobing<B>>;

impl<B: AutodiffBackend> Engine<B, Linprobing<B>> {
    /// Starts a run on explicit datasets. The run folder is locked for the prober's
    /// lifetime and refused if it holds a previous run (see [`NewRun`]).
    pub fn new(
        config: LinprobeConfig,
        train: AnySource,
        val: Option<AnySource>,
        out_dir: impl Into<NewRun>,
        device: B::Device,
    ) -> Result<Self> {
        Self::start(config, train, val, out_dir.into(), device, None)
    }

    /// Starts a run as one peer of a data-parallel run: `config.peers` must equal the run's
    /// peers; every peer calls this with the same config and data; rank 0 writes the run
    /// folder. The BatchNorm statistics are the global batch's (synchronised).
    #[cfg(feature = "distributed")]
    pub fn new_on_peer(
        config: LinprobeConfig,
        train: AnySource,
        val: Option<AnySource>,
        out_dir: impl Into<NewRun>,
        device: B::Device,
        peer: crate::distributed::Peer<B::InnerBackend>,
    ) -> Result<Self> {
        Self::start(config, train, val, out_dir.into(), device, Some(peer))
    }

    fn start(
        config: LinprobeConfig,
        train: AnySource,
        val: Option<AnySource>,
        target: NewRun,
        device: B::Device,
        peer: PeerArg<B>,
    ) -> Result<Self> {
        config.validate()?;
        let peers = Peers::new(peer);
        peers.check_count(config.peers)?;
        let spec = run_spec(&config, &peers);
        let run = if peers.is_main() {
            start_run(spec, &config, train, val, target)?
        } else {
            let (train, val, classes) = crate::classifier::loaders(&spec, train, val)?;
            crate::classifier::Run {
                train,
                val,
                classes,
                run: RunDir::unlocked(target.path()),
            }
        };
        let (encoder, load_report) =
            init_classifier::<B>(&config.model, &config.init, config.seed, &device)?;
        let model = LinearProbe {
            bn: ProbeNorm::new(config.model.embed_dim, &device),
            encoder,
        };
        let frozen = model.encoder.valid();
        let task = Linprobing {
            config,
            model,
            frozen,
            mu_weight: None,
            mu_bias: None,
            pending: None,
            val: run.val,
            classes: run.classes,
            device: device.clone(),
            load_report,
        };
        Engine::assemble(task, run.train, run.run, peers, device, Vec::new())
    }

    /// What loading the pre-trained checkpoint applied, left missing and ignored.
    pub fn load_report(&self) -> Option<&LoadReport> {
        self.task.load_report.as_ref()
    }

    /// The recipe.
    pub fn config(&self) -> &LinprobeConfig {
        &self.task.config
    }

    /// Trains the probe on one micro-batch as iteration `iteration` of `epoch` (see
    /// [`Engine::step`]): frozen features, the BatchNorm in training mode (running
    /// statistics updated), cross-entropy, the head's gradients accumulated, and a LARS
    /// step at the end of each accumulation window.
    pub fn train_batch(
        &mut self,
        epoch: usize,
        iteration: usize,
        batch: HostBatch,
    ) -> Result<BatchReport> {
        let report = self.step(At { epoch, iteration }, batch, ())?;
        Ok(BatchReport {
            loss: report.values.first().copied().unwrap_or(f64::NAN),
            lr: report.lr,
            stepped: report.stepped,
        })
    }

    /// Replaces the encoder and head by an official-key state dict of the classifier (every
    /// key of a cls-token ViT: `patch_embed.*`, `blocks.*`, `norm.*`, `head.*`, ...) and
    /// clears the LARS momentum; the BatchNorm statistics are kept.
    pub fn load_state_dict(&mut self, state: &StateDict) -> Result<LoadReport> {
        let task = &mut self.task;
        let (encoder, report) = supmae_model::checkpoint::load_state_dict(
            task.model.encoder.clone(),
            state,
            &supmae_model::checkpoint::KeyPolicy::default(),
        )?;
        task.frozen = encoder.valid();
        task.model.encoder = encoder;
        task.mu_weight = None;
        task.mu_bias = None;
        task.pending = None;
        Ok(report)
    }
}

/// The probe's weak augmentation: `RandomResizedCrop` + flip, no colour jitter.
fn probe_transform(config: &LinprobeConfig) -> Transform {
    Transform {
        geometry: Geometry::RandomResizedCropOnce {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        },
        ..Transform::pretrain(config.model.img_size as u32)
    }
}

/// What a probing run is built from, for this peer.
fn run_spec<'a, B: AutodiffBackend>(config: &'a LinprobeConfig, peers: &Peers<B>) -> RunSpec<'a> {
    RunSpec {
        model: &config.model,
        data: &config.data,
        batch_size: config.batch_size,
        seed: config.seed,
        threads: config.data_threads,
        eval: config.eval,
        train_transform: probe_transform(config),
        shard: peers.shard(),
    }
}
