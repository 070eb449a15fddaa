//! `supmae eval`: top-1 / top-5 and loss of a classifier checkpoint, or its robustness on
//! ImageNet-C / -A / -R / -Sketch (`--robustness`).

use std::path::PathBuf;

use supmae::burn::tensor::backend::AutodiffBackend;
use supmae::{BackendJob, run_on};
use supmae_data::{AnySource, DataLoader, FolderDataset, ImageNet, LoaderConfig, ScanOptions};
use supmae_model::checkpoint::StateDict;
use supmae_train::classifier::{Classifier, classifier_transforms, evaluate};
use supmae_train::open::{Checkpoint, open};
use supmae_train::robustness::{
    ClassSubsets, RobustnessOptions, RobustnessReport, RobustnessRoot, evaluate_robustness,
};
use supmae_train::{
    ClassifierKind, DataSpec, EvalReport, load_classifier, load_data, official_classifier,
};

use crate::common::{BackendArg, CliError, Result, cli, err, say, vit_model};

/// `supmae eval` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A fine-tuning or linear-probing run folder (its best.ckpt) or .ckpt file, or an
    /// official fine-tuned .pth (mae_finetuned_vit_*, supmae_vitb_ft_100e.pth)
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// fashion-mnist[:DIR], embedded, an ImageNet root (its val/ is used) or a folder of
    /// class sub-folders [default: the data the checkpoint was trained on; required for .pth
    /// files]
    #[arg(long, value_name = "DATA")]
    pub data: Option<String>,
    /// ViT preset or JSON VitConfig of an official .pth (classes and pooling are read from
    /// the file) [default: the architecture the file's tensor shapes give]
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Robustness instead: evaluate on whichever of imagenet-c/, imagenet-a/, imagenet-r/,
    /// imagenet-sketch/ ROOT holds (standard layouts, docs/guide.md) and print the paper's
    /// table and score, then the report as one JSON line
    #[arg(long, value_name = "ROOT", conflicts_with = "data")]
    pub robustness: Option<PathBuf>,
    /// Images per batch
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub batch_size: usize,
    /// Data-loading threads, 0 = all cores
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub backend: BackendArg,
}

/// Runs `supmae eval`.
pub fn run(args: Args) -> Result<()> {
    if !args.checkpoint.exists() {
        return err(format!(
            "--checkpoint {}: no such file or folder",
            args.checkpoint.display()
        ));
    }
    // Fail early and clearly on a pre-training checkpoint.
    let (_, what) = cli(open(&args.checkpoint))?;
    if let Checkpoint::Pretrain { .. } = what {
        return err(format!(
            "{}: a pre-training checkpoint, not a classifier (fine-tune or probe it first: \
             `supmae finetune --checkpoint {}`)",
            args.checkpoint.display(),
            args.checkpoint.display()
        ));
    }
    let robustness = match &args.robustness {
        Some(root) => Some(cli(RobustnessRoot::find(root))?),
        None => None,
    };
    let kind = args.backend.resolve()?;
    let job = Job {
        native: !matches!(what, Checkpoint::Foreign),
        checkpoint: args.checkpoint,
        data: args.data.map(|d| DataSpec::parse(Some(&d))),
        robustness,
        model: args.model,
        batch_size: args.batch_size,
        threads: args.threads,
    };
    let (outcome, what) = cli(run_on(kind, job))??;
    say!("{what}");
    match outcome {
        Outcome::Accuracy(report) => say!(
            "top-1 {:.2}%  top-5 {:.2}%  loss {:.4}  on {} images",
            report.acc1,
            report.acc5,
            report.loss,
            report.images
        ),
        Outcome::Robustness(report) => print_robustness(&report),
    }
    Ok(())
}

/// What `supmae eval` measured.
enum Outcome {
    Accuracy(EvalReport),
    Robustness(RobustnessReport),
}

