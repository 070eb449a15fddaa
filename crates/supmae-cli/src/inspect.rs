//! `supmae inspect`: which checkpoint flavour a file is and what it can do.

use std::path::PathBuf;

use supmae_model::StateDict;
use supmae_train::ClassifierKind;
use supmae_train::open::{Checkpoint, open};

use crate::common::{Result, cli, say};

/// `supmae inspect` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder, a .ckpt of ours, or an official .pth / .safetensors
    #[arg(value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
}

/// Runs `supmae inspect` (no backend needed: only headers are read).
pub fn run(args: Args) -> Result<()> {
    say!("{}", describe(&args.checkpoint)?);
    Ok(())
}

fn describe(path: &std::path::Path) -> Result<String> {
    let (file, what) = cli(open(path))?;
    Ok(match what {
        Checkpoint::Classifier(meta) => format!(
            "native {} checkpoint: ViT {}x{} ({} px, patch {}), {} classes, {} epochs, best \
             top-1 {}. Can classify, embed and evaluate; cannot reconstruct (no decoder).",
            match meta.kind {
                ClassifierKind::Finetune => "fine-tuned",
                ClassifierKind::Linprobe => "linear-probe",
            },
            meta.model.embed_dim,
            meta.model.depth,
            meta.model.img_size,
            meta.model.patch_size,
            meta.model.num_classes,
            meta.epochs_done,
            meta.best_acc1.map_or("n/a".into(), |a| format!("{a:.2}%"))
        ),
        Checkpoint::Pretrain {
            config,
            epochs_done,
            converted_from,
        } => {
            let model = &config.model;
            format!(
                "native {} pre-training checkpoint: ViT {}x{} ({} px, patch {}), decoder {}x{}, \
                 {epochs_done} epochs done{}. Can reconstruct, embed, be fine-tuned and probed{}.",
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
                converted_from.map_or(String::new(), |s| format!(", converted from \"{s}\"")),
                if model.cls_head.is_some() {
                    ", classify with its branch"
                } else {
                    ""
                }
            )
        }
        Checkpoint::Foreign => {
            let state = cli(StateDict::from_file(&file))?;
            let info = cli(supmae_model::inspect(&state))?;
            format!("{}: {}", file.display(), info.describe())
        }
    })
}
