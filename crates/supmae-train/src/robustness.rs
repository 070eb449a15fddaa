//! Robustness under distribution shift (spec §5.2): a fine-tuned ImageNet classifier on
//! ImageNet-C, ImageNet-A, ImageNet-R and ImageNet-Sketch, and the SupMAE paper's score,
//! `mean(100 − mCE, A, R, Sketch)`.
//!
//! Each dataset is read in its standard on-disk layout under one root
//! ([`RobustnessRoot::find`]):
//! - `imagenet-a/<wnid>/` and `imagenet-r/<wnid>/`: 200 classes each. The logits are
//!   restricted to those 200 classes ([`ClassSubsets`]) before the arg-max, as the datasets'
//!   authors evaluate them (to those the classifier has, for a classifier of fewer classes);
//! - `imagenet-sketch/<wnid>/` (or `imagenet-sketch/sketch/<wnid>/`): the 1000 classes;
//! - `imagenet-c/<corruption>/<severity 1-5>/<wnid>/`: top-1 for every corruption and
//!   severity found. A corruption's error (CE) is its error averaged over severities,
//!   divided by AlexNet's ([`CORRUPTIONS`]); mCE is the mean CE over the corruptions.
//!
//! The classifier is any function from images to logits whose columns are the wnids in
//! `classes` (for ImageNet checkpoints, the sorted 1000 wnids: [`supmae_data::imagenet_wnids`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use serde::Serialize;
use supmae_data::{
    AnySource, DataLoader, FolderDataset, IMAGENET_A_WNIDS, IMAGENET_R_WNIDS, LoaderConfig,
    ScanOptions, Transform,
};

use crate::error::{Result, TrainError};

/// The 15 ImageNet-C corruptions and AlexNet's top-1 error on each, averaged over the five
/// severities (a fraction). Source: Hendrycks & Dietterich, "Benchmarking Neural Network
/// Robustness to Common Corruptions and Perturbations" (ICLR 2019); the values are those of
/// the authors' evaluation script (`ImageNet-C/test.py` in hendrycks/robustness), which
/// later evaluations reuse.
pub const CORRUPTIONS: [(&str, f64); 15] = [
    ("gaussian_noise", 0.886428),
    ("shot_noise", 0.894468),
    ("impulse_noise", 0.922640),
    ("defocus_blur", 0.819880),
    ("glass_blur", 0.826268),
    ("motion_blur", 0.785948),
    ("zoom_blur", 0.798360),
    ("snow", 0.866816),
    ("frost", 0.826572),
    ("fog", 0.819324),
    ("brightness", 0.564592),
    ("contrast", 0.853204),
    ("elastic_transform", 0.646056),
    ("pixelate", 0.717840),
    ("jpeg_compression", 0.606500),
];

/// The SupMAE paper's robustness score: `mean(100 − mCE, A, R, Sketch)`, all in %.
pub fn score(mce: f64, a: f64, r: f64, sketch: f64) -> f64 {
    ((100.0 - mce) + a + r + sketch) / 4.0
}

/// A corruption's error (CE, %): its top-1 errors (%) averaged over the severities
/// evaluated, divided by AlexNet's error on it (a fraction, [`CORRUPTIONS`]).
pub fn corruption_error(top1_by_severity: &[f64], alexnet_error: f64) -> f64 {
    let n = top1_by_severity.len().max(1) as f64;
    let error = top1_by_severity.iter().map(|a| 100.0 - a).sum::<f64>() / n;
    error / alexnet_error
}

/// The datasets found under a root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RobustnessRoot {
    /// `imagenet-c/`.
    pub c: Option<PathBuf>,
    /// `imagenet-a/`.
    pub a: Option<PathBuf>,
    /// `imagenet-r/`.
    pub r: Option<PathBuf>,
    /// `imagenet-sketch/` (or its `sketch/` sub-folder, as the archive unpacks).
    pub sketch: Option<PathBuf>,
}

impl RobustnessRoot {
    /// Looks for `imagenet-c`, `imagenet-a`, `imagenet-r` and `imagenet-sketch` under
    /// `root`; at least one must be there.
    pub fn find(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let dir = |name: &str| Some(root.join(name)).filter(|p| p.is_dir());
        let found = Self {
            c: dir("imagenet-c"),
            a: dir("imagenet-a"),
            r: dir("imagenet-r"),
            sketch: dir("imagenet-sketch").map(|p| {
                let inner = p.join("sketch");
                if inner.is_dir() { inner } else { p }
            }),
        };
        if found == Self::default() {
            return Err(bad(format!(
                "{}: none of imagenet-c/, imagenet-a/, imagenet-r/, imagenet-sketch/ is there",
                root.display()
            )));
        }
        Ok(found)
    }
}

