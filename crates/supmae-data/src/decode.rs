//! Decoding image files by content into 8-bit RGB or greyscale.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageError, ImageFormat, ImageReader, Limits};

pub use crate::crop::CropBox;
use crate::crop::pick_box;
use crate::error::{DataError, Result, io};

/// Default cap on decoded pixels (width × height): 100 megapixels, ~300 MB as RGB8.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Default cap on the memory one image takes to decode: its decoded samples (16-bit and
/// alpha included) plus the 8-bit copy it is converted to. 384 MB keeps one decode under
/// 512 MB of resident memory and two loader threads of a 2-core, 24 GB machine under 1 GB;
/// the largest ImageNet photo (about 32 megapixels, 95 MB as RGB8) is well inside it.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 384 << 20;

static MAX_DECODED_BYTES: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_DECODED_BYTES);

/// Sets the process-wide cap on the memory one image may take to decode (see
/// [`DEFAULT_MAX_DECODED_BYTES`]); every reader, loader thread and command uses it.
pub fn set_max_decoded_bytes(bytes: u64) {
    MAX_DECODED_BYTES.store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// The cap set by [`set_max_decoded_bytes`].
pub fn max_decoded_bytes() -> u64 {
    MAX_DECODED_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Which JPEG decoder this build uses: `"libjpeg-turbo"` (libjpeg-turbo's decoder code as
/// mozjpeg carries it, built from C source: PIL's decoder, the same pixels) on every native
/// target, or `"image-rs"` (pure Rust, within a few grey levels of PIL) on wasm32, which has
/// no C toolchain.
pub const JPEG_DECODER: &str = if cfg!(target_arch = "wasm32") {
    "image-rs"
} else {
    "libjpeg-turbo"
};

/// A decoded image: interleaved 8-bit pixels, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image8 {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 (greyscale) or 3 (RGB).
    pub channels: u8,
    /// `width · height · channels` bytes.
    pub pixels: Vec<u8>,
}

/// Decodes `bytes` (read from `path`, which is only used in errors) by their content, not the
/// file extension, into `channels` = 3 (RGB) or 1 (greyscale).
///
/// Greyscale, CMYK, alpha, 16-bit and palette images all convert: alpha is dropped (as PIL's
/// `convert('RGB')` does), 16-bit samples are scaled to 8 bits. Images whose declared size
/// exceeds `max_pixels` are rejected before any pixel memory is allocated.
pub fn decode_image(bytes: &[u8], path: &Path, channels: u8, max_pixels: u64) -> Result<Image8> {
    decode_image_part(bytes, path, channels, max_pixels, &mut |_, _| Ok(None))
        .map(|(image, _)| image)
}

/// [`decode_image`] for a caller that needs only part of the image: `pick` gets the image's
/// width and height (after the size checks, before any pixel is decoded) and returns the
/// box it will use, or `None` for all of it. Returns the pixels and the picked box in their
/// coordinates. A JPEG is then decoded only in that box and a margin around it (its
/// pixels are the full decode's, `tests/jpeg_pillow.rs`); other formats decode whole.
pub fn decode_image_part(
    bytes: &[u8],
    path: &Path,
    channels: u8,
    max_pixels: u64,
    pick: &mut dyn FnMut(u32, u32) -> Result<Option<CropBox>>,
) -> Result<(Image8, Option<CropBox>)> {
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>> {
        let reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(io(path))?;
        if reader.format().is_none() {
            return Err(DataError::NotAnImage {
                path: path.to_path_buf(),
            });
        }
        Ok(reader)
    };
    let format = reader()?.format();
    // The JPEG decoder fills a truncated scan with grey instead of failing (PIL refuses such
    // files), so check for the end-of-image marker after the last start-of-scan ourselves.
    if format == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            message: "truncated JPEG: no end-of-image marker after the last scan".into(),
        });
    }
    #[cfg(not(target_arch = "wasm32"))]
    if format == Some(ImageFormat::Jpeg) {
        let d = crate::jpeg::decode(bytes, path, channels, max_pixels, max_decoded_bytes(), pick)?;
        let pixels = match (channels == 1, d.channels == 1) {
            (true, true) | (false, false) => d.pixels,
            (true, false) => d.pixels.chunks_exact(3).map(luma).collect(),
            (false, true) => d.pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        };
        let image = Image8 {
            width: d.width,
            height: d.height,
            channels: if channels == 1 { 1 } else { 3 },
            pixels,
        };
        return Ok((image, d.crop));
    }
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| decode_error(path, e))?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            max_pixels,
        });
    }
    let mut limits = Limits::default();
    let max_bytes = max_decoded_bytes();
    limits.max_alloc = Some(max_bytes);
    // What the file declares, before any pixel memory is allocated: the decoded samples,
    // plus the 8-bit copy when the conversion makes one.
    {
        use image::ImageDecoder;
        let decoder = reader()?
            .into_decoder()
            .map_err(|e| decode_error(path, e))?;
        let color = decoder.color_type();
        let decoded = decoder.total_bytes();
        let target = if channels == 1 {
            image::ColorType::L8
        } else {
            image::ColorType::Rgb8
        };
        let copy = if color == target {
            0
        } else {
            u64::from(width) * u64::from(height) * u64::from(target.bytes_per_pixel())
        };
        let needed = decoded.saturating_add(copy);
        if needed > max_bytes {
            let mb = |b: u64| b.div_ceil(1 << 20);
            return Err(DataError::TooManyBytes {
                path: path.to_path_buf(),
                width,
                height,
                color: format!("{color:?}"),
                needed_mb: mb(needed),
                max_mb: mb(max_bytes),
            });
        }
    }
    let mut reader = reader()?;
    reader.limits(limits);
    let image = to_channels(
        reader.decode().map_err(|e| decode_error(path, e))?,
        channels,
    );
    let picked = pick_box(pick, width, height)?;
    Ok((image, picked))
}

