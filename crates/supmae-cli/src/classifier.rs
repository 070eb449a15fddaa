//! `supmae finetune` and `supmae linprobe`: train a classifier on a pre-trained encoder.

use std::path::PathBuf;

use supmae::burn::tensor::backend::AutodiffBackend;
use supmae::data::{AnySource, ImageSource};
use supmae::model::VitConfig;
use supmae::model::checkpoint::LoadReport;
use supmae::train::finetune::is_native_checkpoint;
use supmae::train::run_dir::{NewRun, Overwrite, checkpoint_in};
use supmae::train::{
    ClassifierLog, DataSpec, FinetuneConfig, Finetuner, Init, LinearProber, LinprobeConfig,
    PretrainConfig, ProgressMode, load_data,
};
use supmae::{BackendJob, run_on};

use crate::common::{BackendArg, CliError, Result, cli, err, finite, say, vit_model};
use crate::parallel::{Parallel, PeerOf};

const FINETUNE_ABOUT: &str = "\
Fine-tune a ViT classifier (main_finetune.py).

Builds the classifier from a pre-training checkpoint (a run folder or checkpoint.ckpt of
`supmae pretrain`, or an official SupMAE/MAE .pth): the decoder, mask token and
classification branch are dropped, fc_norm and the head (std 2e-5) are fresh, pos_embed is
resampled when the resolution differs. Without --checkpoint the classifier trains from
scratch (supervised baseline).

With no options, fine-tunes the small Fashion-MNIST model on the embedded subset (10
epochs). On other data the defaults are SupMAE's released recipe (ViT-B/16, 100 epochs).";

const LINPROBE_ABOUT: &str = "\
Linear probe on a frozen encoder (main_linprobe.py).

Loads the encoder of a pre-training checkpoint (cls-token features after the final norm),
adds BatchNorm (no affine, eps 1e-6) + Linear (std 0.01) and trains only those with LARS
(momentum 0.9, trust coefficient 0.001, no weight decay), warmup + cosine.";

/// Options both classifier commands take.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Pre-training checkpoint: a run folder, a .ckpt, or an official .pth
    #[arg(long, value_name = "PATH", conflicts_with = "resume")]
    pub checkpoint: Option<PathBuf>,
    /// Data: fashion-mnist[:DIR], embedded (default), or an ImageNet-style folder
    /// (train/ + val/)
    #[arg(long, value_name = "DATA", conflicts_with = "resume")]
    pub data: Option<String>,
    /// A ViT preset (vit_base_patch16, ...) or a JSON VitConfig, for official .pth files and
    /// checkpoint-less runs [default: the checkpoint's encoder, else vit_base_patch16 / the
    /// small model]
    #[arg(long, value_name = "MODEL", conflicts_with = "resume")]
    pub model: Option<String>,
    /// Epochs [default: finetune 100, linprobe 90; Fashion-MNIST 10]
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub epochs: Option<usize>,
    /// Images per micro-batch [default: finetune 32, linprobe 512; Fashion-MNIST 128 / 256]
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub batch_size: Option<usize>,
    /// Micro-batches per step [default: finetune 4, linprobe 1; Fashion-MNIST 1]
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub accum_iter: Option<usize>,
    /// Base lr: lr = blr * batch * accum / 256 [default: finetune 1e-3, linprobe 0.1;
    /// Fashion-MNIST 4e-3 / 4.0]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub blr: Option<f64>,
    /// Absolute lr (overrides --blr)
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub lr: Option<f64>,
    /// Final lr of the cosine [default: finetune 1e-6, linprobe 0]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub min_lr: Option<f64>,
    /// Warmup epochs [default: finetune 5, linprobe 10; Fashion-MNIST 1]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub warmup_epochs: Option<f64>,
    /// Weight decay [default: finetune 0.05 (AdamW), linprobe 0 (LARS, weight matrix)]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub weight_decay: Option<f64>,
    /// Seed [default: 0]
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub seed: Option<u64>,
    /// Data-loading threads, 0 = all cores [default: 0]
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub threads: Option<usize>,
    /// Skip the per-epoch validation
    #[arg(long, conflicts_with = "resume")]
    pub no_eval: bool,
    /// Run folder: config.json, log.jsonl, checkpoint.ckpt, best.ckpt
    /// [default: runs/finetune or runs/linprobe]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its checkpoint (model, optimizer state, schedule
    /// position), with its saved settings; no other recipe option may be given
    #[arg(long)]
    pub resume: bool,
    /// Delete the run already in --out (if any) and start afresh
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Stop after epoch N of the run, checkpointed, and continue later with --resume (to fit
    /// a cluster's time limit); the result is the uninterrupted run's
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub stop_after: Option<u64>,
    #[command(flatten)]
    pub backend: BackendArg,
    #[command(flatten)]
    pub parallel: Parallel,
}

