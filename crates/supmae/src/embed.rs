//! Embeddings and classification of images from any checkpoint, in a few lines.
//!
//! ```no_run
//! use supmae::Embedder;
//! use supmae::burn::backend::Flex;
//!
//! let embedder = Embedder::<Flex>::load("runs/finetune", &Default::default())?;
//! let features = embedder.embed_paths(&["cat.jpg", "dog.png"])?; // Vec<Vec<f32>>
//! for top in embedder.classify_paths(&["cat.jpg"], 5)? {
//!     for p in top {
//!         println!("{:>6.2}%  {}", 100.0 * p.probability, p.label);
//!     }
//! }
//! # Ok::<(), supmae::EmbedError>(())
//! ```
//!
//! Preprocessing is the checkpoint's evaluation transform: for 224 px models, bicubic resize
//! of the shorter side to 256 then a 224 centre crop, ImageNet mean/std; for the
//! Fashion-MNIST models, a resize to 28x28 greyscale with Fashion-MNIST's mean/std. No
//! patches are masked. Embeddings are the pooled feature that feeds the classifier: the
//! global average of the patch tokens through `fc_norm` (global-pool classifiers), the cls
//! token after `norm` (cls-token classifiers and linear probes), or the mean of the patch
//! tokens after the encoder's `norm` (pre-training checkpoints, the input of SupMAE's
//! classification branch).

use std::path::Path;

use burn::prelude::*;
use image::DynamicImage;
use supmae_data::fashion_mnist;
use supmae_data::{Image8, SampleRng, Transform};
use supmae_model::checkpoint::StateDict;
use supmae_model::{CheckpointInfo, Flavour, SupMae, VitClassifier, inspect};
use supmae_train::classifier::classifier_transforms;
use supmae_train::linprobe::LinearProbe;
use supmae_train::open::{Checkpoint, open};
use supmae_train::{Classifier, DataSpec, load_classifier, load_pretrained, official_classifier};

