//! Folder datasets in torchvision `ImageFolder` order, and the ImageNet layouts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::crop::CropBox;
use crate::decode::{DEFAULT_MAX_PIXELS, Image8, read_image, read_image_part};
use crate::error::{DataError, Result, io};
use crate::imagenet::IMAGENET_1K;
use crate::source::ImageSource;

/// File extensions torchvision's `ImageFolder` accepts (compared case-insensitively).
pub const IMG_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

/// What to do with a bad file or folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SkipPolicy {
    /// Stop with a typed error naming it (the default).
    #[default]
    Fail,
    /// Skip it, count it, and report it at the end.
    Skip,
}

/// Something skipped under [`SkipPolicy::Skip`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file, folder or sample.
    pub what: String,
    /// Why.
    pub reason: String,
}

/// What a scan found besides the samples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Problems skipped under [`SkipPolicy::Skip`].
    pub skipped: Vec<Skipped>,
    /// Files ignored because their extension is not an image extension.
    pub ignored_files: usize,
}

/// Scan settings.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// What to do with bad entries.
    pub policy: SkipPolicy,
    /// Cap on decoded pixels, applied when samples are loaded.
    pub max_pixels: u64,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            policy: SkipPolicy::Fail,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl ScanOptions {
    /// The same options with `policy`.
    pub fn with_policy(mut self, policy: SkipPolicy) -> Self {
        self.policy = policy;
        self
    }

    fn handle(&self, report: &mut ScanReport, error: DataError) -> Result<()> {
        match self.policy {
            SkipPolicy::Fail => Err(error),
            SkipPolicy::Skip => {
                report.skipped.push(Skipped {
                    what: error_subject(&error),
                    reason: error.to_string(),
                });
                Ok(())
            }
        }
    }
}

fn error_subject(error: &DataError) -> String {
    match error {
        DataError::Io { path, .. }
        | DataError::Empty { path }
        | DataError::NotAFile { path }
        | DataError::FileTooLarge { path, .. }
        | DataError::NonUtf8Name { path }
        | DataError::NotAnImage { path }
        | DataError::Decode { path, .. }
        | DataError::TooLarge { path, .. }
        | DataError::TooManyBytes { path, .. }
        | DataError::Missing { path, .. }
        | DataError::NoClasses { path }
        | DataError::EmptyClass { path, .. }
        | DataError::SymlinkLoop { path, .. }
        | DataError::Labels { path, .. }
        | DataError::Idx { path, .. } => path.display().to_string(),
        DataError::InvalidConfig { field, .. } => field.to_string(),
        DataError::ResizeTooLarge { .. } => "resize".into(),
    }
}

/// A labelled list of image files.
#[derive(Debug, Clone)]
pub struct FolderDataset {
    samples: Vec<(PathBuf, usize)>,
    classes: Vec<String>,
    max_pixels: u64,
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMG_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        entries.push(entry.map_err(io(dir))?.path());
    }
    entries.sort();
    Ok(entries)
}

/// Every image file below `dir`, following symbolic links, in torchvision's order
/// (`sorted(os.walk(dir, followlinks=True))`, then sorted file names).
fn image_files(dir: &Path, opts: &ScanOptions, report: &mut ScanReport) -> Result<Vec<PathBuf>> {
    let mut by_dir: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut stack: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
    let root = std::fs::canonicalize(dir).map_err(io(dir))?;
    stack.push((dir.to_path_buf(), vec![root]));
    while let Some((current, ancestors)) = stack.pop() {
        let entries = match sorted_entries(&current) {
            Ok(e) => e,
            Err(e) => {
                opts.handle(report, e)?;
                continue;
            }
        };
        let files = by_dir.entry(current.display().to_string()).or_default();
        for path in entries {
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(source) => {
                    // A dangling symlink or an unreadable entry.
                    opts.handle(report, DataError::Io { path, source })?;
                    continue;
                }
            };
            if meta.is_dir() {
                let canon = std::fs::canonicalize(&path).map_err(io(&path))?;
                if ancestors.contains(&canon) {
                    opts.handle(
                        report,
                        DataError::SymlinkLoop {
                            path: path.clone(),
                            target: canon,
                        },
                    )?;
                    continue;
                }
                let mut next = ancestors.clone();
                next.push(canon);
                stack.push((path, next));
            } else if has_image_extension(&path) {
                if meta.is_file() {
                    files.push(path);
                } else {
                    // A FIFO or device (or a symlink to one) would hang or never end.
                    opts.handle(report, DataError::NotAFile { path })?;
                }
            } else {
                report.ignored_files += 1;
            }
        }
    }
    Ok(by_dir.into_values().flatten().collect())
}

/// Sorted names of the sub-folders of `root` (following symbolic links).
fn class_folders(root: &Path) -> Result<Vec<String>> {
    let mut classes = Vec::new();
    for path in sorted_entries(root)? {
        if path.is_dir() {
            match path.file_name().and_then(|n| n.to_str()) {
                Some(name) => classes.push(name.to_string()),
                None => return Err(DataError::NonUtf8Name { path }),
            }
        }
    }
    Ok(classes)
}

