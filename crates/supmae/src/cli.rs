//! The `supmae` command line: argument parsing and the commands, as library code so it is
//! tested like the rest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use supmae_data::{DEFAULT_MAX_PIXELS, ImageSource, check_dataset};
use supmae_model::{MAE_PRESETS, MaeConfig};
use supmae_train::{DataSpec, PretrainConfig, Pretrainer, ProgressMode, load_data};

use crate::backend::{BackendJob, BackendKind, run_on};

/// Top-level help.
pub const HELP: &str = "\
supmae: supervised masked autoencoders (SupMAE, MAE) in Rust

USAGE:
    supmae pretrain [OPTIONS]      pre-train a SupMAE or MAE
    supmae data check <ROOT>       scan a dataset and report classes, counts and bad files
    supmae help [COMMAND]          this help, or a command's

Run `supmae pretrain --help` for the pre-training options.";

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
    values: BTreeMap<String, String>,
    switches: Vec<String>,
}

const SWITCHES: &[&str] = &["resume", "no-eval", "help"];
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
                opts.values.insert(name.to_string(), value);
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

    /// The raw value of an option.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
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
    config.validate().map_err(|e| CliError(e.to_string()))?;
    Ok(config)
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
}

impl BackendJob for PretrainJob {
    type Output = Result<PretrainSummary, CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let start = std::time::Instant::now();
        let resumed = self.config_was_resumed();
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
                eprintln!(
                    "pretraining {} on {} training images ({} classes), {} epochs, batch {} x {}, lr {:.3e}; run folder {}",
                    if config.model.cls_head.is_some() { "SupMAE" } else { "MAE" },
                    train.len(),
                    train.classes().len(),
                    config.epochs,
                    config.batch_size,
                    config.accum_iter,
                    config.peak_lr(),
                    self.out_dir.display()
                );
                Pretrainer::<B>::with_sources(config, train, val, &self.out_dir, device)
            }
            None => Pretrainer::<B>::resume(&self.out_dir, device),
        }
        .map_err(|e| CliError(e.to_string()))?
        .with_progress(self.progress);
        let already = trainer.epochs_done();
        if resumed {
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
            if let Some(log) = trainer.history().last() {
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
