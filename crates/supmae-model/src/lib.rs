//! SupMAE, MAE and ViT models for [Burn](https://burn.dev), numerically matching the official
//! PyTorch code.
//!
//! SupMAE ("Supervised Masked Autoencoders Are Efficient Vision Learners", Liang, Li and
//! Marculescu, [arXiv 2205.14540](https://arxiv.org/abs/2205.14540)) is MAE plus a supervised
//! branch: a ViT encoder sees only the visible 25% of the patches, a light decoder
//! reconstructs the removed ones (normalised-pixel MSE), and a classification head on the mean
//! of the visible tokens adds a cross-entropy loss on the labels.
//!
//! Everything is generic over a Burn [`Backend`](burn::tensor::backend::Backend):
//!
//! - [`MaeConfig`] / [`SupMae`]: the pre-training model (MAE when `cls_head` is `None`), with
//!   the forward pass split into [`SupMae::forward_encoder`], [`SupMae::forward_decoder`],
//!   [`SupMae::forward_loss`] and [`SupMae::forward_classification`].
//! - [`VitConfig`] / [`VitClassifier`]: the fine-tuning and inference classifier.
//! - [`checkpoint`]: loading official PyTorch state dicts, with exact key checks.
//!
//! Module and parameter names mirror the official checkpoints (`blocks.3.attn.qkv.weight`,
//! `decoder_pred.bias`, …), see [`checkpoint`] for the three mapping rules.

#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod block;
pub mod checkpoint;
pub mod cls_head;
pub mod config;
pub mod error;
pub mod inspect;
pub mod kernels;
pub mod mae;
pub mod masking;
pub mod norm;
pub mod patch;
pub mod pos_embed;
pub mod seeding;
pub mod vit;

pub use checkpoint::{KeyPattern, KeyPolicy, LoadReport, StateDict};
pub use cls_head::ClsHead;
pub use config::{ClsHeadConfig, MAE_PRESETS, MaeConfig, ParamCount, VIT_PRESETS, VitConfig};
pub use error::{CheckpointError, ModelError, Result};
pub use inspect::{CheckpointInfo, Flavour, inspect};
pub use mae::{EncoderOutput, SupMae, SupMaeInput, SupMaeOutput};
pub use masking::Masking;
pub use patch::{patchify, unpatchify};
pub use vit::VitClassifier;

/// Plain MAE is the same model without the classification branch.
pub type Mae<B> = SupMae<B>;
