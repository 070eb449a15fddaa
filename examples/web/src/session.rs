//! What the page does, on any Burn backend: reconstruct, classify, and pre-train live.
//!
//! Nothing here reads a tensor synchronously, and nothing sorts on the device: a browser's
//! WebGPU can do neither (Burn 0.21's GPU argsort falls back to a synchronous read, which
//! panics in wasm). Masks are made on the host ([`host_masking`]), labels are checked on
//! the host ([`SupMaeInput::with_label_values`]), and results come back through
//! `into_data_async().await`.

use std::path::Path;

use burn::backend::Flex;
use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use supmae::Reconstruction;
use supmae::image::{DynamicImage, GrayImage};
use supmae_data::{FashionMnist, ImageSource, SampleRng, Transform};
use supmae_model::masking::host_masking;
use supmae_model::{SupMae, SupMaeInput};
use supmae_train::PretrainConfig;

/// The page's errors, as text for JavaScript.
pub type Result<T> = std::result::Result<T, String>;

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Pre-training steps on the page: the recipe's model, AdamW (0.9, 0.95), weight decay 0.05,
/// learning rate 1e-3 after a 5-step linear warm-up, mask ratio 0.75, the recipe's train
/// transform (random flips) and its classification loss.
struct Trainer<B: AutodiffBackend> {
    model: SupMae<B>,
    optim: OptimizerAdaptor<AdamW, SupMae<B>, B>,
    step: usize,
    seed: u64,
}

/// One class guess.
pub struct Guess {
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub probability: f32,
}

/// A loaded model, the embedded data and, once "train" was pressed, a model in training.
pub struct Session<B: AutodiffBackend> {
    device: B::Device,
    config: PretrainConfig,
    loaded: SupMae<B::InnerBackend>,
    described: String,
    trainer: Option<Trainer<B>>,
    train: FashionMnist,
    test: FashionMnist,
}

/// The learning rate of step `step` (0-based).
fn learning_rate(step: usize) -> f64 {
    1e-3 * ((step + 1) as f64 / 5.0).min(1.0)
}

impl<B: AutodiffBackend> Session<B> {
    /// Loads a `supmae pretrain` checkpoint and the Fashion-MNIST files (gzipped idx).
    pub fn new(
        device: B::Device,
        checkpoint: &[u8],
        name: &str,
        train: [&[u8]; 2],
        test: [&[u8]; 2],
    ) -> Result<Self> {
        let data = |files: [&[u8]; 2], split: &str| {
            FashionMnist::from_bytes(
                files[0],
                files[1],
                Path::new(&format!("{split}-images-idx3-ubyte.gz")),
                Path::new(&format!("{split}-labels-idx1-ubyte.gz")),
                format!("fashion-mnist {split}"),
            )
            .map_err(text)
        };
        let (train, test) = (data(train, "train")?, data(test, "t10k")?);
        let (loaded, config, described) = load::<B>(checkpoint, name, &device)?;
        Ok(Self {
            device,
            config,
            loaded,
            described,
            trainer: None,
            train,
            test,
        })
    }

    /// Replaces the model by another checkpoint (a visitor's `checkpoint.ckpt`); training
    /// stops. A file that does not fit the page's data (28 px greyscale) is refused.
    pub fn load_checkpoint(&mut self, bytes: &[u8], name: &str) -> Result<String> {
        let (model, config, described) = load::<B>(bytes, name, &self.device)?;
        let c = &config.model;
        if c.img_size != 28 || c.in_chans != 1 {
            return Err(format!(
                "{name}: a {} px, {}-channel model; this page's images are 28 px greyscale \
                 Fashion-MNIST (a checkpoint of `supmae pretrain` on its default data fits)",
                c.img_size, c.in_chans
            ));
        }
        self.loaded = model;
        self.config = config;
        self.described = described.clone();
        self.trainer = None;
        Ok(described)
    }

    /// What is loaded.
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Validation images: count, 28×28 pixels, class name.
    pub fn test_images(&self) -> &FashionMnist {
        &self.test
    }

