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
//!   unwind out of the C code (`error_exit`, mozjpeg-sys's `unwinding` feature) and come back as
//!   [`DataError::Decode`], never aborting the process.
//! - A file truncated before its end-of-image marker is refused (see
//!   `decode::jpeg_is_complete`), as PIL refuses it unless `LOAD_TRUNCATED_IMAGES` is set.
//! - A caller that uses only a box of the image (the training crop) gets only that box and a
//!   margin decoded (`jpeg_crop_scanline`, `jpeg_skip_scanlines`, no rows below it), with
//!   the full decode's pixels there (docs/decisions.md, "Decoding only the crop").
//!
//! Memory: the header is read first (a few hundred bytes of tables), then the image's size
//! is checked against the pixel cap and the decoded-bytes cap before libjpeg allocates
//! anything for pixels. The bytes counted are the output rows, the CMYK rows when there are
//! four components, and libjpeg's whole-image coefficient buffer (128 bytes per 8x8 block)
//! for progressive or multi-scan files.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use std::marker::PhantomData;

use mozjpeg_sys as ffi;

use crate::crop::{CropBox, pick_box};
use crate::error::{DataError, Result};

/// Decoded samples, before any conversion to the caller's channel count.
pub(crate) struct Decoded {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// 1 (a greyscale file) or 3 (RGB, CMYK converted as PIL converts it).
    pub(crate) channels: u8,
    pub(crate) pixels: Vec<u8>,
    /// The box the caller picked, in the coordinates of `pixels` (which then hold only
    /// that part of the image and a margin); `None`: the whole image.
    pub(crate) crop: Option<CropBox>,
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

/// The text of a libjpeg fatal error carried by an unwind ([`error_exit`] resumes unwinding
/// with the formatted message).
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
    pick: &mut dyn FnMut(u32, u32) -> Result<Option<CropBox>>,
) -> Result<Decoded> {
    let decode_err = |message: String| DataError::Decode {
        path: path.to_path_buf(),
        message,
    };
    catch_unwind(AssertUnwindSafe(|| {
        decode_checked(bytes, path, target, max_pixels, max_bytes, pick)
    }))
    .unwrap_or_else(|payload| Err(decode_err(unwind_message(payload))))
}

/// Rows and columns decoded beyond a picked box on each side (where the image has them).
/// libjpeg's fancy upsampling (h2v1, h2v2) treats the first and last column of a cropped
/// decode, and the rows next to skipped ones, as image edges; its context is one chroma
/// sample, 2 pixels, so the pixels this far inside are the full decode's.
/// `tests/jpeg_pillow.rs` checks it on every fixture: with no margin it fails, with 2 it
/// passes.
const MARGIN: u32 = 8;

fn decode_checked(
    bytes: &[u8],
    path: &Path,
    target: u8,
    max_pixels: u64,
    max_bytes: u64,
    pick: &mut dyn FnMut(u32, u32) -> Result<Option<CropBox>>,
) -> Result<Decoded> {
    let mut session = Session::new(bytes);
    session.read_header();
    let (w32, h32) = session.size();
    let components = session.components();
    let (out_space, out_channels, color) = match components.len() {
        1 => (ffi::J_COLOR_SPACE::JCS_GRAYSCALE, 1usize, "L8"),
        3 => (ffi::J_COLOR_SPACE::JCS_RGB, 3, "Rgb8"),
        4 => (ffi::J_COLOR_SPACE::JCS_CMYK, 4, "Cmyk8"),
        n => {
            return Err(DataError::Decode {
                path: path.to_path_buf(),
                message: format!("JPEG with {n} components (PIL reads 1, 3 or 4)"),
            });
        }
    };
    let pixels = u64::from(w32) * u64::from(h32);
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
    // The whole image's size is what counts, whatever part of it is decoded below.
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
    let picked = pick_box(pick, w32, h32)?;
    // The decoded window: the picked box and a margin, clamped to the image.
    let (left, top, right, bottom) = match picked {
        Some(b) => (
            b.left.saturating_sub(MARGIN),
            b.top.saturating_sub(MARGIN),
            (b.left.saturating_add(b.width).saturating_add(MARGIN)).min(w32),
            (b.top.saturating_add(b.height).saturating_add(MARGIN)).min(h32),
        ),
        None => (0, 0, w32, h32),
    };
    session.start(out_space);
    // libjpeg moves the left edge down to an iMCU boundary and widens the window to match.
    let (left, width) = session.crop_columns(left, right - left);
    session.skip_rows(top);
    let rows = (bottom - top) as usize;
    let mut raw = vec![0u8; rows * width as usize * out_channels];
    session.read_rows(&mut raw, width as usize * out_channels);
    if bottom == h32 {
        session.finish();
    }
    let pixels = if out_channels == 4 {
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
        width,
        height: bottom - top,
        channels: if out_channels == 1 { 1 } else { 3 },
        pixels,
        crop: picked.map(|b| CropBox {
            left: b.left - left,
            top: b.top - top,
            ..b
        }),
    })
}

