//! Datasets and the input pipeline for SupMAE.
//!
//! - [`FolderDataset`]: any `root/<class>/**/<image>` tree, in torchvision `ImageFolder`
//!   order so class indices match official checkpoints; [`ImageNet`] adds the `train/` +
//!   `val/` layouts (class folders, a wnid-per-line labels file, or Kaggle's CSV) and
//!   [`IMAGENET_1K`] maps class indices to names.
//! - [`FashionMnist`]: IDX files (gzipped or not), with a subset embedded in the crate so
//!   everything runs with no files on disk.
//! - [`decode_image`]: decoding by content (a PNG named `.JPEG`, CMYK JPEGs, greyscale,
//!   alpha, 16-bit and palette images), with a memory cap.
//! - [`Transform`]: torchvision's `RandomResizedCrop` / `Resize` + `CenterCrop` (bicubic),
//!   flip and normalisation, with the same crop-sampling algorithm; the fine-tuning recipe
//!   adds [`RandAugment`] (`rand-m9-mstd0.5-inc1`) and [`RandomErasing`] as timm defines them.
//! - [`DataLoader`]: parallel decode + augment into contiguous batches, prefetched,
//!   deterministic under a seed whatever the thread count.
//! - [`check_dataset`]: reports classes, counts and every bad file.
//!
//! Bad input never panics: every problem is a [`DataError`] naming the file, or, under
//! [`SkipPolicy::Skip`], is skipped, counted and reported.

#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod augment;
pub mod check;
mod crop;
pub mod decode;
pub mod error;
pub mod fashion_mnist;
pub mod folder;
pub mod imagenet;
#[cfg(not(target_arch = "wasm32"))]
mod jpeg;
pub mod loader;
pub mod resample;
pub mod rng;
pub mod source;
pub mod transform;

pub use augment::{AugmentOp, ErasingMode, RandAugment, RandomErasing};
pub use check::{CheckReport, check_dataset};
pub use decode::{
    DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_PIXELS, Image8, decode_image, decode_image_part,
    max_decoded_bytes, read_image, read_image_part, set_max_decoded_bytes,
};
pub use error::{DataError, Result};
pub use fashion_mnist::FashionMnist;
pub use folder::{
    FolderDataset, ImageNet, ScanOptions, ScanReport, SkipPolicy, Skipped, ValLayout,
};
pub use imagenet::{
    IMAGENET_1K, IMAGENET_A_WNIDS, IMAGENET_R_WNIDS, imagenet_class_index, imagenet_class_name,
    imagenet_wnids,
};
pub use loader::{DataLoader, Epoch, HostBatch, LoaderConfig, Shard};
pub use rng::SampleRng;
pub use source::{AnySource, ImageSource};
pub use transform::{CropBox, Geometry, Transform};

/// ImageNet per-channel mean (RGB), as used by the official recipes.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];

/// ImageNet per-channel standard deviation (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The normalisation of greyscale images under ImageNet statistics: the mean of
/// [`IMAGENET_MEAN`] and of [`IMAGENET_STD`], as used for 1-channel models here.
pub const IMAGENET_GREY_MEAN: f32 = 0.449;

/// See [`IMAGENET_GREY_MEAN`].
pub const IMAGENET_GREY_STD: f32 = 0.226;