/// The class subsets of ImageNet-A and ImageNet-R (wnids, in their folder order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSubsets {
    /// ImageNet-A's classes.
    pub a: Vec<String>,
    /// ImageNet-R's classes.
    pub r: Vec<String>,
}

impl ClassSubsets {
    /// The datasets' standard 200-class subsets.
    pub fn standard() -> Self {
        let own = |l: &[&str]| l.iter().map(|w| w.to_string()).collect();
        Self {
            a: own(&IMAGENET_A_WNIDS),
            r: own(&IMAGENET_R_WNIDS),
        }
    }
}

/// How the images are read.
#[derive(Debug, Clone)]
pub struct RobustnessOptions {
    /// Images per batch.
    pub batch_size: usize,
    /// Data-loading threads (0 = all cores).
    pub threads: usize,
    /// The evaluation transform (resize, center crop, normalisation).
    pub transform: Transform,
}

/// Top-1 on one dataset (or one corruption at one severity).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Top1 {
    /// Top-1 accuracy, %.
    pub top1: f64,
    /// Images evaluated.
    pub images: usize,
    /// Classes the arg-max ran over (200 on ImageNet-A and -R, 1000 elsewhere, for an
    /// ImageNet-1k classifier).
    pub classes: usize,
}

/// One corruption of ImageNet-C.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorruptionResult {
    /// Its folder name (`gaussian_noise`, ...).
    pub name: String,
    /// Top-1 at each severity found, in order.
    pub severities: Vec<(u8, Top1)>,
    /// Top-1 error (%) averaged over those severities.
    pub error: f64,
    /// AlexNet's error on it (%).
    pub alexnet_error: f64,
    /// Corruption error: `error / AlexNet's error`, %.
    pub ce: f64,
}

/// ImageNet-C's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageNetC {
    /// Every corruption found, in [`CORRUPTIONS`] order.
    pub corruptions: Vec<CorruptionResult>,
    /// Mean corruption error over them, %.
    pub mce: f64,
    /// Whether all 15 corruptions at all 5 severities were there (else mCE is over what was).
    pub complete: bool,
}

/// Everything [`evaluate_robustness`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RobustnessReport {
    /// ImageNet-C.
    pub imagenet_c: Option<ImageNetC>,
    /// ImageNet-A (logits restricted to its 200 classes).
    pub imagenet_a: Option<Top1>,
    /// ImageNet-R (logits restricted to its 200 classes).
    pub imagenet_r: Option<Top1>,
    /// ImageNet-Sketch.
    pub imagenet_sketch: Option<Top1>,
    /// The paper's score, when all four datasets were evaluated.
    pub score: Option<f64>,
}

fn bad(reason: String) -> TrainError {
    TrainError::InvalidConfig {
        field: "robustness",
        reason,
    }
}

/// Evaluates `logits_of` (whose logit columns are the wnids `classes`) on every dataset of
/// `root`; `progress` hears of each dataset (and each corruption and severity) as it is
/// done.
pub fn evaluate_robustness<B: Backend>(
    root: &RobustnessRoot,
    classes: &[String],
    subsets: &ClassSubsets,
    options: &RobustnessOptions,
    device: &B::Device,
    mut logits_of: impl FnMut(Tensor<B, 4>) -> Result<Tensor<B, 2>>,
    mut progress: impl FnMut(&str, &Top1),
) -> Result<RobustnessReport> {
    let all: Vec<usize> = (0..classes.len()).collect();
    let mut run = |dir: &Path, folders: Vec<String>, columns: &[usize], name: &str| {
        let top1 = top1_on::<B>(dir, folders, columns, options, device, &mut logits_of)?;
        progress(name, &top1);
        Ok::<_, TrainError>(top1)
    };
    // The arg-max runs over the subset's classes that the classifier has: all 200 for an
    // ImageNet-1k classifier (`Top1::classes` says how many).
    let mut subset = |dir: &Path, wnids: &[String], name: &str| {
        let (kept, columns): (Vec<String>, Vec<usize>) = wnids
            .iter()
            .filter_map(|w| classes.iter().position(|c| c == w).map(|i| (w.clone(), i)))
            .unzip();
        if kept.is_empty() {
            return Err(bad(format!("the classifier has none of {name}'s classes")));
        }
        run(dir, kept, &columns, name)
    };
    let imagenet_a = match &root.a {
        Some(dir) => Some(subset(dir, &subsets.a, "imagenet-a")?),
        None => None,
    };
    let imagenet_r = match &root.r {
        Some(dir) => Some(subset(dir, &subsets.r, "imagenet-r")?),
        None => None,
    };
    let imagenet_sketch = match &root.sketch {
        Some(dir) => Some(run(dir, classes.to_vec(), &all, "imagenet-sketch")?),
        None => None,
    };
    let imagenet_c = match &root.c {
        Some(dir) => {
            let mut corruptions = Vec::new();
            let mut complete = true;
            for (name, alexnet) in CORRUPTIONS {
                let mut severities = Vec::new();
                for severity in 1..=5u8 {
                    let sev_dir = dir.join(name).join(severity.to_string());
                    if !sev_dir.is_dir() {
                        complete = false;
                        continue;
                    }
                    let label = format!("imagenet-c/{name}/{severity}");
                    let top1 = run(&sev_dir, classes.to_vec(), &all, &label)?;
                    severities.push((severity, top1));
                }
                if severities.is_empty() {
                    continue;
                }
                let top1s: Vec<f64> = severities.iter().map(|(_, t)| t.top1).collect();
                let ce = corruption_error(&top1s, alexnet);
                corruptions.push(CorruptionResult {
                    name: name.to_string(),
                    error: ce * alexnet,
                    alexnet_error: 100.0 * alexnet,
                    ce,
                    severities,
                });
            }
            if corruptions.is_empty() {
                return Err(bad(format!(
                    "{}: no <corruption>/<severity>/ folder of the 15 standard corruptions \
                     (e.g. gaussian_noise/1/)",
                    dir.display()
                )));
            }
            let mce = corruptions.iter().map(|c| c.ce).sum::<f64>() / corruptions.len() as f64;
            Some(ImageNetC {
                complete: complete && corruptions.len() == CORRUPTIONS.len(),
                corruptions,
                mce,
            })
        }
        None => None,
    };
    let score = match (&imagenet_c, imagenet_a, imagenet_r, imagenet_sketch) {
        (Some(c), Some(a), Some(r), Some(s)) => Some(score(c.mce, a.top1, r.top1, s.top1)),
        _ => None,
    };
    Ok(RobustnessReport {
        imagenet_c,
        imagenet_a,
        imagenet_r,
        imagenet_sketch,
        score,
    })
}