/// libjpeg's decompressor over an in-memory stream, with PIL's settings (libjpeg's
/// defaults: ISLOW IDCT, fancy upsampling) and an error manager that turns fatal errors
/// into unwinds (caught in [`decode`]) and drops warnings. Destroyed on drop, also after a
/// fatal error.
///
/// The crate's one `unsafe` code: the libjpeg calls (`mozjpeg-sys`), which the `mozjpeg`
/// crate wraps without `jpeg_crop_scanline` and `jpeg_skip_scanlines` (docs/decisions.md).
struct Session<'a> {
    // Boxed: libjpeg keeps pointers to both structs, so they must not move.
    cinfo: Box<ffi::jpeg_decompress_struct>,
    _err: Box<ffi::jpeg_error_mgr>,
    _bytes: PhantomData<&'a [u8]>,
}

/// Fatal libjpeg errors: the formatted message, unwound out of the C code (the
/// `unwinding` feature of `mozjpeg-sys` builds it with unwind tables for this).
#[allow(unsafe_code)]
extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    let mut buffer = [0u8; 80];
    // SAFETY: `err` is the error manager set in `Session::new`, alive as long as `cinfo`;
    // `format_message` writes at most JMSG_LENGTH_MAX (80) bytes, NUL included, into the
    // buffer. mozjpeg-sys declares its buffer argument as `&[u8; 80]`; it is written to, so
    // it is passed as a pointer to a mutable buffer (the same ABI).
    let text = unsafe {
        match cinfo.err.as_ref().and_then(|e| e.format_message) {
            Some(format) => {
                let format: unsafe extern "C-unwind" fn(
                    &mut ffi::jpeg_common_struct,
                    *mut [u8; 80],
                ) = std::mem::transmute(format);
                format(cinfo, &mut buffer);
                let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
                String::from_utf8_lossy(&buffer[..end]).into_owned()
            }
            None => "unknown error".to_string(),
        }
    };
    std::panic::resume_unwind(Box::new(format!("libjpeg fatal error: {text}")));
}

/// Warnings (corrupt entropy data and the like) are dropped, as PIL drops them.
extern "C-unwind" fn silence(_cinfo: &mut ffi::jpeg_common_struct, _level: std::os::raw::c_int) {}

