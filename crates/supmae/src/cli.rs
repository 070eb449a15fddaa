//! The `supmae` command line: argument parsing and the commands, as library code so it is
//! tested like the rest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use supmae_data::{AnySource, DataLoader, FolderDataset, ImageNet, LoaderConfig, ScanOptions};
use supmae_data::{DEFAULT_MAX_PIXELS, ImageSource, check_dataset};
use supmae_model::checkpoint::{KeyPolicy, StateDict, load_state_dict};
use supmae_model::{MAE_PRESETS, MaeConfig, VitConfig};
use supmae_train::classifier::{
    Classifier, classifier_transforms, evaluate, read_classifier_checkpoint,
};
use supmae_train::finetune::is_native_checkpoint;
use supmae_train::{
    ClassifierLog, DataSpec, EvalReport, FinetuneConfig, Finetuner, Init, LinearProber,
    LinprobeConfig, PretrainConfig, Pretrainer, ProgressMode, load_classifier, load_data,
};

use crate::backend::{BackendJob, BackendKind, run_on};

/// Top-level help.
pub const HELP: &str = "\
supmae: supervised masked autoencoders (SupMAE, MAE) in Rust

USAGE:
    supmae pretrain [OPTIONS]      pre-train a SupMAE or MAE
    supmae finetune [OPTIONS]      fine-tune a ViT classifier from a pre-training checkpoint
    supmae linprobe [OPTIONS]      train a linear probe on a frozen pre-trained encoder
    supmae eval [OPTIONS]          top-1 / top-5 of a fine-tuned or probed checkpoint
    supmae reconstruct [OPTIONS]   picture of masked images and their reconstructions
    supmae inspect <CHECKPOINT>    which checkpoint flavour a file is and what it can do
    supmae bench [OPTIONS]         training-step and inference throughput of a config
    supmae check-backend [OPTIONS] a backend's outputs and gradients vs the PyTorch fixtures
    supmae convert --checkpoint <IN> --out <OUT.safetensors|OUT.ckpt>
                                   to official key names (safetensors) or our format
    supmae data check <ROOT>       scan a dataset and report classes, counts and bad files
    supmae help [COMMAND]          this help, or a command's

Run `supmae <COMMAND> --help` for a command's options.";

/// Help of `supmae finetune`.
pub const FINETUNE_HELP: &str = "\
supmae finetune: fine-tune a ViT classifier (main_finetune.py)

Builds the classifier from a pre-training checkpoint (a run folder or checkpoint.ckpt of
`supmae pretrain`, or an official SupMAE/MAE .pth): the decoder, mask token and
classification branch are dropped, fc_norm and the head (std 2e-5) are fresh, pos_embed is
resampled when the resolution differs. Without --checkpoint the classifier trains from
scratch (supervised baseline).

With no options, fine-tunes the small Fashion-MNIST model on the embedded subset (10
epochs). On other data the defaults are SupMAE's released recipe (ViT-B/16, 100 epochs).

