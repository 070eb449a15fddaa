//! Fashion-MNIST (Xiao, Rasul, Vollgraf 2017; MIT licence, Zalando SE): 28×28 greyscale
//! photos of clothing in 10 classes, in IDX files, gzipped or not.
//!
//! A subset ships inside the crate ([`FashionMnist::embedded`]: the first 10,000 training and
//! 2,000 test images, ~5 MB) so examples and tests run with no files on disk; the full set
//! loads from a folder or from Debian's `dataset-fashion-mnist` package path.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::decode::Image8;
use crate::error::{DataError, Result, io};
use crate::source::ImageSource;

/// Where Debian's `dataset-fashion-mnist` package installs the files.
pub const DEBIAN_PATH: &str = "/usr/share/datasets/fashion-mnist";

/// The class names, index order.
pub const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Pixel mean of the training set on `[0, 1]` pixels.
pub const MEAN: f32 = 0.2860;
/// Pixel standard deviation of the training set.
pub const STD: f32 = 0.3530;

const EMBEDDED_TRAIN_IMAGES: &[u8] =
    include_bytes!("../assets/fashion-mnist/train-images-idx3-ubyte.gz");
const EMBEDDED_TRAIN_LABELS: &[u8] =
    include_bytes!("../assets/fashion-mnist/train-labels-idx1-ubyte.gz");
const EMBEDDED_TEST_IMAGES: &[u8] =
    include_bytes!("../assets/fashion-mnist/t10k-images-idx3-ubyte.gz");
const EMBEDDED_TEST_LABELS: &[u8] =
    include_bytes!("../assets/fashion-mnist/t10k-labels-idx1-ubyte.gz");

/// Which half of the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training images (`train-*`).
    Train,
    /// The test images (`t10k-*`), used as validation.
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "t10k",
        }
    }
}

/// Fashion-MNIST images held in memory.
#[derive(Debug, Clone)]
pub struct FashionMnist {
    images: Vec<u8>,
    labels: Vec<u8>,
    name: String,
    classes: Vec<String>,
}

