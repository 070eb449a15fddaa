//! `supmae pretrain`: pre-train a SupMAE or MAE, data-parallel if asked.

use std::path::PathBuf;

use supmae::burn::tensor::backend::AutodiffBackend;
use supmae::{BackendJob, run_on};
use supmae_data::ImageSource;
use supmae_model::{ClsHeadConfig, MAE_PRESETS, MaeConfig};
use supmae_train::run_dir::{NewRun, Overwrite};
use supmae_train::{DataSpec, EpochLog, PretrainConfig, Pretrainer, ProgressMode, load_data};

use crate::common::{
    BackendArg, CliError, Result, advise, backend_label, cli, err, finite, mae_model, note, say,
};
use crate::parallel::{Parallel, PeerOf};

/// The model a folder of images gets when no `--model` is given.
pub const FOLDER_DEFAULT_MODEL: &str = "supmae_vit_mini_patch8_dec128d1b";

const ABOUT: &str = "\
Pre-train a SupMAE (or MAE) and watch it learn.

With no options, trains a small SupMAE (28 px, 7 px patches, 96-wide 4-block encoder, 20
epochs) on the Fashion-MNIST subset compiled into supmae (10,000 train / 2,000 val images) on
the CPU in about two minutes, printing the reconstruction loss and the classification
branch's validation accuracy.

A folder of your own images gets the same small network for RGB
(supmae_vit_mini_patch8_dec128d1b, 64 px) and the same short recipe; the paper's model is
--model supmae_vit_base_patch16_dec512d1b --input-size 224 with its recipe.