#[allow(unsafe_code)]
impl<'a> Session<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        // SAFETY: both structs are plain C data for which all-zero is the state libjpeg
        // expects before `jpeg_std_error` / `jpeg_create_decompress` (null pointers, `None`
        // callbacks, enum value 0); the stream outlives the session (`'a`).
        unsafe {
            let mut err: Box<ffi::jpeg_error_mgr> = Box::new(std::mem::zeroed());
            ffi::jpeg_std_error(&mut err);
            err.error_exit = Some(error_exit);
            err.emit_message = Some(silence);
            let mut cinfo: Box<ffi::jpeg_decompress_struct> = Box::new(std::mem::zeroed());
            cinfo.common.err = &mut *err;
            ffi::jpeg_create_decompress(&mut *cinfo);
            ffi::jpeg_mem_src(
                &mut cinfo,
                bytes.as_ptr(),
                bytes.len() as std::os::raw::c_ulong,
            );
            Self {
                cinfo,
                _err: err,
                _bytes: PhantomData,
            }
        }
    }

    /// Reads the markers up to the first scan (an image is required: a tables-only stream
    /// is a fatal error).
    fn read_header(&mut self) {
        // SAFETY: a created decompressor with a memory source.
        unsafe {
            ffi::jpeg_read_header(&mut self.cinfo, 1);
        }
    }

    fn size(&self) -> (u32, u32) {
        (self.cinfo.image_width, self.cinfo.image_height)
    }

    fn components(&self) -> &[ffi::jpeg_component_info] {
        if self.cinfo.comp_info.is_null() {
            return &[];
        }
        // SAFETY: after the header, `comp_info` points at `num_components` entries owned
        // by the decompressor, which lives as long as `self`.
        unsafe {
            std::slice::from_raw_parts(
                self.cinfo.comp_info,
                usize::try_from(self.cinfo.num_components).unwrap_or(0),
            )
        }
    }

    fn start(&mut self, space: ffi::J_COLOR_SPACE) {
        self.cinfo.out_color_space = space;
        // SAFETY: the header has been read; a memory source never suspends.
        unsafe {
            ffi::jpeg_start_decompress(&mut self.cinfo);
        }
    }

    /// Decodes only columns `left .. left + width` (all of them when that is the whole
    /// row); returns the window libjpeg chose (its left edge moved down to an iMCU).
    fn crop_columns(&mut self, left: u32, width: u32) -> (u32, u32) {
        if left == 0 && width == self.cinfo.output_width {
            return (0, width);
        }
        let (mut x, mut w) = (left, width);
        // SAFETY: called after `jpeg_start_decompress`, before any row is read; the window
        // lies inside the image (libjpeg checks it and fails fatally otherwise).
        unsafe {
            ffi::jpeg_crop_scanline(&mut self.cinfo, &mut x, &mut w);
        }
        (x, w)
    }

    fn skip_rows(&mut self, rows: u32) {
        if rows > 0 {
            // SAFETY: a started decompressor with a memory source (not a suspending one).
            let skipped = unsafe { ffi::jpeg_skip_scanlines(&mut self.cinfo, rows) };
            if skipped != rows {
                std::panic::resume_unwind(Box::new(format!(
                    "libjpeg skipped {skipped} of {rows} rows"
                )));
            }
        }
    }

    /// Fills `out` with the next `out.len() / stride` rows of `stride` bytes.
    fn read_rows(&mut self, out: &mut [u8], stride: usize) {
        for row in out.chunks_exact_mut(stride.max(1)) {
            let mut pointer = row.as_mut_ptr();
            // SAFETY: `row` holds one output row of the (cropped) width in the output
            // colour space; libjpeg writes exactly that many bytes.
            let read = unsafe { ffi::jpeg_read_scanlines(&mut self.cinfo, &mut pointer, 1) };
            if read != 1 {
                std::panic::resume_unwind(Box::new(
                    "libjpeg returned fewer rows than the image has".to_string(),
                ));
            }
        }
    }

    /// Reads the rest of the stream, as PIL does after the last row.
    fn finish(&mut self) {
        // SAFETY: every output row has been read.
        unsafe {
            ffi::jpeg_finish_decompress(&mut self.cinfo);
        }
    }
}

#[allow(unsafe_code)]
impl Drop for Session<'_> {
    fn drop(&mut self) {
        // SAFETY: releases everything libjpeg allocated for this decompressor, in any state
        // (also after a fatal error unwound out of it).
        unsafe {
            ffi::jpeg_destroy_decompress(&mut self.cinfo);
        }
    }
}
