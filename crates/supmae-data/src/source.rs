//! The dataset abstraction the loader reads from.

use crate::crop::CropBox;
use crate::decode::Image8;
use crate::error::Result;

/// A labelled image dataset: folder trees, ImageNet layouts or in-memory Fashion-MNIST.
pub trait ImageSource: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class index of sample `index`.
    fn label(&self, index: usize) -> usize;

    /// Loads sample `index` as an 8-bit image with `channels` (1 or 3) channels where the
    /// source can convert (greyscale in-memory sources return 1 channel and the transform
    /// replicates it).
    fn load(&self, index: usize, channels: u8) -> Result<Image8>;

    /// [`load`](Self::load) for a transform that uses only part of the image (a
    /// `RandomResizedCrop`): `pick` gets the image's width and height and returns the box it
    /// will use (`None`: all of it). Returns the pixels and that box in their coordinates. A
    /// source may decode only the box and a margin around it: [`crate::FolderDataset`] does
    /// for JPEG files, with the same pixels there as a full decode. By default the whole
    /// image is loaded.
    fn load_part(
        &self,
        index: usize,
        channels: u8,
        pick: &mut dyn FnMut(u32, u32) -> Result<Option<CropBox>>,
    ) -> Result<(Image8, Option<CropBox>)> {
        let image = self.load(index, channels)?;
        let picked = crate::crop::pick_box(pick, image.width, image.height)?;
        Ok((image, picked))
    }

    /// A human-readable name of sample `index` (a file path, or `fashion-mnist train #12`).
    fn describe(&self, index: usize) -> String;

    /// Class names; index `i` is class `i`.
    fn classes(&self) -> &[String];

    /// Channels of the stored images (1 for greyscale datasets, 3 otherwise).
    fn native_channels(&self) -> u8 {
        3
    }
}

/// Any of the datasets this crate reads, behind one type (for code that picks the dataset at
/// run time).
#[derive(Debug, Clone)]
pub enum AnySource {
    /// A folder tree or an ImageNet split.
    Folder(crate::FolderDataset),
    /// Fashion-MNIST in memory.
    FashionMnist(crate::FashionMnist),
}

impl ImageSource for AnySource {
    fn len(&self) -> usize {
        match self {
            Self::Folder(d) => d.len(),
            Self::FashionMnist(d) => d.len(),
        }
    }

    fn label(&self, index: usize) -> usize {
        match self {
            Self::Folder(d) => d.label(index),
            Self::FashionMnist(d) => d.label(index),
        }
    }

    fn load(&self, index: usize, channels: u8) -> Result<Image8> {
        match self {
            Self::Folder(d) => d.load(index, channels),
            Self::FashionMnist(d) => d.load(index, channels),
        }
    }

    fn load_part(
        &self,
        index: usize,
        channels: u8,
        pick: &mut dyn FnMut(u32, u32) -> Result<Option<CropBox>>,
    ) -> Result<(Image8, Option<CropBox>)> {
        match self {
            Self::Folder(d) => d.load_part(index, channels, pick),
            Self::FashionMnist(d) => d.load_part(index, channels, pick),
        }
    }

    fn describe(&self, index: usize) -> String {
        match self {
            Self::Folder(d) => d.describe(index),
            Self::FashionMnist(d) => d.describe(index),
        }
    }

    fn classes(&self) -> &[String] {
        match self {
            Self::Folder(d) => d.classes(),
            Self::FashionMnist(d) => d.classes(),
        }
    }

    fn native_channels(&self) -> u8 {
        match self {
            Self::Folder(d) => d.native_channels(),
            Self::FashionMnist(d) => d.native_channels(),
        }
    }
}