/// Why embedding or classifying failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The checkpoint could not be read or does not fit.
    #[error(transparent)]
    Checkpoint(#[from] supmae_model::CheckpointError),
    /// A native checkpoint could not be read.
    #[error(transparent)]
    Train(#[from] supmae_train::TrainError),
    /// The model rejected its input.
    #[error(transparent)]
    Model(#[from] supmae_model::ModelError),
    /// An image could not be read or decoded.
    #[error(transparent)]
    Data(#[from] supmae_data::DataError),
    /// The checkpoint has no classifier (e.g. an MAE encoder).
    #[error("{0}")]
    NoClassifier(String),
    /// The checkpoint has no decoder, so it cannot reconstruct images.
    #[error("{0}")]
    CannotReconstruct(String),
    /// The requested conversion or operation does not apply to this input.
    #[error("{0}")]
    Unsupported(String),
}

/// One predicted class.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Class index.
    pub index: usize,
    /// Class name (ImageNet names for 1000-class checkpoints, the dataset's names for ours,
    /// else `class <index>`).
    pub label: String,
    /// Softmax probability.
    pub probability: f32,
}

enum Model<B: Backend> {
    Vit(VitClassifier<B>),
    Probe(LinearProbe<B>),
    /// A pre-training encoder in cls-token form (the classifier head unused), pooled by mean.
    Encoder(VitClassifier<B>),
    Pretrain(Box<SupMae<B>>),
}

/// Loads a checkpoint once and embeds or classifies batches of images with it.
pub struct Embedder<B: Backend> {
    model: Model<B>,
    transform: Transform,
    classes: Option<Vec<String>>,
    description: String,
    device: B::Device,
    /// Images per forward pass (default 32).
    pub batch_size: usize,
}

fn imagenet_or_numbered(n: usize) -> Vec<String> {
    if n == supmae_data::IMAGENET_1K.len() {
        (0..n)
            .map(|i| {
                supmae_data::imagenet_class_name(i)
                    .unwrap_or("?")
                    .to_string()
            })
            .collect()
    } else {
        (0..n).map(|i| format!("class {i}")).collect()
    }
}

fn classes_of(data: &DataSpec, n: usize) -> Vec<String> {
    if data.is_fashion_mnist() && n == fashion_mnist::CLASSES.len() {
        fashion_mnist::CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        imagenet_or_numbered(n)
    }
}

impl<B: Backend> Embedder<B> {
    /// Loads any supported checkpoint: a `supmae finetune` / `linprobe` / `pretrain` run
    /// folder or `.ckpt`, or an official `.pth` / `.safetensors` (SupMAE or MAE
    /// pre-training, MAE encoder, fine-tuned ViT, linear probe).
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, EmbedError> {
        let path = path.as_ref();
        let (file, what) = open(path)?;
        if let Checkpoint::Classifier(_) = what {
            let (clf, meta) = load_classifier::<B>(&file, device)?;
            let (_, eval) =
                classifier_transforms(&meta.data, &meta.model, Transform::pretrain(28))?;
            let classes = if meta.classes.len() == meta.model.num_classes {
                meta.classes.clone()
            } else {
                classes_of(&meta.data, meta.model.num_classes)
            };
            let description = format!(
                "{} classifier ({} classes, {} epochs, best top-1 {})",
                match meta.kind {
                    supmae_train::ClassifierKind::Finetune => "fine-tuned",
                    supmae_train::ClassifierKind::Linprobe => "linear-probe",
                },
                meta.model.num_classes,
                meta.epochs_done,
                meta.best_acc1.map_or("n/a".into(), |a| format!("{a:.2}%"))
            );
            let model = match clf {
                Classifier::Vit(v) => Model::Vit(v),
                Classifier::Probe(p) => Model::Probe(p),
            };
            return Ok(Self::assemble(
                model,
                eval,
                Some(classes),
                description,
                device,
            ));
        }
        if let Checkpoint::Pretrain { .. } = what {
            let (model, config) = load_pretrained::<B>(&file, device)?;
            let size = config.model.img_size as u32;
            let (_, eval) = supmae_train::transforms(&config);
            let eval = Transform { size, ..eval };
            let classes = config
                .model
                .cls_head
                .as_ref()
                .map(|h| classes_of(&config.data, h.num_classes));
            let description = format!(
                "{} pre-training checkpoint ({}x{} encoder)",
                if classes.is_some() { "SupMAE" } else { "MAE" },
                config.model.embed_dim,
                config.model.depth
            );
            return Ok(Self::assemble(
                Model::Pretrain(Box::new(model)),
                eval,
                classes,
                description,
                device,
            ));
        }
        let state = StateDict::from_file(&file)?;
        let info = inspect(&state)?;
        Self::from_state(state, &info, device)
    }

    fn from_state(
        state: StateDict,
        info: &CheckpointInfo,
        device: &B::Device,
    ) -> Result<Self, EmbedError> {
        let eval = official_eval_transform(info);
        let description = info.describe();
        let (model, classes) = match &info.flavour {
            Flavour::Finetuned { .. } | Flavour::LinearProbe => {
                let (classifier, cfg) = official_classifier::<B>(&state, None, device)?;
                let classes = Some(imagenet_or_numbered(cfg.num_classes));
                match classifier {
                    Classifier::Vit(vit) => (Model::Vit(vit), classes),
                    Classifier::Probe(probe) => (Model::Probe(probe), classes),
                }
            }
            Flavour::SupMaePretrain { .. } | Flavour::MaeFull => {
                let cfg = info
                    .mae_config()
                    .ok_or_else(|| EmbedError::NoClassifier("no decoder configuration".into()))?;
                let (mae, _) = cfg.init::<B>(device)?.load_state_dict(&state)?;
                let classes = info.num_classes.map(imagenet_or_numbered);
                (Model::Pretrain(Box::new(mae)), classes)
            }
            Flavour::MaeEncoder => {
                let cfg = info.vit_config(1, false);
                let (vit, _) = cfg.init::<B>(device)?.load_pretrained_state(state)?;
                (Model::Encoder(vit), None)
            }
        };
        Ok(Self::assemble(model, eval, classes, description, device))
    }

    fn assemble(
        model: Model<B>,
        transform: Transform,
        classes: Option<Vec<String>>,
        description: String,
        device: &B::Device,
    ) -> Self {
        Self {
            model,
            transform,
            classes,
            description,
            device: device.clone(),
            batch_size: 32,
        }
    }

    /// What was loaded.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Class names, when the checkpoint classifies.
    pub fn classes(&self) -> Option<&[String]> {
        self.classes.as_deref()
    }

    /// The preprocessing applied to every image.
    pub fn transform(&self) -> &Transform {
        &self.transform
    }

    /// Embeddings of images, one `Vec<f32>` of the model width per image.
    pub fn embed(&self, images: &[DynamicImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch_size.max(1)) {
            let x = self.batch(chunk)?;
            let features = match &self.model {
                Model::Vit(v) => v.embed(x)?,
                Model::Probe(p) => p.encoder.embed(x)?,
                Model::Encoder(v) => mean_of_patch_tokens(v.forward_features(x)?),
                Model::Pretrain(m) => {
                    let enc = m.forward_encoder(x, 0.0, None)?;
                    mean_of_patch_tokens(enc.latent)
                }
            };
            out.extend(rows(features)?);
        }
        Ok(out)
    }

    /// [`embed`](Self::embed) of image files (decoded by content).
    pub fn embed_paths<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed(&read_images(paths)?)
    }

    /// The `k` most probable classes of each image, best first.
    pub fn classify(
        &self,
        images: &[DynamicImage],
        k: usize,
    ) -> Result<Vec<Vec<Prediction>>, EmbedError> {
        let Some(classes) = &self.classes else {
            return Err(EmbedError::NoClassifier(format!(
                "{}: no classification head; fine-tune it first, or embed instead",
                self.description
            )));
        };
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch_size.max(1)) {
            let x = self.batch(chunk)?;
            let logits = match &self.model {
                Model::Vit(v) => v.forward(x)?,
                Model::Probe(p) => p.forward(x, false)?,
                Model::Encoder(_) => unreachable!("no classes without a head"),
                Model::Pretrain(m) => {
                    let enc = m.forward_encoder(x, 0.0, None)?;
                    m.forward_classification(enc.latent, false)?
                        .ok_or_else(|| {
                            EmbedError::NoClassifier("MAE has no classification branch".into())
                        })?
                }
            };
            let probs = burn::tensor::activation::softmax(logits, 1);
            for row in rows(probs)? {
                let mut order: Vec<usize> = (0..row.len()).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                out.push(
                    order
                        .into_iter()
                        .take(k)
                        .map(|i| Prediction {
                            index: i,
                            label: classes
                                .get(i)
                                .cloned()
                                .unwrap_or_else(|| format!("class {i}")),
                            probability: row[i],
                        })
                        .collect(),
                );
            }
        }
        Ok(out)
    }

    /// [`classify`](Self::classify) of image files.
    pub fn classify_paths<P: AsRef<Path>>(
        &self,
        paths: &[P],
        k: usize,
    ) -> Result<Vec<Vec<Prediction>>, EmbedError> {
        self.classify(&read_images(paths)?, k)
    }

    /// Preprocesses images into one normalised batch.
    ///
    /// # Shapes
    /// - output: `[N, C, S, S]`
    pub fn batch(&self, images: &[DynamicImage]) -> Result<Tensor<B, 4>, EmbedError> {
        let t = &self.transform;
        let (c, s) = (usize::from(t.channels), t.size as usize);
        let mut data = vec![0f32; images.len() * c * s * s];
        let mut rng = SampleRng::new(0); // the eval transform draws nothing
        for (img, out) in images.iter().zip(data.chunks_mut(c * s * s)) {
            t.apply(&to_image8(img, t.channels), &mut rng, out)?;
        }
        Ok(Tensor::from_data(
            TensorData::new(data, [images.len(), c, s, s]),
            &self.device,
        ))
    }
}