--resume continues the run in --out with the settings saved there; the only settings it
takes are --epochs (to extend the run), --out, --backend and the data-parallel options
(which must match the run's).";

/// `supmae pretrain` options.
#[derive(clap::Args, Debug)]
#[command(long_about = ABOUT, after_long_help = presets_help())]
pub struct Args {
    /// Data: fashion-mnist[:DIR] (full set; default DIR is Debian's
    /// /usr/share/datasets/fashion-mnist), embedded (default), or a folder: an ImageNet
    /// root (train/ + val/) or class sub-folders
    #[arg(long, value_name = "DATA", conflicts_with = "resume")]
    pub data: Option<String>,
    /// A preset (see below) or a JSON model config file [default: the small CPU model]
    #[arg(long, value_name = "MODEL", conflicts_with = "resume")]
    pub model: Option<String>,
    /// Image side in pixels (a multiple of the patch size) [default: the model's]
    #[arg(long, value_name = "PX", conflicts_with = "resume")]
    pub input_size: Option<usize>,
    /// Keep (supmae) or drop (mae) the classification branch [default: supmae]
    #[arg(long, value_enum, conflicts_with = "resume")]
    pub mode: Option<Mode>,
    /// Epochs of the run (the schedule's length); with --resume, extends the run
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Images per micro-batch
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step [default: 1]
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub accum_iter: Option<usize>,
    /// Base learning rate: lr = blr * batch * accum / 256
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub blr: Option<f64>,
    /// Absolute learning rate (overrides --blr)
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub lr: Option<f64>,
    /// Final learning rate of the cosine [default: 0]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub min_lr: Option<f64>,
    /// AdamW weight decay of weights (not biases/norms) [default: 0.05]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub weight_decay: Option<f64>,
    /// Share of patches removed [default: 0.75]
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub mask_ratio: Option<f64>,
    /// Linear warmup epochs
    #[arg(long, value_name = "F", value_parser = finite, conflicts_with = "resume")]
    pub warmup_epochs: Option<f64>,
    /// Seed of weights, data order, augmentation and masks [default: 0]
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub seed: Option<u64>,
    /// Checkpoint every N epochs (and after the last)
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub checkpoint_every: Option<usize>,
    /// Data-loading threads, 0 = all cores [default: 0]
    #[arg(long, value_name = "N", conflicts_with = "resume")]
    pub threads: Option<usize>,
    /// Skip the per-epoch validation of the classification branch
    #[arg(long, conflicts_with = "resume")]
    pub no_eval: bool,
    /// Start from these weights instead of a random initialisation (continued pre-training:
    /// a fresh schedule, not a resume): a run folder or .ckpt of ours, or an official MAE /
    /// SupMAE .pth or .safetensors, full or encoder-only; a missing decoder or
    /// classification branch starts fresh and is named
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Run folder: config.json, log.jsonl, checkpoint.ckpt
    #[arg(long, value_name = "DIR", default_value = "runs/pretrain")]
    pub out: PathBuf,
    /// Continue the run in --out from its checkpoint, with its saved settings
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

/// `--mode`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// MAE plus the classification branch.
    Supmae,
    /// Plain MAE.
    Mae,
}

fn presets_help() -> String {
    let mut help = String::from("Presets (--model):\n");
    for p in MAE_PRESETS {
        help.push_str("  ");
        help.push_str(p);
        help.push('\n');
    }
    help
}

/// The recipe the options ask for, and a line saying which model and why.
pub fn config(args: &Args) -> Result<(PretrainConfig, String)> {
    let data = DataSpec::parse(args.data.as_deref());
    let (mut config, mut why) = if data.is_fashion_mnist() {
        let c = PretrainConfig {
            data: data.clone(),
            ..PretrainConfig::fashion_mnist_cpu()
        };
        (
            c,
            "the small CPU model for Fashion-MNIST (28 px greyscale)".to_string(),
        )
    } else {
        // A folder of images: the same small network for RGB and the same short recipe,
        // not the paper's ViT-B/16 at 224 px (an hour per epoch for a few thousand images
        // on a laptop).
        let c = PretrainConfig {
            model: MaeConfig::supmae_vit_mini_patch8_dec128d1b(),
            data: data.clone(),
            ..PretrainConfig::fashion_mnist_cpu()
        };
        (
            c,
            format!(
                "{FOLDER_DEFAULT_MODEL}, the small CPU model (for the paper's model: --model \
                 supmae_vit_base_patch16_dec512d1b --input-size 224)"
            ),
        )
    };
    if let Some(name) = &args.model {
        config.model = mae_model(name)?;
        why = format!("{name} (--model)");
        if data.is_fashion_mnist() {
            config.model = config.model.clone().with_in_chans(1);
            if let Some(head) = config.model.cls_head.clone() {
                config.model = config
                    .model
                    .clone()
                    .with_cls_head(Some(head.with_num_classes(10)));
            }
        }
    }
    if let Some(px) = args.input_size {
        config.model = config.model.clone().with_img_size(px);
    }
    match args.mode {
        None | Some(Mode::Supmae) => {
            if config.model.cls_head.is_none() {
                config.model = config
                    .model
                    .clone()
                    .with_cls_head(Some(ClsHeadConfig::new()));
            }
        }
        Some(Mode::Mae) => config.model = config.model.clone().with_cls_head(None),
    }
    if let Some(v) = args.epochs {
        config.epochs = v;
        config.warmup_epochs = config.warmup_epochs.min(v as f64);
        config.checkpoint_every = config.checkpoint_every.min(v).max(1);
    }
    let set = |slot: &mut _, v: Option<_>| {
        if let Some(v) = v {
            *slot = v;
        }
    };
    set(&mut config.batch_size, args.batch_size);
    set(&mut config.accum_iter, args.accum_iter);
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    set(&mut config.checkpoint_every, args.checkpoint_every);
    set(&mut config.data_threads, args.threads);
    let setf = |slot: &mut f64, v: Option<f64>| {
        if let Some(v) = v {
            *slot = v;
        }
    };
    setf(&mut config.blr, args.blr);
    setf(&mut config.min_lr, args.min_lr);
    setf(&mut config.weight_decay, args.weight_decay);
    setf(&mut config.mask_ratio, args.mask_ratio);
    setf(&mut config.warmup_epochs, args.warmup_epochs);
    if args.lr.is_some() {
        config.lr = args.lr;
    }
    if args.no_eval {
        config.eval = false;
    }
    config.init = args.init.clone();
    config.peers = args.parallel.check()?.peers();
    cli(config.validate())?;
    let model = &config.model;
    let line = format!(
        "model: {why}; {} px, {} px patches, {}-wide {}-block encoder",
        model.img_size, model.patch_size, model.embed_dim, model.depth
    );
    Ok((config, line))
}

/// Runs `supmae pretrain`.
pub fn run(args: Args) -> Result<()> {
    let parallel = args.parallel.check()?;
    let parallel_first = parallel.is_first_process();
    check_resumable(&args)?;
    let (config, model_line) = if args.resume {
        (None, None)
    } else {
        let (c, line) = config(&args)?;
        (Some(c), Some(line))
    };
    let kind = args.backend.resolve()?;
    eprintln!("backend: {}", backend_label(kind));
    if let Some(line) = model_line {
        eprintln!("{line}");
    }
    let job = Job {
        config,
        target: NewRun::new(&args.out).overwrite(if args.overwrite {
            Overwrite::Yes
        } else {
            Overwrite::No
        }),
        epochs: args.epochs,
        stop_after: args
            .stop_after
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        progress: ProgressMode::auto(),
        parallel,
    };
    let first_process = parallel_first;
    let summary = cli(run_on(kind, job))??;
    if !first_process {
        return Ok(());
    }
    if let Some(last) = &summary.last {
        let first = summary.first.as_ref().map_or(last.rec_loss, |f| f.rec_loss);
        say!(
            "done in {:.1}s: reconstruction loss {:.4} (first epoch {:.4})",
            summary.seconds,
            last.rec_loss,
            first
        );
        if let (Some(full), Some(masked)) = (last.val_acc1_full, last.val_acc1_masked) {
            say!(
                "classification branch, validation top-1: {full:.2}% (all patches visible), \
                 {masked:.2}% (mask ratio as in training)"
            );
        }
    }
    say!("run folder: {}", summary.out_dir.display());
    Ok(())
}

/// The outcome of a run.
struct Summary {
    out_dir: PathBuf,
    last: Option<EpochLog>,
    first: Option<EpochLog>,
    seconds: f64,
}

struct Job {
    /// `None`: resume the run in `target`.
    config: Option<PretrainConfig>,
    target: NewRun,
    /// `--epochs` given with `--resume`.
    epochs: Option<usize>,
    /// `--stop-after`.
    stop_after: Option<usize>,
    progress: ProgressMode,
    parallel: Parallel,
}

impl BackendJob for Job {
    type Output = Result<Summary>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let parallel = self.parallel.clone();
        let progress = self.progress;
        let summaries =
            parallel.run_peers::<B, _, _>(device, progress, move |on, peer, progress| {
                Job {
                    config: self.config.clone(),
                    target: self.target.clone(),
                    epochs: self.epochs,
                    stop_after: self.stop_after,
                    progress,
                    parallel: self.parallel.clone(),
                }
                .run_peer::<B>(on, peer)
            })?;
        summaries
            .into_iter()
            .next()
            .ok_or_else(|| CliError("no device trained".into()))
    }
}

