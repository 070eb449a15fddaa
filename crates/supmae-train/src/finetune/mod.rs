//! Fine-tuning (`main_finetune.py` + `engine_finetune.py`, spec §2.3 and §3): the ViT
//! classifier built from a pre-training checkpoint, layer-wise lr decay, AdamW, warmup +
//! cosine, drop path, Mixup/CutMix with label smoothing folded into soft targets,
//! RandAugment and random erasing, gradient accumulation, top-1/top-5 evaluation and the
//! best checkpoint kept. The [`Finetuning`] task and its [`Finetuner`].

use std::collections::HashMap;

use burn::module::ParamId;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator};
use burn::tensor::backend::AutodiffBackend;
use supmae_data::{AnySource, DataLoader, HostBatch};
use supmae_model::VitClassifier;
use supmae_model::checkpoint::{LoadReport, StateDict};

use crate::classifier::{BatchReport, RunSpec, start_run};
use crate::engine::{At, Engine, Task};
use crate::error::Result;
use crate::init::init_classifier;
use crate::peers::{PeerArg, Peers};
use crate::run_dir::{NewRun, RunDir};

mod config;
mod lrd;
mod mixup;
mod resume;
mod task;

pub use config::FinetuneConfig;

pub use lrd::{LrdGroup, finetune_no_weight_decay, layer_id, layer_scales, param_groups_lrd};
pub use mixup::{MixDraw, MixupConfig, cutmix_box, mix_batch, mix_batch_with, mixup_targets};
pub use task::FinetuneDraws;

type Opt<B> = OptimizerAdaptor<AdamW, VitClassifier<B>, B>;

/// One optimizer group: a layer id and a decay flag.
struct Group<B: AutodiffBackend> {
    scale: f64,
    opt: Opt<B>,
}

/// The fine-tuning task: a [`VitClassifier`] with one AdamW per layer-decay group, the
/// soft-target loss of Mixup/CutMix, and top-1/top-5 on the validation split.
pub struct Finetuning<B: AutodiffBackend> {
    config: FinetuneConfig,
    model: Option<VitClassifier<B>>,
    groups: Vec<Group<B>>,
    group_of: HashMap<ParamId, usize>,
    val: Option<DataLoader<AnySource>>,
    classes: Vec<String>,
    device: B::Device,
    load_report: Option<LoadReport>,
    accumulator: GradientsAccumulator<VitClassifier<B>>,
}

/// Fine-tunes a [`VitClassifier`]; writes `config.json`, `log.jsonl`, `checkpoint.ckpt`
/// (every epoch, atomically) and `best.ckpt` (highest `test_acc1`; the last epoch without
/// evaluation).
pub type Finetuner<B> = Engine<B, Finetuning<B>>;

impl<B: AutodiffBackend> Engine<B, Finetuning<B>> {
    /// Starts a run on explicit datasets. The run folder is locked for the fine-tuner's
    /// lifetime and refused if it holds a previous run (see [`NewRun`]).
    pub fn new(
        config: FinetuneConfig,
        train: AnySource,
        val: Option<AnySource>,
        out_dir: impl Into<NewRun>,
        device: B::Device,
    ) -> Result<Self> {
        Self::start(config, train, val, out_dir.into(), device, None)
    }

    /// Starts a run as one peer of a data-parallel run (see [`crate::distributed`]):
    /// `config.peers` must equal the run's peers, and every peer calls this with the same
    /// config and data; rank 0 writes the run folder.
    #[cfg(feature = "distributed")]
    pub fn new_on_peer(
        config: FinetuneConfig,
        train: AnySource,
        val: Option<AnySource>,
        out_dir: impl Into<NewRun>,
        device: B::Device,
        peer: crate::distributed::Peer<B::InnerBackend>,
    ) -> Result<Self> {
        Self::start(config, train, val, out_dir.into(), device, Some(peer))
    }

