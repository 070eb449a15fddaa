//! The pre-training data: sources of a `DataSpec`, the transforms, and the masking noise.

use std::path::PathBuf;

use supmae_data::fashion_mnist::{self, Split};
use supmae_data::{
    AnySource, FashionMnist, FolderDataset, Geometry, ImageNet, SampleRng, ScanOptions, Transform,
};

use crate::config::{DataSpec, PretrainConfig};
use crate::error::Result;

/// Builds the train and validation sources of a [`DataSpec`].
pub fn load_data(spec: &DataSpec) -> Result<(AnySource, Option<AnySource>)> {
    Ok(match spec {
        DataSpec::EmbeddedFashionMnist => (
            AnySource::FashionMnist(FashionMnist::embedded(Split::Train)?),
            Some(AnySource::FashionMnist(FashionMnist::embedded(
                Split::Test,
            )?)),
        ),
        DataSpec::FashionMnist { path } => {
            let dir = path
                .clone()
                .unwrap_or_else(|| PathBuf::from(fashion_mnist::DEBIAN_PATH));
            (
                AnySource::FashionMnist(FashionMnist::from_dir(&dir, Split::Train)?),
                Some(AnySource::FashionMnist(FashionMnist::from_dir(
                    &dir,
                    Split::Test,
                )?)),
            )
        }
        DataSpec::Folder { path } => {
            let opts = ScanOptions::default();
            if path.join("train").is_dir() {
                let (train, _) = ImageNet::train(path, &opts)?;
                let val = if path.join("val").is_dir() {
                    Some(AnySource::Folder(ImageNet::val(path, &opts)?.0))
                } else {
                    None
                };
                (AnySource::Folder(train), val)
            } else {
                (AnySource::Folder(FolderDataset::scan(path, &opts)?.0), None)
            }
        }
    })
}

/// The train and eval transforms for a recipe.
pub fn transforms(config: &PretrainConfig) -> (Transform, Transform) {
    let size = config.model.img_size as u32;
    let chans = config.model.in_chans as u8;
    if config.data.is_fashion_mnist() {
        let (mean, std) = (fashion_mnist::MEAN, fashion_mnist::STD);
        let (mean, std) = (vec![mean; chans.into()], vec![std; chans.into()]);
        let train = Transform {
            geometry: Geometry::Resize,
            hflip: 0.5,
            ..Transform::pretrain(size)
        }
        .with_normalization(chans, mean.clone(), std.clone());
        let eval = Transform {
            geometry: Geometry::Resize,
            hflip: 0.0,
            ..Transform::pretrain(size)
        }
        .with_normalization(chans, mean, std);
        (train, eval)
    } else {
        let (mut train, mut eval) = (Transform::pretrain(size), Transform::eval(size));
        if chans == 1 {
            train = train.greyscale();
            eval = eval.greyscale();
        }
        (train, eval)
    }
}

/// Masking noise for one step, drawn from the run's seed (not from the backend's global
/// RNG), so a resumed run draws the same masks.
pub(super) fn mask_noise(seed: u64, epoch: usize, step: usize, n: usize, l: usize) -> Vec<f32> {
    let mut rng = SampleRng::for_sample(seed ^ 0x6d61_736b, epoch as u64, step as u64);
    (0..n * l)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
        .collect()
}