OPTIONS:
    --checkpoint <PATH>      pre-training checkpoint (run folder, .ckpt, or official .pth)
    --data <DATA>            fashion-mnist[:DIR], embedded (default), or an ImageNet-style
                             folder (train/ + val/)
    --model <MODEL>          a ViT preset (vit_base_patch16, ...) or a JSON VitConfig, for
                             official .pth files and --checkpoint-less runs [default: the
                             checkpoint's encoder, else vit_base_patch16 / the small model]
    --cls-token              pool with the cls token + norm instead of the global average
    --epochs <N>             [default: 100; Fashion-MNIST 10]
    --batch-size <N>         images per micro-batch [default: 32; Fashion-MNIST 128]
    --accum-iter <N>         micro-batches per step [default: 4; Fashion-MNIST 1]
    --blr <F>                base lr: lr = blr * batch * accum / 256
                             [default: 1e-3; Fashion-MNIST 4e-3]
    --lr <F>                 absolute lr (overrides --blr)
    --min-lr <F>             final lr of the cosine [default: 1e-6]
    --warmup-epochs <F>      [default: 5; Fashion-MNIST 1]
    --weight-decay <F>       [default: 0.05]
    --layer-decay <F>        layer-wise lr decay [default: 0.65; Fashion-MNIST 0.75]
    --drop-path <F>          stochastic depth [default: 0.1]
    --mixup <F>              Mixup alpha, 0 = off [default: 0.8; Fashion-MNIST 0]
    --cutmix <F>             CutMix alpha, 0 = off [default: 1.0; Fashion-MNIST 0]
    --mixup-prob <F>         probability of mixing a batch [default: 1.0]
    --mixup-switch-prob <F>  probability of CutMix when both are on [default: 0.5]
    --smoothing <F>          label smoothing [default: 0.1]
    --aa <SPEC|none>         RandAugment [default: rand-m9-mstd0.5-inc1; Fashion-MNIST none]
    --reprob <F>             random-erasing probability [default: 0.25; Fashion-MNIST 0]
    --seed <N>               [default: 0]
    --threads <N>            data-loading threads, 0 = all cores [default: 0]
    --no-eval                skip the per-epoch validation
    --backend <NAME>         flex, wgpu, vulkan or cuda, if compiled in
    --out <DIR>              run folder: config.json, log.jsonl, checkpoint.ckpt, best.ckpt
                             [default: runs/finetune]";

/// Help of `supmae linprobe`.
pub const LINPROBE_HELP: &str = "\
supmae linprobe: linear probe on a frozen encoder (main_linprobe.py)

Loads the encoder of a pre-training checkpoint (cls-token features after the final norm),
adds BatchNorm (no affine, eps 1e-6) + Linear (std 0.01) and trains only those with LARS
(momentum 0.9, trust coefficient 0.001, no weight decay), warmup + cosine.

OPTIONS:
    --checkpoint <PATH>      pre-training checkpoint (run folder, .ckpt, or official .pth)
                             [required, unless --scratch for a random-encoder baseline]
    --scratch                probe a randomly initialised encoder
    --data <DATA>            as for finetune [default: embedded]
    --model <MODEL>          ViT preset / JSON for official .pth files [default: the
                             checkpoint's encoder, else vit_base_patch16]
    --epochs <N>             [default: 90; Fashion-MNIST 10]
    --batch-size <N>         [default: 512; Fashion-MNIST 256]
    --accum-iter <N>         [default: 1]
    --blr <F>                base lr: lr = blr * batch * accum / 256
                             [default: 0.1; Fashion-MNIST 4.0]
    --lr <F>                 absolute lr (overrides --blr)
    --min-lr <F>             [default: 0]
    --warmup-epochs <F>      [default: 10; Fashion-MNIST 1]
    --weight-decay <F>       LARS weight decay of the weight matrix [default: 0]
    --seed, --threads, --no-eval, --backend as for finetune
    --out <DIR>              [default: runs/linprobe]";

/// Help of `supmae reconstruct`.
pub const RECONSTRUCT_HELP: &str = "\
supmae reconstruct: reconstruct masked images, as MAE's visualisation demo

Writes a PNG with one row per image: original | masked | reconstruction | reconstruction
with the visible patches pasted back, and prints each image's error on the removed patches
next to the error of predicting every removed patch as its own mean colour. Predictions of
normalised-pixel checkpoints are de-normalised with each original patch's mean and
variance.

OPTIONS:
    --checkpoint <PATH>      a checkpoint with a decoder: a `supmae pretrain` run folder or
                             .ckpt, or an official SupMAE / MAE full .pth or .safetensors
    --image <FILE>           an image to reconstruct (repeat for more rows)
    --out <FILE>             the PNG to write [default: reconstruction.png]
    --mask-ratio <F>         share of patches removed [default: 0.75]
    --seed <N>               seed of the masks [default: 0]
    --scale <N>              pixel zoom of each picture [default: 1; 28 px models: 4]
    --pixel-targets          the model predicts raw pixels (mae_visualize_*.pth names are
                             detected)
    --backend <NAME>         flex, wgpu, vulkan or cuda, if compiled in";

/// Help of `supmae eval`.
pub const EVAL_HELP: &str = "\
supmae eval: top-1 / top-5 and loss of a classifier on a validation split

OPTIONS:
    --checkpoint <PATH>      a fine-tuning or linear-probing run folder (its best.ckpt) or
                             .ckpt file, or an official fine-tuned .pth
                             (mae_finetuned_vit_*, supmae_vitb_ft_100e.pth)
    --data <DATA>            fashion-mnist[:DIR], embedded, an ImageNet root (its val/ is
                             used) or a folder of class sub-folders [default: the data the
                             checkpoint was trained on; required for .pth files]
    --model <MODEL>          ViT preset or JSON VitConfig of an official .pth (classes and
                             pooling are read from the file) [default: vit_base_patch16]
    --batch-size <N>         [default: 64]
    --threads <N>            data-loading threads [default: 0]
    --backend <NAME>         flex, wgpu, vulkan or cuda, if compiled in";

/// Help of `supmae pretrain`.
pub const PRETRAIN_HELP: &str = "\
supmae pretrain: pre-train a SupMAE (or MAE) and watch it learn

With no options, trains a small SupMAE (28 px, 7 px patches, 96-wide 4-block encoder,
20 epochs) on the Fashion-MNIST subset compiled into supmae (10,000 train / 2,000 val
images) on the CPU in about 9 minutes, printing the reconstruction loss and the
classification branch's validation accuracy.

OPTIONS:
    --data <DATA>          fashion-mnist[:DIR] (full set; default DIR is Debian's
                           /usr/share/datasets/fashion-mnist), embedded (default), or a
                           folder: an ImageNet root (train/ + val/) or class sub-folders
    --model <MODEL>        a preset (see below) or a JSON model config file
                           [default: the small CPU model for Fashion-MNIST, else
                           supmae_vit_base_patch16_dec512d1b]
    --mode <supmae|mae>    keep or drop the classification branch [default: supmae]
    --epochs <N>           epochs of the run (the schedule's length)
    --batch-size <N>       images per micro-batch
    --accum-iter <N>       micro-batches per optimizer step [default: 1]
    --blr <F>              base learning rate: lr = blr * batch * accum / 256
    --lr <F>               absolute learning rate (overrides --blr)
    --min-lr <F>           final learning rate of the cosine [default: 0]
    --weight-decay <F>     AdamW weight decay of weights (not biases/norms) [default: 0.05]
    --mask-ratio <F>       share of patches removed [default: 0.75]
    --warmup-epochs <F>    linear warmup epochs
    --seed <N>             seed of weights, data order, augmentation, masks [default: 0]
    --checkpoint-every <N> checkpoint every N epochs (and after the last)
    --threads <N>          data-loading threads, 0 = all cores [default: 0]
    --no-eval              skip the per-epoch validation of the classification branch
    --backend <NAME>       flex (CPU), wgpu, vulkan or cuda, if compiled in
                           [default: the best compiled]
    --out <DIR>            run folder: config.json, log.jsonl, checkpoint.ckpt
                           [default: runs/pretrain]
    --resume               continue the run in --out from its checkpoint (its saved
                           config is used; other options are ignored)

DATA-PARALLEL OPTIONS (every peer loads --batch-size images, so a step sees
batch x accum x peers images and lr = blr x that / 256; peers end every step with
identical parameters):
    --devices <N>          train on N devices of this machine, one thread each (GPUs
                           0..N-1), through burn-collective [default: 1]
    --nodes <K>            run as one of K processes, one device each (one process per
                           GPU, on one or several machines) [default: 1]
    --node-rank <R>        this process's index, 0..K; process 0 writes the run folder
    --master <HOST:PORT>   where process 0 listens and the others connect
    Every process runs the same command (same options, seed and data) with its own
    --node-rank; with several machines, give each process its GPU with
    CUDA_VISIBLE_DEVICES.

PRESETS:
";

/// A command-line error: one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

fn err<T>(message: impl Into<String>) -> Result<T, CliError> {
    Err(CliError(message.into()))
}

/// Parsed `--flag value` options.
#[derive(Debug, Default)]
pub struct Options {
    values: BTreeMap<String, Vec<String>>,
    switches: Vec<String>,
}

const SWITCHES: &[&str] = &[
    "resume",
    "no-eval",
    "help",
    "cls-token",
    "scratch",
    "pixel-targets",
];
const VALUED: &[&str] = &[
    "data",
    "model",
    "mode",
    "epochs",
    "batch-size",
    "accum-iter",
    "blr",
    "lr",
    "min-lr",
    "weight-decay",
    "mask-ratio",
    "warmup-epochs",
    "seed",
    "checkpoint-every",
    "threads",
    "backend",
    "out",
    "checkpoint",
    "layer-decay",
    "drop-path",
    "mixup",
    "cutmix",
    "mixup-prob",
    "mixup-switch-prob",
    "smoothing",
    "aa",
    "reprob",
    "image",
    "scale",
    "config",
    "steps",
    "fixtures",
    "devices",
    "nodes",
    "node-rank",
    "master",
];

impl Options {
    /// Parses `--name value`, `--name=value` and switches.
    pub fn parse(args: &[String]) -> Result<Self, CliError> {
        let mut opts = Self::default();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            let Some(name) = arg.strip_prefix("--") else {
                return err(format!("unexpected argument `{arg}` (see --help)"));
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name, None),
            };
            if SWITCHES.contains(&name) {
                opts.switches.push(name.to_string());
            } else if VALUED.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        match args.get(i) {
                            Some(v) => v.clone(),
                            None => return err(format!("--{name} needs a value")),
                        }
                    }
                };
                opts.values.entry(name.to_string()).or_default().push(value);
            } else {
                return err(format!("unknown option `--{name}` (see --help)"));
            }
            i += 1;
        }
        Ok(opts)
    }

    /// Whether a switch was given.
    pub fn has(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    /// Every value of a repeatable option, in order.
    pub fn get_all(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    /// The raw value of an option (the last, when repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, CliError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| CliError(format!("--{name}: `{v}` is not a valid value"))),
        }
    }
}

