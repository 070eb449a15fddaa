//! `supmae finetune` and `supmae linprobe`: train a classifier on a pre-trained encoder.

use std::path::PathBuf;

use supmae::run_on;
use supmae_data::ImageSource;
use supmae_model::VitConfig;
use supmae_train::open::{Checkpoint, open};
use supmae_train::run_dir::{NewRun, Overwrite};
use supmae_train::{DataSpec, FinetuneConfig, Init, LinprobeConfig, PretrainConfig, load_data};

use crate::common::{BackendArg, Result, backend_label, cli, err, finite, vit_model};
use crate::parallel::Parallel;

mod job;
use job::{Job, Start, report};

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
        (Some(path), _) if path.exists() && cli(open(path))?.1.is_ours() => {
            match cli(open(path))?.1 {
                Checkpoint::Pretrain { config, .. } => {
                    config.model.classifier(classes, global_pool)
                }
                _ => {
                    return err(format!(
                        "{}: a fine-tuned or probed classifier, not a pre-training checkpoint",
                        path.display()
                    ));
                }
            }
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
        "backend: {}; {} on {} training images ({} classes); run folder {}",
        backend_label(kind),
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
        .join(supmae_train::run_dir::CHECKPOINT_FILE)
        .is_file()
    {
        return err(format!(
            "--resume: no checkpoint in {} (nothing to resume)",
            out_dir.display()
        ));
    }
    let kind = c.backend.resolve()?;
    eprintln!(
        "backend: {}; resuming {}",
        backend_label(kind),
        out_dir.display()
    );
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
