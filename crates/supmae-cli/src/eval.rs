//! `supmae eval`: top-1 / top-5 and loss of a classifier checkpoint.

use std::path::PathBuf;

use supmae::burn::tensor::backend::AutodiffBackend;
use supmae::data::{AnySource, DataLoader, FolderDataset, ImageNet, LoaderConfig, ScanOptions};
use supmae::model::checkpoint::{KeyPolicy, StateDict, load_state_dict};
use supmae::train::classifier::{Classifier, classifier_transforms, evaluate};
use supmae::train::open::{Checkpoint, open};
use supmae::train::{ClassifierKind, DataSpec, EvalReport, load_classifier, load_data};
use supmae::{BackendJob, run_on};

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
    /// the file) [default: vit_base_patch16]
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
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
    let kind = args.backend.resolve()?;
    let job = Job {
        native: !matches!(what, Checkpoint::Foreign),
        checkpoint: args.checkpoint,
        data: args.data.map(|d| DataSpec::parse(Some(&d))),
        model: args.model,
        batch_size: args.batch_size,
        threads: args.threads,
    };
    let (report, what) = cli(run_on(kind, job))??;
    say!("{what}");
    say!(
        "top-1 {:.2}%  top-5 {:.2}%  loss {:.4}  on {} images",
        report.acc1,
        report.acc5,
        report.loss,
        report.images
    );
    Ok(())
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
    model: Option<String>,
    batch_size: usize,
    threads: usize,
}

impl BackendJob for Job {
    type Output = Result<(EvalReport, String)>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let (classifier, model, data, what) = if self.native {
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
            let model = vit_model(name)?
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
            supmae::data::Transform::pretrain(model.img_size as u32),
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