/// `supmae finetune` options.
#[derive(clap::Args, Debug)]
#[command(long_about = FINETUNE_ABOUT)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub common: Common,
    /// Pool with the cls token + norm instead of the global average
    #[arg(long, conflicts_with = "resume")]
    pub cls_token: bool,
    /// Layer-wise lr decay [default: 0.65; Fashion-MNIST 0.75]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub layer_decay: Option<f64>,
    /// Stochastic depth [default: 0.1]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub drop_path: Option<f64>,
    /// Mixup alpha, 0 = off [default: 0.8; Fashion-MNIST 0]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub mixup: Option<f64>,
    /// CutMix alpha, 0 = off [default: 1.0; Fashion-MNIST 0]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub cutmix: Option<f64>,
    /// Probability of mixing a batch [default: 1.0]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub mixup_prob: Option<f64>,
    /// Probability of CutMix when both are on [default: 0.5]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub mixup_switch_prob: Option<f64>,
    /// Label smoothing [default: 0.1]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub smoothing: Option<f64>,
    /// RandAugment spec, or none [default: rand-m9-mstd0.5-inc1; Fashion-MNIST none]
    #[arg(long, value_name = "SPEC", conflicts_with = "resume")]
    pub aa: Option<String>,
    /// Random-erasing probability [default: 0.25; Fashion-MNIST 0]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub reprob: Option<f64>,
}

/// `supmae linprobe` options.
#[derive(clap::Args, Debug)]
#[command(long_about = LINPROBE_ABOUT)]
pub struct LinprobeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Probe a randomly initialised encoder (instead of --checkpoint)
    #[arg(long, conflicts_with_all = ["checkpoint", "resume"])]
    pub scratch: bool,
}

/// The classifier shape: the checkpoint's encoder for one of ours, else `--model`, else the
/// default for the data.
fn classifier_model(
    c: &Common,
    data: &DataSpec,
    classes: usize,
    global_pool: bool,
) -> Result<VitConfig> {
    Ok(match (&c.checkpoint, &c.model) {
        (Some(path), _) if is_native_checkpoint(path) => {
            let file = checkpoint_in(path);
            let pre = cli(supmae::train::pretrain::read_pretrain_config(&file))?;
            pre.model.classifier(classes, global_pool)
        }
        (_, Some(name)) => vit_model(name)?
            .with_num_classes(classes)
            .with_global_pool(global_pool),
        (None, None) if data.is_fashion_mnist() => PretrainConfig::fashion_mnist_cpu()
            .model
            .classifier(classes, global_pool),
        (_, None) => VitConfig::vit_base_patch16()
            .with_num_classes(classes)
            .with_global_pool(global_pool),
    })
}

