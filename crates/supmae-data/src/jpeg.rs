//! JPEG decoding as PIL does it: libjpeg-turbo's decoder (the copy in mozjpeg, built from C
//! source by the `cc` crate, no cmake or nasm), with the settings PIL's `JpegDecode.c` uses.
//!
//! - The default ISLOW integer IDCT and fancy (triangle) upsampling: PIL changes neither.
//! - Output colour space by the number of components, as PIL picks its mode: 1 is greyscale
//!   (`L`), 3 is RGB (libjpeg converts YCbCr, or passes Adobe RGB through), 4 is CMYK
//!   (libjpeg turns YCCK into CMYK). PIL reads CMYK as inverted ("Adobe conventions",
//!   whether or not the file has an Adobe marker) and its `convert('RGB')` then applies
//!   `cmyk2rgb`; we do the same, so the pixels equal `Image.open(f).convert('RGB')`.
//! - Warnings (corrupt entropy data, extraneous bytes, a bad restart marker) are silent and
//!   decoding goes on, as in PIL, whose `output_message` is empty; libjpeg's fatal errors
//!   unwind out of the C code (`error_exit`, mozjpeg's `unwinding` feature) and come back as
//!   [`DataError::Decode`], never aborting the process.
//! - A file truncated before its end-of-image marker is refused (see
//!   `decode::jpeg_is_complete`), as PIL refuses it unless `LOAD_TRUNCATED_IMAGES` is set.
//!
//! Memory: the header is read first (a few hundred bytes of tables), then the image's size
//! is checked against the pixel cap and the decoded-bytes cap before libjpeg allocates
//! anything for pixels. The bytes counted are the output rows, the CMYK rows when there are
//! four components, and libjpeg's whole-image coefficient buffer (128 bytes per 8x8 block)
//! for progressive or multi-scan files.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use mozjpeg::{ColorSpace, Decompress};

use crate::error::{DataError, Result};

/// Decoded samples, before any conversion to the caller's channel count.
pub(crate) struct Decoded {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// 1 (a greyscale file) or 3 (RGB, CMYK converted as PIL converts it).
    pub(crate) channels: u8,
    pub(crate) pixels: Vec<u8>,
}

/// Whether the stream is progressive or has more than one scan: then libjpeg keeps every
/// coefficient of the image in memory before the first output row. `FF DA` (start of scan)
/// cannot occur inside entropy-coded data, where every `FF` is followed by `00` or a
/// restart marker.
fn buffers_coefficients(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        // SOF2, SOF6, SOF10, SOF14: progressive.
        if matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE) {
            return true;
        }
        if marker == 0xDA {
            return bytes[i + 2..].windows(2).any(|w| w == [0xFF, 0xDA]);
        }
        i += 2 + usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
    }
    false
}

/// PIL's `cmyk2rgb`: `nk = 255 − k`, each channel `nk − c·nk/255` (its rounded `MULDIV255`).
fn cmyk_to_rgb(c: u8, k: u8) -> u8 {
    let nk = 255 - i32::from(k);
    let tmp = i32::from(c) * nk + 128;
    (nk - (((tmp >> 8) + tmp) >> 8)).clamp(0, 255) as u8
}

/// The text of a libjpeg fatal error carried by an unwind (mozjpeg's `error_exit` resumes
/// unwinding with the formatted message).
fn unwind_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&str>() {
            Ok(text) => (*text).to_string(),
            Err(_) => "libjpeg fatal error".to_string(),
        },
    }
}

/// Decodes a complete JPEG stream into greyscale (a one-component file) or RGB, equal to
/// PIL's decode and `convert('RGB')`. `target` (1 or 3) is the caller's channel count, for
/// the memory estimate of the copy it will make; `max_bytes` is the decoded-bytes cap.
pub(crate) fn decode(
    bytes: &[u8],
    path: &Path,
    target: u8,
    max_pixels: u64,
    max_bytes: u64,
) -> Result<Decoded> {
    let decode_err = |message: String| DataError::Decode {
        path: path.to_path_buf(),
        message,
    };
    catch_unwind(AssertUnwindSafe(|| {
        decode_checked(bytes, path, target, max_pixels, max_bytes)
    }))
    .unwrap_or_else(|payload| Err(decode_err(unwind_message(payload))))
}

fn decode_checked(
    bytes: &[u8],
    path: &Path,
    target: u8,
    max_pixels: u64,
    max_bytes: u64,
) -> Result<Decoded> {
    let decode_err = |e: std::io::Error| DataError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let header = Decompress::new_mem(bytes).map_err(decode_err)?;
    let (width, height) = header.size();
    let components = header.components();
    let (out_space, out_channels, color) = match components.len() {
        1 => (ColorSpace::JCS_GRAYSCALE, 1usize, "L8"),
        3 => (ColorSpace::JCS_RGB, 3, "Rgb8"),
        4 => (ColorSpace::JCS_CMYK, 4, "Cmyk8"),
        n => {
            return Err(DataError::Decode {
                path: path.to_path_buf(),
                message: format!("JPEG with {n} components (PIL reads 1, 3 or 4)"),
            });
        }
    };
    let (w32, h32) = (
        u32::try_from(width).unwrap_or(u32::MAX),
        u32::try_from(height).unwrap_or(u32::MAX),
    );
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            width: w32,
            height: h32,
            max_pixels,
        });
    }
    let target = if target == 1 { 1 } else { 3 };
    let decoded = pixels * out_channels as u64;
    let copy = if out_channels == target {
        0
    } else {
        pixels * target as u64
    };
    let coefficients = if buffers_coefficients(bytes) {
        components
            .iter()
            .map(|c| {
                let round = |n: u32, m: i32| u64::from(n).next_multiple_of(m.max(1) as u64);
                round(c.width_in_blocks, c.h_samp_factor)
                    * round(c.height_in_blocks, c.v_samp_factor)
                    * 128
            })
            .sum()
    } else {
        0
    };
    let needed = decoded.saturating_add(copy).saturating_add(coefficients);
    if needed > max_bytes {
        let mb = |b: u64| b.div_ceil(1 << 20);
        return Err(DataError::TooManyBytes {
            path: path.to_path_buf(),
            width: w32,
            height: h32,
            color: color.to_string(),
            needed_mb: mb(needed),
            max_mb: mb(max_bytes),
        });
    }
    let mut started = header.to_colorspace(out_space).map_err(decode_err)?;
    let raw: Vec<u8> = started.read_scanlines().map_err(decode_err)?;
    started.finish().map_err(decode_err)?;
    let rgb_or_grey = if out_channels == 4 {
        // PIL's "CMYK;I" raw mode: inverted samples.
        raw.chunks_exact(4)
            .flat_map(|p| {
                let k = 255 - p[3];
                [0, 1, 2].map(|i| cmyk_to_rgb(255 - p[i], k))
            })
            .collect()
    } else {
        raw
    };
    Ok(Decoded {
        width: w32,
        height: h32,
        channels: if out_channels == 1 { 1 } else { 3 },
        pixels: rgb_or_grey,
    })
}