    fn start(
        config: FinetuneConfig,
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
        let (train, val, classes, run) = if peers.is_main() {
            let r = start_run(spec, &config, train, val, target)?;
            (r.train, r.val, r.classes, r.run)
        } else {
            let (t, v, c) = crate::classifier::loaders(&spec, train, val)?;
            (t, v, c, RunDir::unlocked(target.path()))
        };
        let (model, load_report) =
            init_classifier::<B>(&config.model, &config.init, config.seed, &device)?;
        let (groups, group_of) = optimizer_groups(&model, &config);
        let task = Finetuning {
            config,
            model: Some(model),
            groups,
            group_of,
            val,
            classes,
            device: device.clone(),
            load_report,
            accumulator: GradientsAccumulator::new(),
        };
        Engine::assemble(task, train, run, peers, device, Vec::new())
    }

    /// What loading the pre-trained checkpoint applied, left missing and ignored.
    pub fn load_report(&self) -> Option<&LoadReport> {
        self.task.load_report.as_ref()
    }

    /// The recipe.
    pub fn config(&self) -> &FinetuneConfig {
        &self.task.config
    }

    /// Number of optimizer groups (layer id × decay flag).
    pub fn num_groups(&self) -> usize {
        self.task.groups.len()
    }

    /// Trains on one micro-batch as iteration `iteration` of `epoch` (see
    /// [`Engine::step`]): the schedule's lr, Mixup/CutMix, drop path, the soft-target loss,
    /// accumulation, and an AdamW step of every layer-decay group at the end of each
    /// accumulation window. `draws` replaces the run's random draws (the PyTorch trajectory
    /// tests replay PyTorch's).
    pub fn train_batch(
        &mut self,
        epoch: usize,
        iteration: usize,
        batch: HostBatch,
        draws: FinetuneDraws,
    ) -> Result<BatchReport> {
        let report = self.step(At { epoch, iteration }, batch, draws)?;
        Ok(BatchReport {
            loss: report.values.first().copied().unwrap_or(f64::NAN),
            lr: report.lr,
            stepped: report.stepped,
        })
    }

    /// Replaces the classifier's weights by an official-key state dict holding every key
    /// of the model (a fine-tuned `.pth`, or one prepared elsewhere), keeping the optimizer
    /// groups and state.
    pub fn load_state_dict(&mut self, state: &StateDict) -> Result<LoadReport> {
        let (model, report) = supmae_model::checkpoint::load_state_dict(
            self.task.model().clone(),
            state,
            &supmae_model::checkpoint::KeyPolicy::default(),
        )?;
        self.task.model = Some(model);
        Ok(report)
    }
}

/// The optimizer groups of `param_groups_lrd` and the group of every parameter.
fn optimizer_groups<B: AutodiffBackend>(
    model: &VitClassifier<B>,
    config: &FinetuneConfig,
) -> (Vec<Group<B>>, HashMap<ParamId, usize>) {
    let lrd = param_groups_lrd(
        model,
        config.weight_decay,
        config.layer_decay,
        config.model.depth,
    );
    let mut groups = Vec::new();
    let mut group_of = HashMap::new();
    for (g, group) in lrd.iter().enumerate() {
        groups.push(Group {
            scale: group.lr_scale,
            opt: AdamWConfig::new()
                .with_beta_1(config.betas.0 as f32)
                .with_beta_2(config.betas.1 as f32)
                .with_epsilon(config.eps as f32)
                .with_weight_decay(group.weight_decay as f32)
                .init::<B, VitClassifier<B>>(),
        });
        for (_, id) in &group.params {
            group_of.insert(*id, g);
        }
    }
    (groups, group_of)
}

/// What a fine-tuning run is built from, for this peer.
fn run_spec<'a, B: AutodiffBackend>(config: &'a FinetuneConfig, peers: &Peers<B>) -> RunSpec<'a> {
    RunSpec {
        model: &config.model,
        data: &config.data,
        batch_size: config.batch_size,
        seed: config.seed,
        threads: config.data_threads,
        eval: config.eval,
        train_transform: config.train_transform(),
        shard: peers.shard(),
    }
}
