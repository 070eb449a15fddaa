//! Scanning a dataset for problems: `supmae data check <root>`.

use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::decode::read_image;
use crate::error::{DataError, Result};
use crate::folder::{FolderDataset, ImageNet, ScanOptions, ScanReport, SkipPolicy, Skipped};
use crate::source::ImageSource;

/// What a check found in one split (or a plain folder dataset).
#[derive(Debug, Clone)]
pub struct SplitReport {
    /// `train`, `val`, or `.` for a plain folder dataset.
    pub name: String,
    /// Where the split is.
    pub path: PathBuf,
    /// Class names.
    pub classes: Vec<String>,
    /// Samples per class.
    pub counts: Vec<usize>,
    /// Problems found while scanning (empty classes, loops, labels) and decoding.
    pub bad: Vec<Skipped>,
    /// Files ignored for their extension.
    pub ignored_files: usize,
}

/// The result of [`check_dataset`].
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The dataset root.
    pub root: PathBuf,
    /// One entry per split.
    pub splits: Vec<SplitReport>,
}

impl CheckReport {
    /// Total number of bad entries over all splits.
    pub fn bad_count(&self) -> usize {
        self.splits.iter().map(|s| s.bad.len()).sum()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset {}", self.root.display())?;
        for split in &self.splits {
            let total: usize = split.counts.iter().sum();
            let min = split.counts.iter().min().copied().unwrap_or(0);
            let max = split.counts.iter().max().copied().unwrap_or(0);
            writeln!(
                f,
                "  {}: {} classes, {} images (per class {}..{}), {} bad, {} ignored non-image files",
                split.name,
                split.classes.len(),
                total,
                min,
                max,
                split.bad.len(),
                split.ignored_files
            )?;
            for bad in &split.bad {
                writeln!(f, "    BAD {}: {}", bad.what, bad.reason)?;
            }
        }
        write!(f, "{} bad entries in total", self.bad_count())
    }
}

/// Scans `root` (an ImageNet-style root with `train/` and/or `val/`, or a plain folder
/// dataset of class sub-folders), decodes every image on all cores, and reports classes,
/// counts and every bad file. Only a missing or unreadable root is an error.
pub fn check_dataset(root: impl AsRef<Path>, max_pixels: u64) -> Result<CheckReport> {
    let root = root.as_ref();
    if !root.is_dir() {
        return Err(DataError::Missing {
            what: "dataset folder".into(),
            path: root.to_path_buf(),
        });
    }
    let opts = ScanOptions {
        policy: SkipPolicy::Skip,
        max_pixels,
    };
    let mut splits = Vec::new();
    let imagenet = root.join("train").is_dir() || root.join("val").is_dir();
    if imagenet {
        if root.join("train").is_dir() {
            let scanned = ImageNet::train(root, &opts);
            splits.push(split_report(
                "train",
                &root.join("train"),
                scanned,
                max_pixels,
            ));
        }
        if root.join("val").is_dir() {
            let scanned = ImageNet::val(root, &opts);
            splits.push(split_report("val", &root.join("val"), scanned, max_pixels));
        }
    } else {
        let scanned = FolderDataset::scan(root, &opts);
        splits.push(split_report(".", root, scanned, max_pixels));
    }
    Ok(CheckReport {
        root: root.to_path_buf(),
        splits,
    })
}

fn split_report(
    name: &str,
    path: &Path,
    scanned: Result<(FolderDataset, ScanReport)>,
    max_pixels: u64,
) -> SplitReport {
    match scanned {
        Err(error) => SplitReport {
            name: name.into(),
            path: path.to_path_buf(),
            classes: vec![],
            counts: vec![],
            bad: vec![Skipped {
                what: path.display().to_string(),
                reason: error.to_string(),
            }],
            ignored_files: 0,
        },
        Ok((dataset, report)) => {
            let mut bad = report.skipped;
            let decode_errors: Vec<Skipped> = dataset
                .samples()
                .par_iter()
                .filter_map(|(file, _)| {
                    read_image(file, 3, max_pixels).err().map(|e| Skipped {
                        what: file.display().to_string(),
                        reason: e.to_string(),
                    })
                })
                .collect();
            bad.extend(decode_errors);
            SplitReport {
                name: name.into(),
                path: path.to_path_buf(),
                classes: dataset.classes().to_vec(),
                counts: dataset.class_counts(),
                bad,
                ignored_files: report.ignored_files,
            }
        }
    }
}