impl FolderDataset {
    /// Scans `root/<class>/**/<image>` like torchvision's `ImageFolder`: classes are the
    /// sub-folders sorted by name (class `i` is the `i`-th), files are found recursively with
    /// any case of an image extension.
    ///
    /// An empty class folder is an error, or under [`SkipPolicy::Skip`] a reported class
    /// with no samples (its index is kept, so later labels do not shift).
    pub fn scan(root: impl AsRef<Path>, opts: &ScanOptions) -> Result<(Self, ScanReport)> {
        let root = root.as_ref();
        if !root.is_dir() {
            return Err(DataError::Missing {
                what: "dataset folder".into(),
                path: root.to_path_buf(),
            });
        }
        let classes = class_folders(root)?;
        Self::scan_with_classes(root, classes, opts)
    }

    /// Like [`scan`](Self::scan) with a given class list: folder `classes[i]` is class `i`.
    /// Class names without a folder have no samples; folders not in the list are errors
    /// (or skipped).
    pub fn scan_with_classes(
        root: &Path,
        classes: Vec<String>,
        opts: &ScanOptions,
    ) -> Result<(Self, ScanReport)> {
        if classes.is_empty() {
            return Err(DataError::NoClasses {
                path: root.to_path_buf(),
            });
        }
        let mut report = ScanReport::default();
        let index: HashMap<&str, usize> = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        for folder in class_folders(root)? {
            if !index.contains_key(folder.as_str()) {
                opts.handle(
                    &mut report,
                    DataError::Labels {
                        path: root.join(&folder),
                        message: "is not one of the known classes".into(),
                    },
                )?;
            }
        }
        let mut samples = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            if !dir.is_dir() {
                continue;
            }
            let files = image_files(&dir, opts, &mut report)?;
            if files.is_empty() {
                opts.handle(
                    &mut report,
                    DataError::EmptyClass {
                        path: dir,
                        extensions: IMG_EXTENSIONS.join(", "),
                    },
                )?;
                continue;
            }
            samples.extend(files.into_iter().map(|f| (f, label)));
        }
        Ok((
            Self {
                samples,
                classes,
                max_pixels: opts.max_pixels,
            },
            report,
        ))
    }

    /// A dataset from explicit `(file, label)` pairs.
    pub fn from_samples(
        samples: Vec<(PathBuf, usize)>,
        classes: Vec<String>,
        max_pixels: u64,
    ) -> Self {
        Self {
            samples,
            classes,
            max_pixels,
        }
    }

    /// The `(file, label)` pairs.
    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.samples
    }

    /// Number of samples of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for (_, label) in &self.samples {
            counts[*label] += 1;
        }
        counts
    }
}

impl ImageSource for FolderDataset {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn label(&self, index: usize) -> usize {
        self.samples[index].1
    }

    fn load(&self, index: usize, channels: u8) -> Result<Image8> {
        read_image(&self.samples[index].0, channels, self.max_pixels)
    }

    fn load_part(
        &self,
        index: usize,
        channels: u8,
        pick: &mut dyn FnMut(u32, u32) -> Result<Option<CropBox>>,
    ) -> Result<(Image8, Option<CropBox>)> {
        read_image_part(&self.samples[index].0, channels, self.max_pixels, pick)
    }

    fn describe(&self, index: usize) -> String {
        self.samples[index].0.display().to_string()
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }
}

/// How an ImageNet validation split is labelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValLayout {
    /// `val/<wnid>/*.JPEG`, as after the usual `valprep.sh`.
    ClassFolders,
    /// A flat `val/` plus a file with one wnid per line: line `i` (from 0) labels
    /// `ILSVRC2012_val_{i+1:08}.JPEG` (TensorFlow Datasets' `validation_labels.txt`).
    LabelsFile(PathBuf),
    /// A flat `val/` plus Kaggle's `LOC_val_solution.csv` (`ImageId,PredictionString`, the
    /// prediction string starting with the wnid).
    KaggleCsv(PathBuf),
}

/// ImageNet-style roots: `root/train/<wnid>/...` and `root/val` in any of [`ValLayout`].
#[derive(Debug, Clone, Copy)]
pub struct ImageNet;

impl ImageNet {
    /// The class list used for labels under `root`: the sorted `train/` folders when present
    /// (so any folder dataset works), else the ImageNet-1k wnids.
    pub fn classes(root: &Path) -> Result<Vec<String>> {
        let train = root.join("train");
        if train.is_dir() {
            let classes = class_folders(&train)?;
            if classes.is_empty() {
                return Err(DataError::NoClasses { path: train });
            }
            return Ok(classes);
        }
        Ok(IMAGENET_1K
            .iter()
            .map(|(wnid, _)| wnid.to_string())
            .collect())
    }

    /// The training split, `root/train`.
    pub fn train(
        root: impl AsRef<Path>,
        opts: &ScanOptions,
    ) -> Result<(FolderDataset, ScanReport)> {
        let train = root.as_ref().join("train");
        if !train.is_dir() {
            return Err(DataError::Missing {
                what: "split \"train\"".into(),
                path: train,
            });
        }
        FolderDataset::scan(train, opts)
    }