/// The paper's table (spec §5.2) with this model's column, ImageNet-C's details, and the
/// report as one JSON line.
fn print_robustness(report: &RobustnessReport) {
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    if let Some(c) = &report.imagenet_c {
        say!("ImageNet-C, top-1 by severity and corruption error (CE = error / AlexNet's):");
        for row in &c.corruptions {
            let sev: Vec<String> = row
                .severities
                .iter()
                .map(|(s, t)| format!("{s}: {:.2}%", t.top1))
                .collect();
            say!(
                "  {:<18} {}  error {:.2}%  AlexNet {:.2}%  CE {:.2}",
                row.name,
                sev.join("  "),
                row.error,
                row.alexnet_error,
                row.ce
            );
        }
        if !c.complete {
            say!(
                "  (mCE over {} of the 15 corruptions and the severities found: not comparable \
                 with published numbers)",
                c.corruptions.len()
            );
        }
    }
    say!(
        "{:<36} {:>10} {:>8} {:>8} {:>8}",
        "dataset",
        "this model",
        "SupMAE",
        "MAE",
        "DeiT"
    );
    let rows = [
        (
            "IN-Corruption, mCE (lower is better)",
            report.imagenet_c.as_ref().map(|c| c.mce),
            48.1,
            51.7,
            47.4,
        ),
        (
            "IN-Adversarial (A), top-1",
            report.imagenet_a.map(|t| t.top1),
            35.5,
            35.9,
            27.9,
        ),
        (
            "IN-Rendition (R), top-1",
            report.imagenet_r.map(|t| t.top1),
            51.0,
            48.3,
            45.3,
        ),
        (
            "IN-Sketch, top-1",
            report.imagenet_sketch.map(|t| t.top1),
            36.0,
            34.5,
            32.0,
        ),
        (
            "score = mean(100 - mCE, A, R, Sketch)",
            report.score,
            43.6,
            41.8,
            39.5,
        ),
    ];
    for (name, ours, supmae, mae, deit) in rows {
        say!(
            "{name:<36} {:>10} {supmae:>8.1} {mae:>8.1} {deit:>8.1}",
            cell(ours)
        );
    }
    say!(
        "{}",
        serde_json::to_string(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    );
}

/// The validation images of `data`: Fashion-MNIST's test split, an ImageNet root's `val/`,
/// or a plain folder of class sub-folders.
fn eval_source(data: &DataSpec) -> Result<AnySource> {
    Ok(match data {
        DataSpec::Folder { path } if !path.join("val").is_dir() => {
            AnySource::Folder(cli(FolderDataset::scan(path, &ScanOptions::default()))?.0)
        }
        DataSpec::Folder { path } => {
            AnySource::Folder(cli(ImageNet::val(path, &ScanOptions::default()))?.0)
        }
        other => cli(load_data(other))?
            .1
            .ok_or_else(|| CliError("the data has no validation split".into()))?,
    })
}

struct Job {
    native: bool,
    checkpoint: PathBuf,
    data: Option<DataSpec>,
    robustness: Option<RobustnessRoot>,
    model: Option<String>,
    batch_size: usize,
    threads: usize,
}

impl BackendJob for Job {
    type Output = Result<(Outcome, String)>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let (classifier, model, data, what, classes) = if self.native {
            let (clf, meta) = cli(load_classifier::<I<B>>(&self.checkpoint, &device))?;
            let what = format!(
                "{} checkpoint, {} epochs, {} classes",
                match meta.kind {
                    ClassifierKind::Finetune => "fine-tuned",
                    ClassifierKind::Linprobe => "linear-probe",
                },
                meta.epochs_done,
                meta.model.num_classes
            );
            let data = self.data.clone().unwrap_or(meta.data);
            (clf, meta.model, data, what, meta.classes)
        } else {
            let data = match (self.data.clone(), &self.robustness) {
                (Some(data), _) => data,
                (None, Some(_)) => DataSpec::Folder {
                    path: PathBuf::from("."),
                },
                (None, None) => {
                    return err("--data is required to evaluate an official .pth checkpoint");
                }
            };
            let state = cli(StateDict::from_file(&self.checkpoint))?;
            if !(state.contains("head.weight") || state.contains("head.1.weight")) {
                return err(format!(
                    "{}: no `head.weight`: not a fine-tuned classifier (a pre-training \
                     checkpoint goes to `supmae finetune --checkpoint`)",
                    self.checkpoint.display()
                ));
            }
            let given = self.model.as_deref().map(vit_model).transpose()?;
            let (classifier, model) =
                cli(official_classifier::<I<B>>(&state, given.as_ref(), &device))?;
            let name = self.model.as_deref().unwrap_or("ViT");
            let what = format!(
                "official {} {name} ({} pool, {} classes)",
                match classifier {
                    Classifier::Vit(_) => "fine-tuned",
                    Classifier::Probe(_) => "linear-probe",
                },
                if model.global_pool {
                    "global"
                } else {
                    "cls-token"
                },
                model.num_classes
            );
            let classes = if model.num_classes == 1000 {
                supmae_data::imagenet_wnids()
            } else {
                Vec::new()
            };
            (classifier, model, data, what, classes)
        };
        if let Some(root) = &self.robustness {
            let report = robustness::<I<B>>(
                root,
                &classifier,
                &model,
                &classes,
                self.batch_size,
                self.threads,
                &device,
            )?;
            return Ok((Outcome::Robustness(report), what));
        }
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
        Ok((Outcome::Accuracy(report), what))
    }
}

/// `--robustness`: the classifier on every dataset under the root, with ImageNet's
/// evaluation pipeline at the model's resolution.
fn robustness<B: supmae::burn::prelude::Backend>(
    root: &RobustnessRoot,
    classifier: &Classifier<B>,
    model: &supmae_model::VitConfig,
    classes: &[String],
    batch_size: usize,
    threads: usize,
    device: &B::Device,
) -> Result<RobustnessReport> {
    let is_wnid = |c: &String| {
        c.len() == 9 && c.starts_with('n') && c[1..].bytes().all(|b| b.is_ascii_digit())
    };
    if classes.is_empty() || !classes.iter().all(is_wnid) {
        return err(format!(
            "--robustness needs an ImageNet classifier whose classes are wnids (n01440764, ...); \
             this one has {} classes{}",
            model.num_classes,
            classes
                .first()
                .map(|c| format!(" named like `{c}`"))
                .unwrap_or_default()
        ));
    }
    let folder = DataSpec::Folder {
        path: PathBuf::from("."),
    };
    let (_, transform) = cli(classifier_transforms(
        &folder,
        model,
        supmae_data::Transform::pretrain(model.img_size as u32),
    ))?;
    let options = RobustnessOptions {
        batch_size,
        threads,
        transform,
    };
    eprintln!(
        "evaluating on{}{}{}{}",
        if root.c.is_some() { " imagenet-c" } else { "" },
        if root.a.is_some() { " imagenet-a" } else { "" },
        if root.r.is_some() { " imagenet-r" } else { "" },
        if root.sketch.is_some() {
            " imagenet-sketch"
        } else {
            ""
        },
    );
    let start = std::time::Instant::now();
    cli(evaluate_robustness::<B>(
        root,
        classes,
        &ClassSubsets::standard(),
        &options,
        device,
        |x| classifier.forward(x),
        |name, top1| {
            eprintln!(
                "  {name}: top-1 {:.2}% on {} images ({:.0} s so far)",
                top1.top1,
                top1.images,
                start.elapsed().as_secs_f64()
            )
        },
    ))
}