/// Bytes of a file, un-gzipped when they start with the gzip magic.
fn maybe_gunzip(bytes: &[u8], name: &Path) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| DataError::Idx {
                path: name.to_path_buf(),
                message: format!("corrupt gzip data: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

/// Parses an IDX file: checks the magic (`0x0000 08 ndim`) and the declared sizes, returns
/// the dimensions and the payload.
fn parse_idx(bytes: &[u8], name: &Path, ndim: u8) -> Result<(Vec<usize>, Vec<u8>)> {
    let err = |message: String| DataError::Idx {
        path: name.to_path_buf(),
        message,
    };
    let header = 4 + 4 * usize::from(ndim);
    if bytes.len() < header {
        return Err(err(format!(
            "{} bytes is shorter than the header",
            bytes.len()
        )));
    }
    if bytes[..2] != [0, 0] || bytes[2] != 0x08 || bytes[3] != ndim {
        return Err(err(format!(
            "bad magic {:02x?} (expected unsigned-byte data with {ndim} dimensions)",
            &bytes[..4]
        )));
    }
    let dims: Vec<usize> = (0..usize::from(ndim))
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let len: usize = dims.iter().product();
    let payload = &bytes[header..];
    if payload.len() != len {
        return Err(err(format!(
            "header declares {dims:?} = {len} bytes but the file holds {}",
            payload.len()
        )));
    }
    Ok((dims, payload.to_vec()))
}

impl FashionMnist {
    /// Parses the images and labels files held in memory, gzipped or not (files a browser
    /// page fetched, say); the names stand for the files in errors.
    pub fn from_bytes(
        images: &[u8],
        labels: &[u8],
        image_name: &Path,
        label_name: &Path,
        name: String,
    ) -> Result<Self> {
        let (dims, images) = parse_idx(&maybe_gunzip(images, image_name)?, image_name, 3)?;
        let (ldims, labels) = parse_idx(&maybe_gunzip(labels, label_name)?, label_name, 1)?;
        if dims[1..] != [28, 28] {
            return Err(DataError::Idx {
                path: image_name.to_path_buf(),
                message: format!("images are {}x{}, expected 28x28", dims[1], dims[2]),
            });
        }
        if dims[0] != ldims[0] {
            return Err(DataError::Labels {
                path: label_name.to_path_buf(),
                message: format!("{} labels for {} images", ldims[0], dims[0]),
            });
        }
        if let Some(i) = labels.iter().position(|&l| l >= 10) {
            return Err(DataError::Labels {
                path: label_name.to_path_buf(),
                message: format!("label {} of sample {i} is not a class (0..10)", labels[i]),
            });
        }
        Ok(Self {
            images,
            labels,
            name,
            classes: CLASSES.iter().map(|c| c.to_string()).collect(),
        })
    }

    /// The subset compiled into the crate: the first 10,000 training or 2,000 test images.
    pub fn embedded(split: Split) -> Result<Self> {
        let (images, labels) = match split {
            Split::Train => (EMBEDDED_TRAIN_IMAGES, EMBEDDED_TRAIN_LABELS),
            Split::Test => (EMBEDDED_TEST_IMAGES, EMBEDDED_TEST_LABELS),
        };
        let p = split.prefix();
        Self::from_bytes(
            images,
            labels,
            Path::new(&format!("<embedded>/{p}-images-idx3-ubyte.gz")),
            Path::new(&format!("<embedded>/{p}-labels-idx1-ubyte.gz")),
            format!("fashion-mnist (embedded) {p}"),
        )
    }

    /// Loads `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` from `dir`.
    pub fn from_dir(dir: impl AsRef<Path>, split: Split) -> Result<Self> {
        let dir = dir.as_ref();
        let find = |stem: String| -> Result<PathBuf> {
            [format!("{stem}.gz"), stem.clone()]
                .into_iter()
                .map(|n| dir.join(n))
                .find(|p| p.is_file())
                .ok_or_else(|| DataError::Missing {
                    what: format!("Fashion-MNIST file {stem}[.gz]"),
                    path: dir.to_path_buf(),
                })
        };
        let p = split.prefix();
        let image_path = find(format!("{p}-images-idx3-ubyte"))?;
        let label_path = find(format!("{p}-labels-idx1-ubyte"))?;
        let images = std::fs::read(&image_path).map_err(io(&image_path))?;
        let labels = std::fs::read(&label_path).map_err(io(&label_path))?;
        Self::from_bytes(
            &images,
            &labels,
            &image_path,
            &label_path,
            format!("fashion-mnist {p} ({})", dir.display()),
        )
    }

    /// The full dataset from Debian's package (`apt-get install dataset-fashion-mnist`).
    pub fn debian(split: Split) -> Result<Self> {
        Self::from_dir(DEBIAN_PATH, split)
    }

    /// The raw 28×28 pixels of sample `index`.
    pub fn pixels(&self, index: usize) -> &[u8] {
        &self.images[index * 784..(index + 1) * 784]
    }

    /// All labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Writes the first `n` samples (all when `None`) as uncompressed IDX files
    /// `{train,t10k}-{images-idx3,labels-idx1}-ubyte` into `dir`, e.g. to make a small
    /// dataset for a quick run or a test.
    pub fn write_idx(&self, dir: impl AsRef<Path>, split: Split, n: Option<usize>) -> Result<()> {
        let dir = dir.as_ref();
        let n = n.unwrap_or(self.labels.len()).min(self.labels.len());
        let mut images = vec![0, 0, 8, 3];
        for v in [n as u32, 28, 28] {
            images.extend_from_slice(&v.to_be_bytes());
        }
        images.extend_from_slice(&self.images[..n * 784]);
        let mut labels = vec![0, 0, 8, 1];
        labels.extend_from_slice(&(n as u32).to_be_bytes());
        labels.extend_from_slice(&self.labels[..n]);
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let p = split.prefix();
        let image_path = dir.join(format!("{p}-images-idx3-ubyte"));
        std::fs::write(&image_path, images).map_err(io(&image_path))?;
        let label_path = dir.join(format!("{p}-labels-idx1-ubyte"));
        std::fs::write(&label_path, labels).map_err(io(&label_path))
    }
}

impl ImageSource for FashionMnist {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn label(&self, index: usize) -> usize {
        usize::from(self.labels[index])
    }

    fn load(&self, index: usize, _channels: u8) -> Result<Image8> {
        Ok(Image8 {
            width: 28,
            height: 28,
            channels: 1,
            pixels: self.pixels(index).to_vec(),
        })
    }

    fn describe(&self, index: usize) -> String {
        format!("{} #{index}", self.name)
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn native_channels(&self) -> u8 {
        1
    }
}
