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
//! `supmae::train` holds the learners (pre-training, fine-tuning, linear probing) and
//! `supmae::convert` the conversion to official key names.

#![warn(missing_docs)]

pub mod backend;
pub mod bench;
pub mod convert;
pub mod embed;
pub mod reconstruct;

pub use burn;
pub use image;
pub use supmae_data as data;
pub use supmae_model as model;
pub use supmae_train as train;

pub use backend::{BackendError, BackendJob, BackendKind, run_on};
pub use embed::{EmbedError, Embedder, Prediction};
pub use reconstruct::{Reconstruction, Reconstructor, grid};