    /// Training steps taken since "train" was pressed (0 when showing the loaded model).
    pub fn steps(&self) -> usize {
        self.trainer.as_ref().map_or(0, |t| t.step)
    }

    /// The model on show: the one in training, else the loaded one.
    fn current(&self) -> SupMae<B::InnerBackend> {
        match &self.trainer {
            Some(t) => t.model.valid(),
            None => self.loaded.clone(),
        }
    }

    fn reconstructor(&self) -> supmae::Reconstructor<B::InnerBackend> {
        supmae::Reconstructor::from_pretrained(self.current(), &self.config, None, &self.device)
    }

    /// The four pictures and errors of `supmae reconstruct` for one 28×28 greyscale image.
    pub async fn reconstruct(
        &self,
        pixels: &[u8],
        mask_ratio: f64,
        seed: u64,
    ) -> Result<Reconstruction> {
        let image = gray(pixels)?;
        let mut rows = self
            .reconstructor()
            .reconstruct_async(&[image], mask_ratio, seed)
            .await
            .map_err(text)?;
        rows.pop()
            .ok_or_else(|| "no reconstruction came back".to_string())
    }

    /// The classification branch's `k` best classes with all patches visible, as
    /// `supmae::Embedder::classify` (and the `classify` example) computes them.
    pub async fn classify(&self, pixels: &[u8], k: usize) -> Result<Vec<Guess>> {
        let model = self.current();
        let x = batch::<B::InnerBackend>(
            self.reconstructor().transform(),
            &[gray(pixels)?],
            &self.device,
        )?;
        let latent = model.forward_encoder(x, 0.0, None).map_err(text)?.latent;
        let Some(logits) = model.forward_classification(latent, false).map_err(text)? else {
            return Err("an MAE checkpoint: no classification branch".into());
        };
        let probs = burn::tensor::activation::softmax(logits, 1)
            .into_data_async()
            .await
            .map_err(|e| format!("{e:?}"))?
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let classes = self.test.classes();
        Ok(order
            .into_iter()
            .take(k)
            .map(|i| Guess {
                label: classes
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("class {i}")),
                probability: probs[i],
            })
            .collect())
    }

    /// Starts training from random weights of the loaded model's configuration, drawn from
    /// `seed` on Flex and sent over by bytes: every backend starts from the same weights (each
    /// backend's own random generator would draw others), so WebGPU and the CPU take the
    /// same steps.
    pub fn reset_training(&mut self, seed: u64) -> Result<()> {
        let init = self
            .config
            .model
            .init_seeded::<Flex>(seed, &Default::default())
            .map_err(text)?;
        let model = to_device::<B>(init, &self.config, &self.device)?;
        let optim = AdamWConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.95)
            .with_weight_decay(0.05)
            .init::<B, SupMae<B>>();
        self.trainer = Some(Trainer {
            model,
            optim,
            step: 0,
            seed,
        });
        Ok(())
    }

    /// Goes back to the loaded model.
    pub fn stop_training(&mut self) {
        self.trainer = None;
    }

    /// Runs `steps` training steps of `batch` images (starting from random weights if none
    /// ran yet) and returns each step's loss, read back once at the end.
    pub async fn train(&mut self, steps: usize, batch: usize) -> Result<Vec<f32>> {
        if self.trainer.is_none() {
            self.reset_training(0)?;
        }
        let (transform, _) = supmae_train::transforms(&self.config);
        let l = self.config.model.num_patches();
        let Some(t) = self.trainer.as_mut() else {
            return Err("no model in training".into());
        };
        let mut losses = Vec::with_capacity(steps);
        for _ in 0..steps {
            let mut rng = SampleRng::for_sample(t.seed, 0, t.step as u64);
            let picks: Vec<usize> = (0..batch)
                .map(|_| (rng.next_u64() % self.train.len() as u64) as usize)
                .collect();
            let mut data = vec![0f32; batch * 28 * 28];
            for (j, (&i, out)) in picks.iter().zip(data.chunks_mut(28 * 28)).enumerate() {
                let image = self.train.load(i, 1).map_err(text)?;
                let mut sample_rng = SampleRng::for_sample(t.seed, t.step as u64 + 1, j as u64);
                transform
                    .apply(&image, &mut sample_rng, out)
                    .map_err(text)?;
            }
            let labels: Vec<i64> = picks.iter().map(|&i| self.train.label(i) as i64).collect();
            let noise: Vec<f32> = (0..batch * l).map(|_| rng.uniform() as f32).collect();
            let masking = host_masking::<B>(&noise, batch, l, 0.75, &self.device).map_err(text)?;
            let x =
                Tensor::<B, 4>::from_data(TensorData::new(data, [batch, 1, 28, 28]), &self.device);
            let out = t
                .model
                .forward(
                    SupMaeInput::new(x)
                        .with_masking(masking)
                        .with_label_values(labels),
                )
                .map_err(text)?;
            losses.push(out.loss.clone().inner());
            let grads = GradientsParams::from_grads(out.loss.backward(), &t.model);
            t.model = t.optim.step(learning_rate(t.step), t.model.clone(), grads);
            t.step += 1;
        }
        if losses.is_empty() {
            return Ok(Vec::new());
        }
        Tensor::cat(losses, 0)
            .into_data_async()
            .await
            .map_err(|e| format!("{e:?}"))?
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))
    }
}