/// Top-1 over the images of `dir/<folder>/`, where folder `folders[i]` is class `i` and its
/// logit is column `columns[i]` (the arg-max is taken over those columns only).
fn top1_on<B: Backend>(
    dir: &Path,
    folders: Vec<String>,
    columns: &[usize],
    options: &RobustnessOptions,
    device: &B::Device,
    logits_of: &mut impl FnMut(Tensor<B, 4>) -> Result<Tensor<B, 2>>,
) -> Result<Top1> {
    let (dataset, _) = FolderDataset::scan_with_classes(dir, folders, &ScanOptions::default())?;
    if dataset.samples().is_empty() {
        return Err(bad(format!(
            "{}: no images in class folders named by wnid",
            dir.display()
        )));
    }
    let loader = DataLoader::new(
        Arc::new(AnySource::Folder(dataset)),
        options.transform.clone(),
        LoaderConfig {
            shuffle: false,
            drop_last: false,
            threads: options.threads,
            ..LoaderConfig::new(options.batch_size)
        },
    )?;
    let (mut right, mut images) = (0usize, 0usize);
    for batch in loader.epoch(0) {
        let batch = batch?;
        if batch.is_empty() {
            continue;
        }
        let labels = batch.labels.clone();
        let (x, _) = batch.into_tensors::<B>(device);
        let logits = logits_of(x)?;
        let [_, width] = logits.dims();
        if let Some(&c) = columns.iter().find(|&&c| c >= width) {
            return Err(bad(format!(
                "the classifier gives {width} logits; class column {c} is out of range"
            )));
        }
        let values = logits
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| bad(format!("logits: {e:?}")))?;
        for (row, &label) in values.chunks_exact(width).zip(&labels) {
            // The first of the largest, as `argmax` does.
            let mut best = 0;
            for (i, &c) in columns.iter().enumerate() {
                if row[c] > row[columns[best]] {
                    best = i;
                }
            }
            right += usize::from(best as i64 == label);
            images += 1;
        }
    }
    Ok(Top1 {
        top1: 100.0 * right as f64 / images.max(1) as f64,
        images,
        classes: columns.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_score_comes_back_from_its_four_numbers() {
        // Spec §5.2: SupMAE C 48.1, A 35.5, R 51.0, Sketch 36.0 -> 43.6; MAE 41.75; DeiT 39.45.
        assert!((score(48.1, 35.5, 51.0, 36.0) - 43.6).abs() < 1e-9);
        assert!((score(51.7, 35.9, 48.3, 34.5) - 41.75).abs() < 1e-9);
        assert!((score(47.4, 27.9, 45.3, 32.0) - 39.45).abs() < 1e-9);
    }

    #[test]
    fn corruption_error_is_the_mean_error_over_alexnets() {
        // Top-1 50% and 25% at two severities: error 62.5%, over AlexNet's 88.6428%.
        let ce = corruption_error(&[50.0, 25.0], 0.886428);
        assert!((ce - 62.5 / 0.886428).abs() < 1e-9, "{ce}");
        assert!((ce - 70.507_700_569).abs() < 1e-6, "{ce}");
    }
}