/// Builds the pre-training recipe from the options.
pub fn pretrain_config(opts: &Options) -> Result<PretrainConfig, CliError> {
    let data = DataSpec::parse(opts.get("data"));
    let mut config = if data.is_fashion_mnist() {
        PretrainConfig {
            data: data.clone(),
            ..PretrainConfig::fashion_mnist_cpu()
        }
    } else {
        PretrainConfig::supmae_recipe(data.clone())
    };
    if let Some(model) = opts.get("model") {
        let path = PathBuf::from(model);
        config.model = if path.extension().is_some_and(|e| e == "json") || path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CliError(format!("--model {model}: {e}")))?;
            serde_json::from_str(&text)
                .map_err(|e| CliError(format!("--model {model}: not a model config: {e}")))?
        } else {
            MaeConfig::preset(model).map_err(|e| CliError(format!("--model: {e}")))?
        };
        if data.is_fashion_mnist() && config.model.cls_head.is_some() {
            let head = config
                .model
                .cls_head
                .clone()
                .map(|h| h.with_num_classes(10));
            config.model = config.model.clone().with_cls_head(head);
        }
    }
    match opts.get("mode") {
        None | Some("supmae") => {
            if config.model.cls_head.is_none() {
                config.model = config
                    .model
                    .clone()
                    .with_cls_head(Some(supmae_model::ClsHeadConfig::new()));
            }
        }
        Some("mae") => config.model = config.model.clone().with_cls_head(None),
        Some(other) => return err(format!("--mode: `{other}` is neither supmae nor mae")),
    }
    if let Some(v) = opts.parsed("epochs")? {
        config.epochs = v;
        config.warmup_epochs = config.warmup_epochs.min(v as f64);
        config.checkpoint_every = config.checkpoint_every.min(v);
    }
    if let Some(v) = opts.parsed("batch-size")? {
        config.batch_size = v;
    }
    if let Some(v) = opts.parsed("accum-iter")? {
        config.accum_iter = v;
    }
    if let Some(v) = opts.parsed("blr")? {
        config.blr = v;
    }
    if let Some(v) = opts.parsed::<f64>("lr")? {
        config.lr = Some(v);
    }
    if let Some(v) = opts.parsed("min-lr")? {
        config.min_lr = v;
    }
    if let Some(v) = opts.parsed("weight-decay")? {
        config.weight_decay = v;
    }
    if let Some(v) = opts.parsed("mask-ratio")? {
        config.mask_ratio = v;
    }
    if let Some(v) = opts.parsed("warmup-epochs")? {
        config.warmup_epochs = v;
    }
    if let Some(v) = opts.parsed("seed")? {
        config.seed = v;
    }
    if let Some(v) = opts.parsed("checkpoint-every")? {
        config.checkpoint_every = v;
    }
    if let Some(v) = opts.parsed("threads")? {
        config.data_threads = v;
    }
    if opts.has("no-eval") {
        config.eval = false;
    }
    config.peers = distributed(opts)?.peers();
    config.validate().map_err(|e| CliError(e.to_string()))?;
    Ok(config)
}

/// Where this process sits in a data-parallel run: `--devices`, `--nodes`, `--node-rank`,
/// `--master`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parallel {
    /// Devices (peers) of this process.
    pub devices: usize,
    /// Processes of the run.
    pub nodes: usize,
    /// This process's index.
    pub node_rank: usize,
    /// `HOST:PORT` of process 0.
    pub master: Option<String>,
}

impl Parallel {
    /// Peers of the whole run.
    pub fn peers(&self) -> usize {
        self.devices * self.nodes
    }

    #[cfg(feature = "distributed")]
    fn config(&self) -> supmae_train::DistributedConfig {
        supmae_train::DistributedConfig {
            devices: self.devices,
            nodes: self.nodes,
            node_rank: self.node_rank,
            master: self.master.clone(),
        }
    }
}

/// Parses the data-parallel options (all optional: one device, one node).
pub fn distributed(opts: &Options) -> Result<Parallel, CliError> {
    let p = Parallel {
        devices: opts.parsed("devices")?.unwrap_or(1),
        nodes: opts.parsed("nodes")?.unwrap_or(1),
        node_rank: opts.parsed("node-rank")?.unwrap_or(0),
        master: opts.get("master").map(str::to_string),
    };
    #[cfg(feature = "distributed")]
    p.config()
        .validate()
        .map_err(|e| CliError(format!("data-parallel options: {e}")))?;
    #[cfg(not(feature = "distributed"))]
    if p.peers() > 1 {
        return err("--devices/--nodes need supmae built with the `distributed` feature");
    }
    Ok(p)
}

/// The outcome of a pre-training run.
#[derive(Debug, Clone)]
pub struct PretrainSummary {
    /// Where the run lives.
    pub out_dir: PathBuf,
    /// The last epoch's log.
    pub last: Option<supmae_train::EpochLog>,
    /// The first epoch's log of this run (for before/after).
    pub first: Option<supmae_train::EpochLog>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

struct PretrainJob {
    config: Option<PretrainConfig>,
    out_dir: PathBuf,
    progress: ProgressMode,
    parallel: Parallel,
}

impl BackendJob for PretrainJob {
    type Output = Result<PretrainSummary, CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        if self.parallel.peers() > 1 {
            #[cfg(feature = "distributed")]
            return self.run_peers::<B>(device);
        }
        self.run_peer::<B>(device, None)
    }
}

/// The peer a thread trains as, in a data-parallel run.
#[cfg(feature = "distributed")]
type PeerOf<B> = Option<supmae_train::Peer<<B as AutodiffBackend>::InnerBackend>>;
#[cfg(not(feature = "distributed"))]
type PeerOf<B> = Option<std::marker::PhantomData<B>>;