    /// The validation split, `root/val`, with its layout detected: class sub-folders, else
    /// `LOC_val_solution.csv`, else `validation_labels.txt` / `val_labels.txt` in `root`.
    pub fn val(root: impl AsRef<Path>, opts: &ScanOptions) -> Result<(FolderDataset, ScanReport)> {
        let root = root.as_ref();
        let layout = Self::detect_val_layout(root)?;
        Self::val_with_layout(root, &layout, opts)
    }

    /// Finds how `root/val` is labelled.
    pub fn detect_val_layout(root: &Path) -> Result<ValLayout> {
        let val = root.join("val");
        if !val.is_dir() {
            return Err(DataError::Missing {
                what: "split \"val\"".into(),
                path: val,
            });
        }
        if !class_folders(&val)?.is_empty() {
            return Ok(ValLayout::ClassFolders);
        }
        let csv = root.join("LOC_val_solution.csv");
        if csv.is_file() {
            return Ok(ValLayout::KaggleCsv(csv));
        }
        for name in ["validation_labels.txt", "val_labels.txt"] {
            let path = root.join(name);
            if path.is_file() {
                return Ok(ValLayout::LabelsFile(path));
            }
        }
        Err(DataError::Missing {
            what: "validation labels (class sub-folders, LOC_val_solution.csv or \
                   validation_labels.txt)"
                .into(),
            path: root.to_path_buf(),
        })
    }

    /// The validation split with an explicit layout.
    pub fn val_with_layout(
        root: &Path,
        layout: &ValLayout,
        opts: &ScanOptions,
    ) -> Result<(FolderDataset, ScanReport)> {
        let classes = Self::classes(root)?;
        let val = root.join("val");
        if !val.is_dir() {
            return Err(DataError::Missing {
                what: "split \"val\"".into(),
                path: val,
            });
        }
        match layout {
            ValLayout::ClassFolders => FolderDataset::scan_with_classes(&val, classes, opts),
            ValLayout::LabelsFile(path) => {
                let text = std::fs::read_to_string(path).map_err(io(path))?;
                let wnids: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                let files: Vec<PathBuf> = (1..=wnids.len())
                    .map(|i| val.join(format!("ILSVRC2012_val_{i:08}.JPEG")))
                    .collect();
                let images = count_images(&val)?;
                if images != wnids.len() {
                    return Err(DataError::Labels {
                        path: path.clone(),
                        message: format!(
                            "has {} labels but {} holds {images} images",
                            wnids.len(),
                            val.display()
                        ),
                    });
                }
                let pairs = files.into_iter().zip(wnids.iter().map(|w| w.to_string()));
                labelled(
                    path,
                    &classes,
                    pairs.enumerate().map(|(i, p)| (i + 1, p)),
                    opts,
                )
            }
            ValLayout::KaggleCsv(path) => {
                let text = std::fs::read_to_string(path).map_err(io(path))?;
                let mut pairs = Vec::new();
                for (n, line) in text.lines().enumerate().skip(1) {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let Some((id, prediction)) = line.split_once(',') else {
                        return Err(DataError::Labels {
                            path: path.clone(),
                            message: format!("line {}: expected `ImageId,PredictionString`", n + 1),
                        });
                    };
                    let wnid = prediction
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    pairs.push((n + 1, (val.join(format!("{}.JPEG", id.trim())), wnid)));
                }
                let images = count_images(&val)?;
                if images != pairs.len() {
                    return Err(DataError::Labels {
                        path: path.clone(),
                        message: format!(
                            "has {} rows but {} holds {images} images",
                            pairs.len(),
                            val.display()
                        ),
                    });
                }
                pairs.sort_by(|a, b| a.1.0.cmp(&b.1.0));
                labelled(path, &classes, pairs.into_iter(), opts)
            }
        }
    }
}

fn count_images(dir: &Path) -> Result<usize> {
    Ok(sorted_entries(dir)?
        .iter()
        .filter(|p| p.is_file() && has_image_extension(p))
        .count())
}

fn labelled(
    labels_file: &Path,
    classes: &[String],
    pairs: impl Iterator<Item = (usize, (PathBuf, String))>,
    opts: &ScanOptions,
) -> Result<(FolderDataset, ScanReport)> {
    let index: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut report = ScanReport::default();
    let mut samples = Vec::new();
    for (line, (file, wnid)) in pairs {
        let Some(&label) = index.get(wnid.as_str()) else {
            opts.handle(
                &mut report,
                DataError::Labels {
                    path: labels_file.to_path_buf(),
                    message: format!("line {line}: unknown class `{wnid}`"),
                },
            )?;
            continue;
        };
        if !file.is_file() {
            opts.handle(
                &mut report,
                DataError::Labels {
                    path: labels_file.to_path_buf(),
                    message: format!("line {line}: {} does not exist", file.display()),
                },
            )?;
            continue;
        }
        samples.push((file, label));
    }
    Ok((
        FolderDataset {
            samples,
            classes: classes.to_vec(),
            max_pixels: opts.max_pixels,
        },
        report,
    ))
}