fn init_of(c: &Common) -> Init {
    match &c.checkpoint {
        Some(path) => Init::Pretrained { path: path.clone() },
        None => Init::Scratch,
    }
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

/// The fine-tuning recipe the options ask for (the data's classes size the head).
pub fn finetune_config(a: &FinetuneArgs, classes: usize) -> Result<FinetuneConfig> {
    let c = &a.common;
    let data = DataSpec::parse(c.data.as_deref());
    let mut model = classifier_model(c, &data, classes, !a.cls_token)?;
    if let Some(v) = a.drop_path {
        model = model.with_drop_path_rate(v);
    }
    let mut f = if data.is_fashion_mnist() {
        FinetuneConfig::fashion_mnist_cpu(model, init_of(c), data)
    } else {
        FinetuneConfig::recipe(model, init_of(c), data)
    };
    if let Some(v) = c.epochs {
        f.epochs = v;
        f.warmup_epochs = f.warmup_epochs.min(v as f64);
    }
    set(&mut f.batch_size, c.batch_size);
    set(&mut f.accum_iter, c.accum_iter);
    set(&mut f.blr, c.blr);
    if c.lr.is_some() {
        f.lr = c.lr;
    }
    set(&mut f.min_lr, c.min_lr);
    set(&mut f.warmup_epochs, c.warmup_epochs);
    set(&mut f.weight_decay, c.weight_decay);
    set(&mut f.layer_decay, a.layer_decay);
    set(&mut f.mixup.mixup_alpha, a.mixup);
    set(&mut f.mixup.cutmix_alpha, a.cutmix);
    set(&mut f.mixup.prob, a.mixup_prob);
    set(&mut f.mixup.switch_prob, a.mixup_switch_prob);
    set(&mut f.mixup.smoothing, a.smoothing);
    if let Some(v) = &a.aa {
        f.rand_augment = (v != "none").then(|| v.clone());
    }
    set(&mut f.reprob, a.reprob);
    set(&mut f.seed, c.seed);
    set(&mut f.data_threads, c.threads);
    f.peers = c.parallel.check()?.peers();
    if c.no_eval {
        f.eval = false;
    }
    cli(f.validate())?;
    Ok(f)
}

/// The linear-probing recipe the options ask for.
pub fn linprobe_config(a: &LinprobeArgs, classes: usize) -> Result<LinprobeConfig> {
    let c = &a.common;
    let data = DataSpec::parse(c.data.as_deref());
    if c.checkpoint.is_none() && !a.scratch {
        return err(
            "--checkpoint is required (a pre-training run folder, .ckpt or official .pth); \
             pass --scratch to probe a random encoder",
        );
    }
    let model = classifier_model(c, &data, classes, false)?;
    let fashion = data.is_fashion_mnist();
    let mut p = LinprobeConfig::recipe(model, init_of(c), data);
    if fashion {
        p = p.fashion_mnist_cpu();
    }
    if let Some(v) = c.epochs {
        p.epochs = v;
        p.warmup_epochs = p.warmup_epochs.min(v as f64);
    }
    set(&mut p.batch_size, c.batch_size);
    set(&mut p.accum_iter, c.accum_iter);
    set(&mut p.blr, c.blr);
    if c.lr.is_some() {
        p.lr = c.lr;
    }
    set(&mut p.min_lr, c.min_lr);
    set(&mut p.warmup_epochs, c.warmup_epochs);
    set(&mut p.lars.weight_decay, c.weight_decay);
    set(&mut p.seed, c.seed);
    set(&mut p.data_threads, c.threads);
    p.peers = c.parallel.check()?.peers();
    if c.no_eval {
        p.eval = false;
    }
    cli(p.validate())?;
    Ok(p)
}

enum Recipe {
    Finetune(FinetuneConfig),
    Linprobe(LinprobeConfig),
}

/// Runs `supmae finetune`.
pub fn finetune(args: FinetuneArgs) -> Result<()> {
    if args.common.resume {
        return resume(&args.common, "runs/finetune", false);
    }
    run(&args.common, "runs/finetune", |classes| {
        finetune_config(&args, classes).map(Recipe::Finetune)
    })
}

/// Runs `supmae linprobe`.
pub fn linprobe(args: LinprobeArgs) -> Result<()> {
    if args.common.resume {
        return resume(&args.common, "runs/linprobe", true);
    }
    run(&args.common, "runs/linprobe", |classes| {
        linprobe_config(&args, classes).map(Recipe::Linprobe)
    })
}

fn run(c: &Common, default_out: &str, recipe: impl FnOnce(usize) -> Result<Recipe>) -> Result<()> {
    let data = DataSpec::parse(c.data.as_deref());
    let (train, val) = cli(load_data(&data))?;
    let classes = train.classes().len().max(2);
    let recipe = recipe(classes)?;
    let kind = c.backend.resolve()?;
    let out_dir = c.out.clone().unwrap_or_else(|| PathBuf::from(default_out));
    eprintln!(
        "backend: {kind}; {} on {} training images ({} classes); run folder {}",
        match recipe {
            Recipe::Finetune(_) => "fine-tuning",
            Recipe::Linprobe(_) => "linear probing",
        },
        train.len(),
        train.classes().len(),
        out_dir.display()
    );
    let job = Job {
        start: Start::New {
            recipe,
            train,
            val,
            target: NewRun::new(&out_dir).overwrite(if c.overwrite {
                Overwrite::Yes
            } else {
                Overwrite::No
            }),
        },
        stop_after: c
            .stop_after
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        parallel: c.parallel.check()?,
    };
    let start = std::time::Instant::now();
    let history = cli(run_on(kind, job))??;
    if c.parallel.is_first_process() {
        report(&history, start, &out_dir);
    }
    Ok(())
}

/// `--resume`: continues the run in `--out` with the settings saved there.
fn resume(c: &Common, default_out: &str, linprobe: bool) -> Result<()> {
    let out_dir = c.out.clone().unwrap_or_else(|| PathBuf::from(default_out));
    if !out_dir
        .join(supmae::train::run_dir::CHECKPOINT_FILE)
        .is_file()
    {
        return err(format!(
            "--resume: no checkpoint in {} (nothing to resume)",
            out_dir.display()
        ));
    }
    let kind = c.backend.resolve()?;
    eprintln!("backend: {kind}; resuming {}", out_dir.display());
    let start = std::time::Instant::now();
    let job = Job {
        start: Start::Resume {
            out_dir: out_dir.clone(),
            linprobe,
        },
        stop_after: c
            .stop_after
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        parallel: c.parallel.check()?,
    };
    let history = cli(run_on(kind, job))??;
    if c.parallel.is_first_process() {
        report(&history, start, &out_dir);
    }
    Ok(())
}

fn report(history: &[ClassifierLog], start: std::time::Instant, out_dir: &std::path::Path) {
    let best = history
        .iter()
        .filter_map(|h| h.test_acc1.map(|a| (a, h.test_acc5, h.epoch)))
        .fold(
            None,
            |best: Option<(f64, Option<f64>, usize)>, x| match best {
                Some(b) if b.0 > x.0 => Some(b),
                _ => Some(x),
            },
        );
    say!("done in {:.0}s", start.elapsed().as_secs_f64());
    if let Some((a1, a5, epoch)) = best {
        say!(
            "best validation top-1: {a1:.2}% (top-5 {:.2}%) at epoch {}",
            a5.unwrap_or(f64::NAN),
            epoch + 1
        );
    }
    say!("run folder: {}", out_dir.display());
}

fn print_epoch(log: &ClassifierLog, total: usize) {
    let val = match (log.test_acc1, log.test_acc5, log.test_loss) {
        (Some(a1), Some(a5), Some(l)) => format!(", val top-1 {a1:.2}% top-5 {a5:.2}% loss {l:.4}"),
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

fn print_load_report(report: Option<&LoadReport>) {
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

/// How a run starts: afresh, or from the checkpoint in its folder. (Built once per run, so
/// the size of the larger variant does not matter.)
#[allow(clippy::large_enum_variant)]
enum Start {
    New {
        recipe: Recipe,
        train: AnySource,
        val: Option<AnySource>,
        target: NewRun,
    },
    Resume {
        out_dir: PathBuf,
        linprobe: bool,
    },
}

struct Job {
    start: Start,
    /// `--stop-after`.
    stop_after: Option<usize>,
    parallel: Parallel,
}

impl BackendJob for Job {
    type Output = Result<Vec<ClassifierLog>, CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let parallel = self.parallel.clone();
        let logs =
            parallel.run_peers::<B, _, _>(device, ProgressMode::auto(), |on, peer, progress| {
                self.train_peer::<B>(on, peer, progress)
            })?;
        logs.into_iter()
            .next()
            .ok_or_else(|| CliError("no device trained".into()))
    }
}

impl Job {
    /// Trains as one peer (or alone); rank 0 reports.
    fn train_peer<B: AutodiffBackend>(
        &self,
        device: B::Device,
        peer: PeerOf<B>,
        progress: ProgressMode,
    ) -> Result<Vec<ClassifierLog>> {
        #[cfg(feature = "distributed")]
        let talk = peer.as_ref().is_none_or(|p| p.rank() == 0);
        #[cfg(not(feature = "distributed"))]
        let talk = true;
        match &self.start {
            Start::New {
                recipe: Recipe::Finetune(config),
                train,
                val,
                target,
            } => {
                let (c, t, v, o) = (config.clone(), train.clone(), val.clone(), target.clone());
                let learner = match peer {
                    #[cfg(feature = "distributed")]
                    Some(peer) => Finetuner::<B>::new_on_peer(c, t, v, o, device, peer),
                    _ => Finetuner::<B>::new(c, t, v, o, device),
                };
                let learner = cli(learner)?.with_progress(progress);
                if talk {
                    print_load_report(learner.load_report());
                }
                drive(learner, talk, self.stop_after)
            }
            Start::New {
                recipe: Recipe::Linprobe(config),
                train,
                val,
                target,
            } => {
                let (c, t, v, o) = (config.clone(), train.clone(), val.clone(), target.clone());
                let learner = match peer {
                    #[cfg(feature = "distributed")]
                    Some(peer) => LinearProber::<B>::new_on_peer(c, t, v, o, device, peer),
                    _ => LinearProber::<B>::new(c, t, v, o, device),
                };
                let learner = cli(learner)?.with_progress(progress);
                if talk {
                    print_load_report(learner.load_report());
                }
                drive(learner, talk, self.stop_after)
            }
            Start::Resume {
                out_dir,
                linprobe: true,
            } => {
                let learner = match peer {
                    #[cfg(feature = "distributed")]
                    Some(peer) => {
                        let (train, val) = resume_data(out_dir)?;
                        LinearProber::<B>::resume_on_peer(out_dir, train, val, device, peer)
                    }
                    _ => LinearProber::<B>::resume(out_dir, device),
                };
                drive(cli(learner)?.with_progress(progress), talk, self.stop_after)
            }
            Start::Resume {
                out_dir,
                linprobe: false,
            } => {
                let learner = match peer {
                    #[cfg(feature = "distributed")]
                    Some(peer) => {
                        let (train, val) = resume_data(out_dir)?;
                        Finetuner::<B>::resume_on_peer(out_dir, train, val, device, peer)
                    }
                    _ => Finetuner::<B>::resume(out_dir, device),
                };
                drive(cli(learner)?.with_progress(progress), talk, self.stop_after)
            }
        }
    }
}

/// The data of the run saved in `out_dir` (for peers that resume on explicit datasets).
#[cfg(feature = "distributed")]
fn resume_data(out_dir: &std::path::Path) -> Result<(AnySource, Option<AnySource>)> {
    use supmae::train::open::{Checkpoint, open};
    let (_, what) = cli(open(out_dir))?;
    let Checkpoint::Classifier(meta) = what else {
        return err(format!(
            "{}: not a fine-tuning or linear-probing run",
            out_dir.display()
        ));
    };
    cli(load_data(&meta.data))
}

/// What the epoch loop needs of a learner.
trait Learner {
    fn done(&self) -> usize;
    fn total(&self) -> usize;
    fn epoch(&mut self) -> supmae::train::Result<ClassifierLog>;
    fn logs(&self) -> Vec<ClassifierLog>;
}

impl<B: AutodiffBackend> Learner for Finetuner<B> {
    fn done(&self) -> usize {
        self.history().len()
    }
    fn total(&self) -> usize {
        self.config().epochs
    }
    fn epoch(&mut self) -> supmae::train::Result<ClassifierLog> {
        self.run_epoch()
    }
    fn logs(&self) -> Vec<ClassifierLog> {
        self.history().to_vec()
    }
}

impl<B: AutodiffBackend> Learner for LinearProber<B> {
    fn done(&self) -> usize {
        self.history().len()
    }
    fn total(&self) -> usize {
        self.config().epochs
    }
    fn epoch(&mut self) -> supmae::train::Result<ClassifierLog> {
        self.run_epoch()
    }
    fn logs(&self) -> Vec<ClassifierLog> {
        self.history().to_vec()
    }
}

/// Runs the remaining epochs, printing each (rank 0).
/// Every epoch is checkpointed, so stopping early (`--stop-after`) needs nothing more.
fn drive(
    mut learner: impl Learner,
    talk: bool,
    stop_after: Option<usize>,
) -> Result<Vec<ClassifierLog>> {
    let total = learner.total();
    if talk && learner.done() > 0 {
        eprintln!("resuming after epoch {} of {total}", learner.done());
    }
    let stop = stop_after.map_or(total, |n| n.min(total));
    while learner.done() < stop {
        let log = cli(learner.epoch())?;
        if talk {
            print_epoch(&log, total);
        }
    }
    if talk && stop < total {
        eprintln!("stopped after epoch {stop} of {total}; continue with --resume");
    }
    Ok(learner.logs())
}