/// The evaluation transform of an official checkpoint: ImageNet's (resize, centre crop,
/// mean/std) at the checkpoint's resolution.
fn official_eval_transform(info: &CheckpointInfo) -> Transform {
    let t = Transform::eval(info.img_size as u32);
    if info.in_chans == 1 { t.greyscale() } else { t }
}

fn mean_of_patch_tokens<B: Backend>(tokens: Tensor<B, 3>) -> Tensor<B, 2> {
    let [n, t, d] = tokens.dims();
    tokens.narrow(1, 1, t - 1).mean_dim(1).reshape([n, d])
}

fn rows<B: Backend>(x: Tensor<B, 2>) -> Result<Vec<Vec<f32>>, EmbedError> {
    let [_, d] = x.dims();
    let values = x
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| supmae_model::ModelError::InvalidArgument {
            name: "features",
            reason: format!("{e:?}"),
        })?;
    Ok(values.chunks(d.max(1)).map(<[f32]>::to_vec).collect())
}

/// Reads RGB images through [`supmae_data::read_image`], the hardened reader every path
/// uses (regular files only, size and pixel caps, decoding by content, truncated JPEGs
/// refused).
pub fn read_images<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<DynamicImage>, EmbedError> {
    paths
        .iter()
        .map(|p| {
            let img = supmae_data::read_image(p.as_ref(), 3, supmae_data::DEFAULT_MAX_PIXELS)?;
            let buf =
                image::RgbImage::from_raw(img.width, img.height, img.pixels).ok_or_else(|| {
                    supmae_data::DataError::InvalidConfig {
                        field: "image",
                        reason: format!("{}: inconsistent pixel buffer", p.as_ref().display()),
                    }
                })?;
            Ok(DynamicImage::ImageRgb8(buf))
        })
        .collect()
}

/// A decoded image as the pipeline's 8-bit buffer (RGB, or PIL-style luma for 1 channel).
pub(crate) fn to_image8(img: &DynamicImage, channels: u8) -> Image8 {
    if channels == 1 {
        let g = img.to_luma8();
        Image8 {
            width: g.width(),
            height: g.height(),
            channels: 1,
            pixels: g.into_raw(),
        }
    } else {
        let rgb = img.to_rgb8();
        Image8 {
            width: rgb.width(),
            height: rgb.height(),
            channels: 3,
            pixels: rgb.into_raw(),
        }
    }
}
