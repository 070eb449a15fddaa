//! # supmae
//!
//! Supervised masked autoencoders (SupMAE, [arXiv 2205.14540](https://arxiv.org/abs/2205.14540)),
//! MAE and ViT classifiers in pure Rust on [Burn](https://burn.dev), numerically matching the
//! official PyTorch code.
//!
//! This facade re-exports the workspace crates and owns the backend features:
//!
//! | feature | backend |
//! | --- | --- |
//! | `flex` (default) | pure-Rust CPU (SIMD, multi-threaded) |
//! | `avx512` (default) | the CPU backend's AVX-512 GEMM and row loops where the CPU has them (chosen at run time; without it, AVX2 at most) |
//! | `wgpu` | GPU through wgpu (Vulkan, Metal, DX12, WebGPU) |
//! | `vulkan` | wgpu compiled to SPIR-V for Vulkan |
//! | `cuda` | NVIDIA CUDA |
//!
//! ## Quick start
//!
//! ```
//! use supmae::burn::backend::{Autodiff, Flex};
//! use supmae::burn::prelude::*;
//! use supmae::model::{ClsHeadConfig, MaeConfig, SupMaeInput};
//!
//! # fn main() -> Result<(), supmae::model::ModelError> {
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! // A tiny SupMAE: 32 px images, 8 px patches, 10 classes.
//! let config = MaeConfig::new()
//!     .with_img_size(32)
//!     .with_patch_size(8)
//!     .with_embed_dim(64)
//!     .with_depth(2)
//!     .with_num_heads(4)
//!     .with_decoder_embed_dim(32)
//!     .with_decoder_depth(1)
//!     .with_decoder_num_heads(4)
//!     .with_cls_head(Some(ClsHeadConfig::new().with_num_classes(10).with_hidden(128)));
//! let model = config.init::<B>(&device)?;
//! let images = Tensor::<B, 4>::zeros([4, 3, 32, 32], &device);
//! let labels = Tensor::<B, 1, Int>::from_ints([0, 1, 2, 3], &device);
//! let out = model.forward(SupMaeInput::new(images).with_labels(labels))?;
//! assert_eq!(out.pred.dims(), [4, 16, 8 * 8 * 3]);
//! let _grads = out.loss.backward();
//! # Ok(())
//! # }
//! ```
//!
//! ## Embeddings and classes of images
//!
//! [`Embedder`] loads any checkpoint (a `supmae finetune` / `linprobe` / `pretrain` run, or
//! an official SupMAE / MAE `.pth` or `.safetensors` of any flavour) on any compiled backend,
//! applies the checkpoint's evaluation preprocessing, and returns pooled features or top-k
//! classes. No patches are masked.
//!
//! ```
//! use supmae::Embedder;
//! use supmae::burn::backend::Flex;
//!
//! # fn main() -> Result<(), supmae::EmbedError> {
//! # let checkpoint = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/parity/fixtures/tiny/vit_tiny_gp.pth");
//! let embedder = Embedder::<Flex>::load(checkpoint, &Default::default())?;
//! println!("{}", embedder.describe()); // flavour, shape, what it can do
//! let images = vec![supmae::image::DynamicImage::new_rgb8(64, 48)]; // or embed_paths(&[...])
//! let features = embedder.embed(&images)?; // one Vec<f32> per image
//! let top5 = embedder.classify(&images, 5)?; // best first, with class names
//! assert_eq!((features[0].len(), top5[0].len()), (64, 5));
//! # Ok(())
//! # }
//! ```
//!
//! [`Reconstructor`] draws MAE's reconstruction pictures from a checkpoint with a decoder;
//! [`train`] holds the learners (pre-training, fine-tuning, linear probing) on one
//! [`train::Engine`], [`train::open`] tells what a checkpoint file or run folder is, and
//! [`convert()`] writes a checkpoint with the official key names.
//!
//! ## What this crate shows
//!
//! This facade is the public face: each item by one path, about sixty in all. [`model`],
//! [`train`] and [`data`] re-export what an application needs from the workspace crates
//! `supmae-model`, `supmae-train` and `supmae-data`; the building blocks behind them (the
//! ViT's layers, the checkpoint readers, the fused CPU kernels, the input pipeline's
//! stages) stay in those crates, documented there, for the few who build on them.

#![warn(missing_docs)]

mod backend;
mod convert;
mod embed;
mod reconstruct;

pub use burn;
pub use image;

pub use backend::{BackendError, BackendJob, BackendKind, run_on};
pub use convert::convert;
pub use embed::{EmbedError, Embedder, Prediction, read_images};
pub use reconstruct::{Reconstruction, Reconstructor, grid};

/// The models: SupMAE / MAE for pre-training and the ViT classifier, their configurations and
/// errors (from `supmae-model`).
pub mod model {
    pub use supmae_model::masking::len_keep;
    pub use supmae_model::{
        CheckpointError, ClsHeadConfig, EncoderOutput, Flavour, MaeConfig, ModelError, SupMae,
        SupMaeInput, SupMaeOutput, VitClassifier, VitConfig,
    };
}

/// The learners on one epoch engine, run folders, checkpoints and evaluation (from
/// `supmae-train`).
pub mod train {
    pub use supmae_train::engine::{Engine, Task};
    pub use supmae_train::open::{Checkpoint, open};
    pub use supmae_train::robustness::{RobustnessReport, evaluate_robustness};
    pub use supmae_train::run_dir::{NewRun, Overwrite};
    pub use supmae_train::{
        Classifier, DataSpec, EvalReport, FinetuneConfig, Finetuner, Init, LinearProber,
        LinprobeConfig, PretrainConfig, Pretrainer, ProgressMode, TrainError, load_classifier,
        load_data, load_pretrained,
    };
}

/// Datasets and checks: ImageNet-style folders, Fashion-MNIST (from `supmae-data`).
pub mod data {
    pub use supmae_data::fashion_mnist::Split;
    pub use supmae_data::{
        CheckReport, DEFAULT_MAX_PIXELS, DataError, FashionMnist, FolderDataset, ImageSource,
        check_dataset,
    };
}
