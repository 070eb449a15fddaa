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

#![warn(missing_docs)]

pub mod backend;
pub mod cli;
pub mod convert;
pub mod embed;
pub mod reconstruct;

pub use burn;
pub use supmae_data as data;
pub use supmae_model as model;
pub use supmae_train as train;

pub use backend::{BackendError, BackendJob, BackendKind, run_on};
pub use embed::{EmbedError, Embedder, Prediction};
pub use reconstruct::{Reconstruction, Reconstructor, grid};