impl Job {
    fn run_peer<B: AutodiffBackend>(self, device: B::Device, peer: PeerOf<B>) -> Result<Summary> {
        let start = std::time::Instant::now();
        #[cfg(feature = "distributed")]
        let rank = peer.as_ref().map_or(0, |p| p.rank());
        #[cfg(not(feature = "distributed"))]
        let rank = 0;
        let talk = rank == 0;
        let out_dir = self.target.path().to_path_buf();
        let resumed = self.config.is_none();
        let mut trainer = match self.config {
            Some(mut config) => {
                let (train, val) = cli(load_data(&config.data))?;
                // A folder dataset brings its own classes.
                if !config.data.is_fashion_mnist()
                    && let Some(head) = config.model.cls_head.clone()
                {
                    let classes = train.classes().len().max(2);
                    config.model = config.model.clone().with_cls_head(Some(head.with_num_classes(classes)));
                }
                if talk {
                    eprintln!(
                        "pretraining {} on {} training images ({} classes), {} epochs, batch {} x {}{}, lr {:.3e}; run folder {}",
                        if config.model.cls_head.is_some() { "SupMAE" } else { "MAE" },
                        train.len(),
                        train.classes().len(),
                        config.epochs,
                        config.batch_size,
                        config.accum_iter,
                        if config.peers > 1 { format!(" x {} peers", config.peers) } else { String::new() },
                        config.peak_lr(),
                        out_dir.display()
                    );
                }
                match peer {
                    #[cfg(feature = "distributed")]
                    Some(peer) => Pretrainer::<B>::with_sources_on_peer(config, train, val, self.target, device, peer),
                    _ => Pretrainer::<B>::with_sources(config, train, val, self.target, device),
                }
            }
            None => match peer {
                #[cfg(feature = "distributed")]
                Some(peer) => Pretrainer::<B>::resume_peer(&out_dir, device, peer),
                _ => Pretrainer::<B>::resume(&out_dir, device),
            },
        }
        .map_err(|e| CliError(advise(&e)))?
        .with_progress(self.progress);
        if let (Some(report), Some(path), true) =
            (trainer.init_report(), trainer.config().init.as_ref(), talk)
        {
            let fresh: Vec<&str> = report.missing.iter().map(String::as_str).collect();
            eprintln!(
                "continuing from {}: loaded {} tensors; fresh: {}",
                path.display(),
                report.applied.len(),
                if fresh.is_empty() {
                    "none".to_string()
                } else {
                    fresh.join(", ")
                }
            );
        }
        if resumed
            && let Some(epochs) = self.epochs
            && epochs != trainer.config().epochs
        {
            cli(trainer.set_epochs(epochs))?;
        }
        if talk && resumed {
            eprintln!(
                "resuming {} after epoch {} of {}",
                out_dir.display(),
                trainer.epochs_done(),
                trainer.config().epochs
            );
        }
        let total = trainer.config().epochs;
        let stop = self.stop_after.map_or(total, |n| n.min(total));
        // Stopping early leaves a checkpoint of the last epoch done (the engine's).
        cli(trainer.run_until(stop, |log| {
            if talk {
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
        }))?;
        if stop < total && trainer.is_main() {
            note!("stopped after epoch {stop} of {total}; continue with --resume");
        }
        if self.parallel.peers() > 1 {
            // Equal on every peer: a quick check that the run stayed in sync.
            note!(
                "rank {rank}: parameter fingerprint {:016x}",
                trainer.parameter_fingerprint()
            );
        }
        let history = trainer.history();
        Ok(Summary {
            out_dir: trainer.out_dir().to_path_buf(),
            first: history.first().cloned(),
            last: history.last().cloned(),
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// Checks `--resume` has something to resume, before any backend starts.
fn check_resumable(args: &Args) -> Result<()> {
    if args.resume
        && !args
            .out
            .join(supmae_train::run_dir::CHECKPOINT_FILE)
            .is_file()
    {
        return err(format!(
            "--resume: no checkpoint in {} (nothing to resume)",
            args.out.display()
        ));
    }
    Ok(())
}
