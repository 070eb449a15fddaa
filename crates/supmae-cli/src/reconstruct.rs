//! `supmae reconstruct`: masked images and their reconstructions, as MAE's demo.

use std::path::PathBuf;

use supmae::burn::tensor::backend::AutodiffBackend;
use supmae::{BackendJob, Reconstructor, grid, run_on};

use crate::common::{BackendArg, CliError, Result, cli, finite, say};

const ABOUT: &str = "\
Reconstruct masked images, as MAE's visualisation demo.

Writes a PNG with one row per image: original | masked | reconstruction | reconstruction
with the visible patches pasted back, and prints each image's error on the removed patches
next to the error of predicting every removed patch as its own mean colour. Predictions of
normalised-pixel checkpoints are de-normalised with each original patch's mean and
variance.";

/// `supmae reconstruct` options.
#[derive(clap::Args, Debug)]
#[command(long_about = ABOUT)]
pub struct Args {
    /// A checkpoint with a decoder: a `supmae pretrain` run folder or .ckpt, or an official
    /// SupMAE / MAE full .pth or .safetensors
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// An image to reconstruct (repeat for more rows)
    #[arg(long, value_name = "FILE", required = true)]
    pub image: Vec<PathBuf>,
    /// The PNG to write
    #[arg(long, value_name = "FILE", default_value = "reconstruction.png")]
    pub out: PathBuf,
    /// Share of patches removed
    #[arg(long, value_name = "F", value_parser = finite, default_value_t = 0.75)]
    pub mask_ratio: f64,
    /// Seed of the masks
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Pixel zoom of each picture [default: 1; models under 64 px: 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub scale: Option<u32>,
    /// The model predicts raw pixels (mae_visualize_*.pth names are detected)
    #[arg(long)]
    pub pixel_targets: bool,
    #[command(flatten)]
    pub backend: BackendArg,
}

/// Runs `supmae reconstruct`.
pub fn run(args: Args) -> Result<()> {
    let kind = args.backend.resolve()?;
    let out = args.out.clone();
    let (description, rows) = cli(run_on(kind, Job(args)))??;
    say!("{description}");
    for (file, rec, flat) in &rows {
        let change = 100.0 * (1.0 - rec / flat.max(1e-12));
        let verdict = if change >= 0.0 {
            format!("{change:.0}% lower")
        } else {
            format!("{:.0}% higher: unlike the training images?", -change)
        };
        say!(
            "{}: error on removed patches {rec:.4} vs {flat:.4} for flat patch-mean patches ({verdict})",
            file.display()
        );
    }
    say!("wrote {}", out.display());
    Ok(())
}

/// Per image: file, error on removed patches, error of the patch-mean prediction.
type Rows = Vec<(PathBuf, f64, f64)>;

struct Job(Args);

impl BackendJob for Job {
    type Output = Result<(String, Rows)>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let a = self.0;
        let r = cli(Reconstructor::<I<B>>::load(
            &a.checkpoint,
            &device,
            a.pixel_targets.then_some(true),
        ))?;
        let images =
            supmae::read_images(&a.image).map_err(|e| CliError(format!("--image: {e}")))?;
        let recs = cli(r.reconstruct(&images, a.mask_ratio, a.seed))?;
        let size = recs.first().map_or(224, |x| x.original.width());
        let scale = a.scale.unwrap_or(if size < 64 { 4 } else { 1 });
        let picture = cli(grid(&recs, scale))?;
        // Through a unique temporary name, renamed into place: never a half-written PNG.
        let tmp = supmae_train::run_dir::tmp_path(&a.out);
        let saved = picture
            .save_with_format(&tmp, supmae::image::ImageFormat::Png)
            .map_err(|e| e.to_string())
            .and_then(|()| std::fs::rename(&tmp, &a.out).map_err(|e| e.to_string()));
        if let Err(e) = saved {
            let _ = std::fs::remove_file(&tmp);
            return Err(CliError(format!("--out {}: {e}", a.out.display())));
        }
        let rows = a
            .image
            .iter()
            .zip(&recs)
            .map(|(f, x)| (f.clone(), x.masked_mse, x.patch_mean_mse))
            .collect();
        Ok((r.describe().to_string(), rows))
    }
}