impl PretrainJob {
    /// One thread per local device, each one peer of the run.
    #[cfg(feature = "distributed")]
    fn run_peers<B: AutodiffBackend>(self, device: B::Device) -> Result<PretrainSummary, CliError> {
        use burn::tensor::backend::Device as _;
        let dist = self.parallel.config();
        eprintln!(
            "data-parallel: {} peer(s) here (ranks {}..{}) of {} on {} node(s); waiting for all \
             peers to join",
            dist.devices,
            dist.rank(0),
            dist.rank(dist.devices - 1),
            dist.peers(),
            dist.nodes
        );
        let results: Vec<Result<PretrainSummary, CliError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..dist.devices)
                .map(|i| {
                    // Local device i: the default device's kind, index i.
                    let mut id = device.to_id();
                    id.index_id = i as u16;
                    let on = B::Device::from_id(id);
                    let job = PretrainJob {
                        config: self.config.clone(),
                        out_dir: self.out_dir.clone(),
                        progress: if i == 0 {
                            self.progress
                        } else {
                            ProgressMode::Quiet
                        },
                        parallel: self.parallel.clone(),
                    };
                    let dist = &dist;
                    s.spawn(move || {
                        let peer = supmae_train::Peer::join(dist, i, &on)
                            .map_err(|e| CliError(e.to_string()))?;
                        job.run_peer::<B>(on, Some(peer))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(CliError("a training thread panicked".into())))
                })
                .collect()
        });
        // Any device's error fails the run; otherwise this process's first device reports.
        let summaries = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        summaries
            .into_iter()
            .next()
            .ok_or_else(|| CliError("no device trained".into()))
    }

    fn run_peer<B: AutodiffBackend>(
        self,
        device: B::Device,
        peer: PeerOf<B>,
    ) -> Result<PretrainSummary, CliError> {
        let start = std::time::Instant::now();
        let resumed = self.config_was_resumed();
        #[cfg(feature = "distributed")]
        let rank = peer.as_ref().map_or(0, |p| p.rank());
        #[cfg(not(feature = "distributed"))]
        let rank = 0;
        let talk = rank == 0;
        let mut trainer = match self.config {
            Some(mut config) => {
                let (train, val) =
                    load_data(&config.data).map_err(|e| CliError(e.to_string()))?;
                // A folder dataset brings its own classes.
                if !config.data.is_fashion_mnist()
                    && let Some(head) = config.model.cls_head.clone()
                {
                    let classes = train.classes().len();
                    config.model = config.model.clone().with_cls_head(Some(head.with_num_classes(classes.max(2))));
                }
                if talk { eprintln!(
                    "pretraining {} on {} training images ({} classes), {} epochs, batch {} x {}{}, lr {:.3e}; run folder {}",
                    if config.model.cls_head.is_some() { "SupMAE" } else { "MAE" },
                    train.len(),
                    train.classes().len(),
                    config.epochs,
                    config.batch_size,
                    config.accum_iter,
                    if config.peers > 1 { format!(" x {} peers", config.peers) } else { String::new() },
                    config.peak_lr(),
                    self.out_dir.display()
                ); }
                match peer {
                    #[cfg(feature = "distributed")]
                    Some(peer) => Pretrainer::<B>::with_sources_on_peer(config, train, val, &self.out_dir, device, peer),
                    _ => Pretrainer::<B>::with_sources(config, train, val, &self.out_dir, device),
                }
            }
            None => match peer {
                #[cfg(feature = "distributed")]
                Some(peer) => Pretrainer::<B>::resume_peer(&self.out_dir, device, peer),
                _ => Pretrainer::<B>::resume(&self.out_dir, device),
            },
        }
        .map_err(|e| CliError(e.to_string()))?
        .with_progress(self.progress);
        let already = trainer.epochs_done();
        if resumed && talk {
            eprintln!(
                "resuming {} after epoch {} of {}",
                self.out_dir.display(),
                already,
                trainer.config().epochs
            );
        }
        let total = trainer.config().epochs;
        while trainer.epochs_done() < total {
            let next = trainer.epochs_done() + 1;
            trainer
                .train_until(next)
                .map_err(|e| CliError(e.to_string()))?;
            if let Some(log) = trainer.history().last().filter(|_| talk) {
                let val = match (log.val_acc1_full, log.val_acc1_masked) {
                    (Some(f), Some(m)) => {
                        format!(", val top-1 {f:.2}% (all patches) {m:.2}% (masked)")
                    }
                    _ => String::new(),
                };
                eprintln!(
                    "epoch {}/{}: loss {:.4} rec_loss {:.4} cls_loss {:.5} lr {:.2e}, {:.0} img/s{val}",
                    log.epoch + 1,
                    total,
                    log.loss,
                    log.rec_loss,
                    log.cls_loss,
                    log.lr,
                    log.images_per_sec
                );
            }
        }
        if self.parallel.peers() > 1 {
            // Equal on every peer: a quick check that the run stayed in sync.
            eprintln!(
                "rank {rank}: parameter fingerprint {:016x}",
                trainer.parameter_fingerprint()
            );
        }
        let history = trainer.history();
        Ok(PretrainSummary {
            out_dir: trainer.out_dir().to_path_buf(),
            first: history.first().cloned(),
            last: history.last().cloned(),
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

impl PretrainJob {
    fn config_was_resumed(&self) -> bool {
        self.config.is_none()
    }
}

fn backend(opts: &Options) -> Result<BackendKind, CliError> {
    match opts.get("backend") {
        Some(name) => {
            let kind: BackendKind = name
                .parse()
                .map_err(|e: crate::BackendError| CliError(e.to_string()))?;
            if !kind.is_compiled() {
                return run_on(kind, Noop)
                    .map(|_| kind)
                    .map_err(|e| CliError(e.to_string()));
            }
            Ok(kind)
        }
        None => BackendKind::best_compiled()
            .ok_or_else(|| CliError("no backend compiled in; build with --features flex".into())),
    }
}

struct Noop;
impl BackendJob for Noop {
    type Output = ();
    fn run<B: AutodiffBackend>(self, _device: B::Device) {}
}

/// `supmae pretrain ...`
pub fn pretrain(args: &[String]) -> Result<PretrainSummary, CliError> {
    let opts = Options::parse(args)?;
    let kind = backend(&opts)?;
    let out_dir = PathBuf::from(opts.get("out").unwrap_or("runs/pretrain"));
    let config = if opts.has("resume") {
        if !out_dir
            .join(supmae_train::pretrain::CHECKPOINT_FILE)
            .is_file()
        {
            return err(format!(
                "--resume: no checkpoint in {} (nothing to resume)",
                out_dir.display()
            ));
        }
        None
    } else {
        Some(pretrain_config(&opts)?)
    };
    eprintln!("backend: {kind}");
    let job = PretrainJob {
        config,
        out_dir,
        progress: ProgressMode::auto(),
        parallel: distributed(&opts)?,
    };
    run_on(kind, job).map_err(|e| CliError(e.to_string()))?
}

/// `supmae data check <root>`: prints the report; `Ok(bad files)`.
pub fn data_check(args: &[String]) -> Result<usize, CliError> {
    let [root] = args else {
        return err("usage: supmae data check <ROOT>");
    };
    let report = check_dataset(root, DEFAULT_MAX_PIXELS).map_err(|e| CliError(e.to_string()))?;
    println!("{report}");
    Ok(report.bad_count())
}

/// The full pre-training help, presets included.
pub fn pretrain_help() -> String {
    let mut help = PRETRAIN_HELP.to_string();
    for p in MAE_PRESETS {
        help.push_str("    ");
        help.push_str(p);
        help.push('\n');
    }
    help
}

fn cli<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, CliError> {
    r.map_err(|e| CliError(e.to_string()))
}

/// `--model` for a classifier: a ViT preset name or a JSON [`VitConfig`] file.
fn vit_model_flag(name: &str) -> Result<VitConfig, CliError> {
    let path = PathBuf::from(name);
    if path.extension().is_some_and(|e| e == "json") || path.is_file() {
        let text =
            std::fs::read_to_string(&path).map_err(|e| CliError(format!("--model {name}: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| CliError(format!("--model {name}: not a ViT config: {e}")))
    } else {
        VitConfig::preset(name).map_err(|e| CliError(format!("--model: {e}")))
    }
}

/// The classifier shape for `opts`: the checkpoint's encoder for one of ours, else
/// `--model` (preset or JSON), else the default for the data.
fn classifier_model(
    opts: &Options,
    data: &DataSpec,
    classes: usize,
    global_pool: bool,
) -> Result<VitConfig, CliError> {
    let checkpoint = opts.get("checkpoint").map(PathBuf::from);
    let model = match (&checkpoint, opts.get("model")) {
        (Some(path), _) if is_native_checkpoint(path) => {
            let file = if path.is_dir() {
                path.join(supmae_train::pretrain::CHECKPOINT_FILE)
            } else {
                path.clone()
            };
            let parts = cli(supmae_train::checkpoint::CheckpointParts::read(&file))?;
            let meta: serde_json::Value = serde_json::from_slice(&parts.meta).map_err(|e| {
                CliError(format!(
                    "--checkpoint {}: bad metadata: {e}",
                    file.display()
                ))
            })?;
            let pre: MaeConfig = meta
                .get("config")
                .and_then(|c| c.get("model"))
                .and_then(|m| serde_json::from_value(m.clone()).ok())
                .ok_or_else(|| {
                    CliError(format!(
                        "--checkpoint {}: not a pre-training checkpoint (use `supmae eval` \
                         for fine-tuned or probed ones)",
                        file.display()
                    ))
                })?;
            pre.classifier(classes, global_pool)
        }
        (_, Some(name)) => vit_model_flag(name)?
            .with_num_classes(classes)
            .with_global_pool(global_pool),
        (None, None) if data.is_fashion_mnist() => PretrainConfig::fashion_mnist_cpu()
            .model
            .classifier(classes, global_pool),
        (_, None) => VitConfig::vit_base_patch16()
            .with_num_classes(classes)
            .with_global_pool(global_pool),
    };
    Ok(model)
}

fn init_of(opts: &Options) -> Init {
    match opts.get("checkpoint") {
        Some(path) => Init::Pretrained {
            path: PathBuf::from(path),
        },
        None => Init::Scratch,
    }
}

/// Builds the fine-tuning recipe from the options (data classes decide the head size).
pub fn finetune_config(opts: &Options, classes: usize) -> Result<FinetuneConfig, CliError> {
    let data = DataSpec::parse(opts.get("data"));
    let mut model = classifier_model(opts, &data, classes, !opts.has("cls-token"))?;
    if let Some(v) = opts.parsed("drop-path")? {
        model = model.with_drop_path_rate(v);
    }
    let init = init_of(opts);
    let mut c = if data.is_fashion_mnist() {
        FinetuneConfig::fashion_mnist_cpu(model, init, data)
    } else {
        FinetuneConfig::recipe(model, init, data)
    };
    if let Some(v) = opts.parsed("epochs")? {
        c.epochs = v;
        c.warmup_epochs = c.warmup_epochs.min(v as f64);
    }
    if let Some(v) = opts.parsed("batch-size")? {
        c.batch_size = v;
    }
    if let Some(v) = opts.parsed("accum-iter")? {
        c.accum_iter = v;
    }
    if let Some(v) = opts.parsed("blr")? {
        c.blr = v;
    }
    if let Some(v) = opts.parsed::<f64>("lr")? {
        c.lr = Some(v);
    }
    if let Some(v) = opts.parsed("min-lr")? {
        c.min_lr = v;
    }
    if let Some(v) = opts.parsed("warmup-epochs")? {
        c.warmup_epochs = v;
    }
    if let Some(v) = opts.parsed("weight-decay")? {
        c.weight_decay = v;
    }
    if let Some(v) = opts.parsed("layer-decay")? {
        c.layer_decay = v;
    }
    if let Some(v) = opts.parsed("mixup")? {
        c.mixup.mixup_alpha = v;
    }
    if let Some(v) = opts.parsed("cutmix")? {
        c.mixup.cutmix_alpha = v;
    }
    if let Some(v) = opts.parsed("mixup-prob")? {
        c.mixup.prob = v;
    }
    if let Some(v) = opts.parsed("mixup-switch-prob")? {
        c.mixup.switch_prob = v;
    }
    if let Some(v) = opts.parsed("smoothing")? {
        c.mixup.smoothing = v;
    }
    if let Some(v) = opts.get("aa") {
        c.rand_augment = (v != "none").then(|| v.to_string());
    }
    if let Some(v) = opts.parsed("reprob")? {
        c.reprob = v;
    }
    if let Some(v) = opts.parsed("seed")? {
        c.seed = v;
    }
    if let Some(v) = opts.parsed("threads")? {
        c.data_threads = v;
    }
    if opts.has("no-eval") {
        c.eval = false;
    }
    cli(c.validate())?;
    Ok(c)
}

/// Builds the linear-probing recipe from the options.
pub fn linprobe_config(opts: &Options, classes: usize) -> Result<LinprobeConfig, CliError> {
    let data = DataSpec::parse(opts.get("data"));
    if opts.get("checkpoint").is_none() && !opts.has("scratch") {
        return err(
            "--checkpoint is required (a pre-training run folder, .ckpt or official .pth); \
             pass --scratch to probe a random encoder",
        );
    }
    let model = classifier_model(opts, &data, classes, false)?;
    let fashion = data.is_fashion_mnist();
    let mut c = LinprobeConfig::recipe(model, init_of(opts), data);
    if fashion {
        // 390 LARS steps instead of the recipe's ~14,000: LARS moves each weight matrix by
        // about lr x 0.001 of its norm per step, so the short run needs a larger lr
        // (docs/decisions.md).
        c.epochs = 10;
        c.warmup_epochs = 1.0;
        c.batch_size = 256;
        c.blr = 4.0;
    }
    if let Some(v) = opts.parsed("epochs")? {
        c.epochs = v;
        c.warmup_epochs = c.warmup_epochs.min(v as f64);
    }
    if let Some(v) = opts.parsed("batch-size")? {
        c.batch_size = v;
    }
    if let Some(v) = opts.parsed("accum-iter")? {
        c.accum_iter = v;
    }
    if let Some(v) = opts.parsed("blr")? {
        c.blr = v;
    }
    if let Some(v) = opts.parsed::<f64>("lr")? {
        c.lr = Some(v);
    }
    if let Some(v) = opts.parsed("min-lr")? {
        c.min_lr = v;
    }
    if let Some(v) = opts.parsed("warmup-epochs")? {
        c.warmup_epochs = v;
    }
    if let Some(v) = opts.parsed("weight-decay")? {
        c.lars.weight_decay = v;
    }
    if let Some(v) = opts.parsed("seed")? {
        c.seed = v;
    }
    if let Some(v) = opts.parsed("threads")? {
        c.data_threads = v;
    }
    if opts.has("no-eval") {
        c.eval = false;
    }
    cli(c.validate())?;
    Ok(c)
}

/// The outcome of a fine-tuning or linear-probing run.
#[derive(Debug, Clone)]
pub struct ClassifierSummary {
    /// Where the run lives.
    pub out_dir: PathBuf,
    /// Per-epoch logs.
    pub history: Vec<ClassifierLog>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

enum ClassifierRecipe {
    Finetune(FinetuneConfig),
    Linprobe(LinprobeConfig),
}

struct ClassifierJob {
    recipe: ClassifierRecipe,
    train: AnySource,
    val: Option<AnySource>,
    out_dir: PathBuf,
}

fn print_epoch(log: &ClassifierLog, total: usize) {
    let val = match (log.test_acc1, log.test_acc5, log.test_loss) {
        (Some(a1), Some(a5), Some(l)) => {
            format!(", val top-1 {a1:.2}% top-5 {a5:.2}% loss {l:.4}")
        }
        _ => String::new(),
    };
    eprintln!(
        "epoch {}/{}: train_loss {:.4} lr {:.2e}, {:.0} img/s{val}",
        log.epoch + 1,
        total,
        log.train_loss,
        log.lr,
        log.images_per_sec
    );
}

fn print_load_report(report: Option<&supmae_model::checkpoint::LoadReport>) {
    if let Some(r) = report {
        let join = |s: &std::collections::BTreeSet<String>| {
            s.iter().cloned().collect::<Vec<_>>().join(", ")
        };
        eprintln!(
            "loaded {} tensors; fresh: {}; ignored: {} keys",
            r.applied.len(),
            join(&r.missing),
            r.unused.len()
        );
    }
}

impl BackendJob for ClassifierJob {
    type Output = Result<ClassifierSummary, CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let start = std::time::Instant::now();
        let progress = ProgressMode::auto();
        let history = match self.recipe {
            ClassifierRecipe::Finetune(config) => {
                let total = config.epochs;
                let mut t = cli(Finetuner::<B>::new(
                    config,
                    self.train,
                    self.val,
                    &self.out_dir,
                    device,
                ))?
                .with_progress(progress);
                print_load_report(t.load_report());
                while t.history().len() < total {
                    let log = cli(t.run_epoch())?;
                    print_epoch(&log, total);
                }
                t.history().to_vec()
            }
            ClassifierRecipe::Linprobe(config) => {
                let total = config.epochs;
                let mut t = cli(LinearProber::<B>::new(
                    config,
                    self.train,
                    self.val,
                    &self.out_dir,
                    device,
                ))?
                .with_progress(progress);
                print_load_report(t.load_report());
                while t.history().len() < total {
                    let log = cli(t.run_epoch())?;
                    print_epoch(&log, total);
                }
                t.history().to_vec()
            }
        };
        Ok(ClassifierSummary {
            out_dir: self.out_dir,
            history,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

fn classifier_command(args: &[String], linprobe: bool) -> Result<ClassifierSummary, CliError> {
    let opts = Options::parse(args)?;
    let kind = backend(&opts)?;
    let data = DataSpec::parse(opts.get("data"));
    let (train, val) = cli(load_data(&data))?;
    let classes = train.classes().len().max(2);
    let recipe = if linprobe {
        ClassifierRecipe::Linprobe(linprobe_config(&opts, classes)?)
    } else {
        ClassifierRecipe::Finetune(finetune_config(&opts, classes)?)
    };
    let default_out = if linprobe {
        "runs/linprobe"
    } else {
        "runs/finetune"
    };
    let out_dir = PathBuf::from(opts.get("out").unwrap_or(default_out));
    eprintln!(
        "backend: {kind}; {} on {} training images ({} classes); run folder {}",
        if linprobe {
            "linear probing"
        } else {
            "fine-tuning"
        },
        train.len(),
        train.classes().len(),
        out_dir.display()
    );
    let job = ClassifierJob {
        recipe,
        train,
        val,
        out_dir,
    };
    cli(run_on(kind, job))?
}

/// `supmae finetune ...`
pub fn finetune(args: &[String]) -> Result<ClassifierSummary, CliError> {
    classifier_command(args, false)
}

/// `supmae linprobe ...`
pub fn linprobe(args: &[String]) -> Result<ClassifierSummary, CliError> {
    classifier_command(args, true)
}

/// The validation images of `data`: Fashion-MNIST's test split, an ImageNet root's `val/`,
/// or a plain folder of class sub-folders.
fn eval_source(data: &DataSpec) -> Result<AnySource, CliError> {
    Ok(match data {
        DataSpec::Folder { path } if !path.join("val").is_dir() => {
            let opts = ScanOptions::default();
            AnySource::Folder(cli(FolderDataset::scan(path, &opts))?.0)
        }
        DataSpec::Folder { path } => {
            let opts = ScanOptions::default();
            AnySource::Folder(cli(ImageNet::val(path, &opts))?.0)
        }
        other => cli(load_data(other))?
            .1
            .ok_or_else(|| CliError("the data has no validation split".into()))?,
    })
}

struct EvalJob {
    checkpoint: PathBuf,
    data: Option<DataSpec>,
    model: Option<String>,
    batch_size: usize,
    threads: usize,
}

impl BackendJob for EvalJob {
    type Output = Result<(EvalReport, String), CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let (classifier, model, data, what) =
            if is_native_checkpoint(&self.checkpoint) || self.checkpoint.is_dir() {
                let (clf, meta) = cli(load_classifier::<I<B>>(&self.checkpoint, &device))?;
                let what = format!(
                    "{} checkpoint, {} epochs, {} classes",
                    match meta.kind {
                        supmae_train::ClassifierKind::Finetune => "fine-tuned",
                        supmae_train::ClassifierKind::Linprobe => "linear-probe",
                    },
                    meta.epochs_done,
                    meta.model.num_classes
                );
                let data = self.data.unwrap_or(meta.data);
                (clf, meta.model, data, what)
            } else {
                let Some(data) = self.data else {
                    return err("--data is required to evaluate an official .pth checkpoint");
                };
                let state = cli(StateDict::from_pytorch(&self.checkpoint))?;
                let Some(head) = state.shape("head.weight") else {
                    return err(format!(
                        "{}: no `head.weight`: not a fine-tuned classifier (a pre-training \
                     checkpoint goes to `supmae finetune --checkpoint`)",
                        self.checkpoint.display()
                    ));
                };
                let name = self.model.as_deref().unwrap_or("vit_base_patch16");
                let model = vit_model_flag(name)?
                    .with_num_classes(head.first().copied().unwrap_or(0))
                    .with_global_pool(state.contains("fc_norm.weight"));
                let vit = cli(model.init::<I<B>>(&device))?;
                let (vit, _) = cli(load_state_dict(vit, &state, &KeyPolicy::default()))?;
                let what = format!(
                    "official fine-tuned {name} ({} pool, {} classes)",
                    if model.global_pool {
                        "global"
                    } else {
                        "cls-token"
                    },
                    model.num_classes
                );
                (Classifier::Vit(vit), model, data, what)
            };
        let source = eval_source(&data)?;
        let (_, eval_t) = cli(classifier_transforms(
            &data,
            &model,
            supmae_data::Transform::pretrain(model.img_size as u32),
        ))?;
        let loader = cli(DataLoader::new(
            std::sync::Arc::new(source),
            eval_t,
            LoaderConfig {
                shuffle: false,
                drop_last: false,
                threads: self.threads,
                ..LoaderConfig::new(self.batch_size)
            },
        ))?;
        let report = cli(evaluate::<I<B>>(&loader, &device, |x| {
            classifier.forward(x)
        }))?;
        Ok((report, what))
    }
}

/// `supmae eval ...`: the report and a description of the checkpoint.
pub fn eval(args: &[String]) -> Result<(EvalReport, String), CliError> {
    let opts = Options::parse(args)?;
    let kind = backend(&opts)?;
    let Some(checkpoint) = opts.get("checkpoint") else {
        return err("--checkpoint is required (see `supmae eval --help`)");
    };
    let checkpoint = PathBuf::from(checkpoint);
    if !checkpoint.exists() {
        return err(format!(
            "--checkpoint {}: no such file or folder",
            checkpoint.display()
        ));
    }
    if checkpoint.is_file() && is_native_checkpoint(&checkpoint) {
        // Fail early and clearly on a pre-training checkpoint.
        cli(read_classifier_checkpoint(&checkpoint))?;
    }
    let job = EvalJob {
        checkpoint,
        data: opts.get("data").map(|d| DataSpec::parse(Some(d))),
        model: opts.get("model").map(str::to_string),
        batch_size: opts.parsed("batch-size")?.unwrap_or(64),
        threads: opts.parsed("threads")?.unwrap_or(0),
    };
    cli(run_on(kind, job))?
}

/// What `supmae reconstruct` did.
#[derive(Debug, Clone)]
pub struct ReconstructSummary {
    /// What was loaded.
    pub description: String,
    /// Per image: file, error on removed patches, error of the patch-mean prediction.
    pub rows: Vec<(String, f64, f64)>,
    /// The PNG written.
    pub out: PathBuf,
}

struct ReconstructJob {
    checkpoint: PathBuf,
    images: Vec<String>,
    out: PathBuf,
    mask_ratio: f64,
    seed: u64,
    scale: Option<u32>,
    pixel_targets: Option<bool>,
}

impl BackendJob for ReconstructJob {
    type Output = Result<ReconstructSummary, CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let r = cli(crate::Reconstructor::<I<B>>::load(
            &self.checkpoint,
            &device,
            self.pixel_targets,
        ))?;
        let images = self
            .images
            .iter()
            .map(|f| image::open(f).map_err(|e| CliError(format!("--image {f}: cannot read: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let recs = cli(r.reconstruct(&images, self.mask_ratio, self.seed))?;
        let size = recs.first().map_or(224, |x| x.original.width());
        let scale = self.scale.unwrap_or(if size < 64 { 4 } else { 1 });
        let picture = crate::grid(&recs, scale);
        let tmp = self.out.with_extension("tmp.png");
        picture
            .save(&tmp)
            .and_then(|()| std::fs::rename(&tmp, &self.out).map_err(image::ImageError::IoError))
            .map_err(|e| CliError(format!("--out {}: {e}", self.out.display())))?;
        Ok(ReconstructSummary {
            description: r.describe().to_string(),
            rows: self
                .images
                .iter()
                .zip(&recs)
                .map(|(f, x)| (f.clone(), x.masked_mse, x.patch_mean_mse))
                .collect(),
            out: self.out,
        })
    }
}

/// `supmae reconstruct ...`
pub fn reconstruct(args: &[String]) -> Result<ReconstructSummary, CliError> {
    let opts = Options::parse(args)?;
    let kind = backend(&opts)?;
    let Some(checkpoint) = opts.get("checkpoint") else {
        return err("--checkpoint is required (see `supmae reconstruct --help`)");
    };
    let images = opts.get_all("image").to_vec();
    if images.is_empty() {
        return err("give at least one --image <FILE>");
    }
    let job = ReconstructJob {
        checkpoint: PathBuf::from(checkpoint),
        images,
        out: PathBuf::from(opts.get("out").unwrap_or("reconstruction.png")),
        mask_ratio: opts.parsed("mask-ratio")?.unwrap_or(0.75),
        seed: opts.parsed("seed")?.unwrap_or(0),
        scale: opts.parsed("scale")?,
        pixel_targets: opts.has("pixel-targets").then_some(true),
    };
    cli(run_on(kind, job))?
}

/// `supmae inspect <checkpoint>`: the flavour and capabilities of a file.
pub fn inspect_command(args: &[String]) -> Result<String, CliError> {
    let [path] = args else {
        return err("usage: supmae inspect <CHECKPOINT>");
    };
    let path = PathBuf::from(path);
    if is_native_checkpoint(&path) || path.is_dir() {
        let file = if path.is_dir() {
            path.join(supmae_train::pretrain::CHECKPOINT_FILE)
        } else {
            path.clone()
        };
        if let Ok((_, meta)) = read_classifier_checkpoint(&file) {
            return Ok(format!(
                "native {} checkpoint: ViT {}x{} ({} px, patch {}), {} classes, {} epochs, best \
                 top-1 {}. Can classify, embed and evaluate; cannot reconstruct (no decoder).",
                match meta.kind {
                    supmae_train::ClassifierKind::Finetune => "fine-tuned",
                    supmae_train::ClassifierKind::Linprobe => "linear-probe",
                },
                meta.model.embed_dim,
                meta.model.depth,
                meta.model.img_size,
                meta.model.patch_size,
                meta.model.num_classes,
                meta.epochs_done,
                meta.best_acc1.map_or("n/a".into(), |a| format!("{a:.2}%"))
            ));
        }
        let parts = cli(supmae_train::checkpoint::CheckpointParts::read(&file))?;
        let meta: serde_json::Value = serde_json::from_slice(&parts.meta)
            .map_err(|e| CliError(format!("{}: bad metadata: {e}", file.display())))?;
        let model: MaeConfig = serde_json::from_value(meta["config"]["model"].clone())
            .map_err(|e| CliError(format!("{}: bad metadata: {e}", file.display())))?;
        return Ok(format!(
            "native {} pre-training checkpoint: ViT {}x{} ({} px, patch {}), decoder {}x{}, {} \
             epochs done{}. Can reconstruct, embed, be fine-tuned and probed{}.",
            if model.cls_head.is_some() {
                "SupMAE"
            } else {
                "MAE"
            },
            model.embed_dim,
            model.depth,
            model.img_size,
            model.patch_size,
            model.decoder_embed_dim,
            model.decoder_depth,
            meta["epochs_done"],
            if meta["converted_from"].is_string() {
                format!(", converted from {}", meta["converted_from"])
            } else {
                String::new()
            },
            if model.cls_head.is_some() {
                ", classify with its branch"
            } else {
                ""
            }
        ));
    }
    let state = cli(StateDict::from_file(&path))?;
    let info = cli(supmae_model::inspect(&state))?;
    Ok(format!("{}: {}", path.display(), info.describe()))
}

struct ConvertJob {
    input: PathBuf,
    output: PathBuf,
}

impl BackendJob for ConvertJob {
    type Output = Result<String, CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        cli(crate::convert::convert::<B::InnerBackend>(
            &self.input,
            &self.output,
            &device,
        ))
    }
}

/// `supmae convert --checkpoint IN --out OUT`
pub fn convert(args: &[String]) -> Result<String, CliError> {
    let opts = Options::parse(args)?;
    let kind = backend(&opts)?;
    let (Some(input), Some(output)) = (opts.get("checkpoint"), opts.get("out")) else {
        return err("usage: supmae convert --checkpoint <IN> --out <OUT.safetensors|OUT.ckpt>");
    };
    cli(run_on(
        kind,
        ConvertJob {
            input: PathBuf::from(input),
            output: PathBuf::from(output),
        },
    ))?
}

struct BenchJob {
    config: String,
    batch: Option<usize>,
    steps: usize,
}

impl BackendJob for BenchJob {
    type Output = Result<(usize, f64, f64), CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let batch = match self.batch {
            Some(b) => b,
            None => crate::bench::configs()
                .into_iter()
                .find(|(n, _, _)| *n == self.config)
                .map_or(8, |(_, b, _)| b),
        };
        let (train, infer) = cli(crate::bench::throughput::<B>(
            &self.config,
            batch,
            self.steps,
            &device,
        ))?;
        Ok((batch, train, infer))
    }
}

/// `supmae bench --config NAME [--batch-size N] [--steps N] [--backend B]`: one JSON line.
pub fn bench(args: &[String]) -> Result<String, CliError> {
    let opts = Options::parse(args)?;
    let kind = backend(&opts)?;
    let config = opts.get("config").unwrap_or("tiny16").to_string();
    let steps = opts.parsed("steps")?.unwrap_or(5);
    let job = BenchJob {
        config: config.clone(),
        batch: opts.parsed("batch-size")?,
        steps,
    };
    let (batch, train, infer) = cli(run_on(kind, job))??;
    Ok(format!(
        "{{\"side\": \"burn-{kind}\", \"config\": \"{config}\", \"batch\": {batch}, \"train_img_s\": {train:.2}, \"infer_img_s\": {infer:.2}, \"steps\": {steps}}}"
    ))
}

struct ParityJob {
    fixtures: PathBuf,
}

impl BackendJob for ParityJob {
    type Output = Result<Vec<(String, f64, f64)>, CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        cli(crate::bench::backend_parity::<B>(&self.fixtures, &device))
    }
}

/// `supmae check-backend [--fixtures DIR] [--backend B]`: the report and whether all
/// differences are within tolerance.
pub fn check_backend(args: &[String]) -> Result<(String, bool), CliError> {
    let opts = Options::parse(args)?;
    let kind = backend(&opts)?;
    let fixtures = PathBuf::from(opts.get("fixtures").unwrap_or("tools/parity/fixtures/tiny"));
    let rows = cli(run_on(kind, ParityJob { fixtures }))??;
    let mut ok = true;
    let mut text = format!("backend {kind} vs PyTorch float32 fixtures:\n");
    for (name, diff, tol) in rows {
        let pass = diff <= tol;
        ok &= pass;
        text.push_str(&format!(
            "  {name:32} max |diff| {diff:.2e}  (tolerance {tol:.0e}) {}\n",
            if pass { "ok" } else { "FAIL" }
        ));
    }
    Ok((text, ok))
}