/// Loads a checkpoint's model (for inference) and recipe.
///
/// The file is read and checked on Flex: the loader's checks re-record the model to compare
/// sizes, a synchronous read that WebGPU cannot do. The checked model's record then goes to
/// `B`'s device by bytes, which reads nothing back there.
fn load<B: AutodiffBackend>(
    bytes: &[u8],
    name: &str,
    device: &B::Device,
) -> Result<(SupMae<B::InnerBackend>, PretrainConfig, String)> {
    let (checked, config) =
        supmae_train::load_pretrained_bytes::<Flex>(bytes, name, &Default::default())
            .map_err(text)?;
    let model = to_device::<B::InnerBackend>(checked, &config, device)?;
    let described = supmae::Reconstructor::from_pretrained(model.clone(), &config, None, device)
        .describe()
        .to_string();
    Ok((model, config, described))
}

/// A model on Flex moved to backend `B` through its record's bytes (no read on `B`).
fn to_device<B: Backend>(
    model: SupMae<Flex>,
    config: &PretrainConfig,
    device: &B::Device,
) -> Result<SupMae<B>> {
    type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;
    let record = Recorder::<Flex>::record(&Rec::new(), model.into_record(), ()).map_err(text)?;
    let record = Recorder::<B>::load(&Rec::new(), record, device).map_err(text)?;
    Ok(config
        .model
        .init::<B>(device)
        .map_err(text)?
        .load_record(record))
}

/// 28×28 greyscale pixels as an image.
fn gray(pixels: &[u8]) -> Result<DynamicImage> {
    GrayImage::from_raw(28, 28, pixels.to_vec())
        .map(DynamicImage::ImageLuma8)
        .ok_or_else(|| format!("{} pixels, not 28 x 28", pixels.len()))
}

/// Images through the evaluation transform, as one batch.
///
/// # Shapes
/// - output: `[N, C, S, S]`
fn batch<B: Backend>(
    t: &Transform,
    images: &[DynamicImage],
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let (c, s) = (usize::from(t.channels), t.size as usize);
    let mut data = vec![0f32; images.len() * c * s * s];
    let mut rng = SampleRng::new(0); // the eval transform draws nothing
    for (img, out) in images.iter().zip(data.chunks_mut(c * s * s)) {
        let luma = img.to_luma8();
        let image = supmae_data::decode::Image8 {
            width: luma.width(),
            height: luma.height(),
            channels: 1,
            pixels: luma.into_raw(),
        };
        t.apply(&image, &mut rng, out).map_err(text)?;
    }
    Ok(Tensor::from_data(
        TensorData::new(data, [images.len(), c, s, s]),
        device,
    ))
}