/// Largest image file read (a 100-megapixel PNG is well under it).
pub const MAX_IMAGE_BYTES: u64 = 512 << 20;

/// Reads and decodes a file (see [`decode_image`]): the one way every path in supmae reads
/// an image. `path` must be a regular file (after following symlinks: a FIFO, device or
/// directory is [`DataError::NotAFile`], never a read that hangs) of at most
/// [`MAX_IMAGE_BYTES`]; decoding goes by content, with the pixel cap and the truncation
/// check of [`decode_image`].
pub fn read_image(path: &Path, channels: u8, max_pixels: u64) -> Result<Image8> {
    read_image_part(path, channels, max_pixels, &mut |_, _| Ok(None)).map(|(image, _)| image)
}

/// [`read_image`] for a caller that needs only part of the image (see
/// [`decode_image_part`]).
pub fn read_image_part(
    path: &Path,
    channels: u8,
    max_pixels: u64,
    pick: &mut dyn FnMut(u32, u32) -> Result<Option<CropBox>>,
) -> Result<(Image8, Option<CropBox>)> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    if !meta.is_file() {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(DataError::FileTooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            max: MAX_IMAGE_BYTES,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_IMAGE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    decode_image_part(&bytes, path, channels, max_pixels, pick)
}

/// Whether a JPEG stream has an end-of-image marker (`FF D9`) after its last start-of-scan
/// (`FF DA`). Inside entropy-coded data a `FF` byte is always followed by `00` or a restart
/// marker, so neither pattern can occur there by chance.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(sos) => bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

fn decode_error(path: &Path, error: ImageError) -> DataError {
    match error {
        ImageError::Unsupported(_) => DataError::NotAnImage {
            path: path.to_path_buf(),
        },
        other => DataError::Decode {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    }
}

fn to_channels(image: DynamicImage, channels: u8) -> Image8 {
    let (width, height) = (image.width(), image.height());
    let pixels = if channels == 1 {
        match image {
            DynamicImage::ImageLuma8(buffer) => buffer.into_raw(),
            other => other.to_luma8().into_raw(),
        }
    } else {
        match image {
            DynamicImage::ImageRgb8(buffer) => buffer.into_raw(),
            other => other.to_rgb8().into_raw(),
        }
    };
    Image8 {
        width,
        height,
        channels: if channels == 1 { 1 } else { 3 },
        pixels,
    }
}

/// ITU-R 601-2 luma, as PIL's `convert('L')`: `(299 R + 587 G + 114 B) / 1000`, rounded.
pub(crate) fn luma(p: &[u8]) -> u8 {
    ((u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114 + 500) / 1000) as u8
}
