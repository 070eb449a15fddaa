//! Pillow's bicubic `Image.resize`, bit for bit.
//!
//! Written from the algorithm of Pillow's `libImaging/Resample.c`, which torchvision's
//! `Resize` calls on PIL images: per output pixel, cubic-convolution weights (`a = -0.5`)
//! over a support widened by the scale when shrinking, computed in `f64`, normalised to sum
//! 1, then rounded to 22-bit fixed point; a horizontal pass into an 8-bit image, then a
//! vertical pass, each summing `u8 · weight` in `i32` from a rounding offset of one half and
//! clamping `sum >> 22` to `0..=255`. The evaluation transform uses it, so the eval tensor
//! equals torchvision's to the grey level (`tests/pipeline.rs` checks it against PIL).

use crate::decode::Image8;

/// Fixed-point precision of the weights: `32 - 8 - 2` bits, as Pillow.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's bicubic kernel (cubic convolution with `a = -0.5`), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The fixed-point weights of one pass: for output index `i`, source indices
/// `first[i] .. first[i] + len[i]` with weights `weights[i * ksize ..]`.
struct Pass {
    ksize: usize,
    first: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

impl Pass {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for resizing `in_size` samples
    /// (the whole range) to `out_size`.
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut first = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's `(int)` truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
            let n = xmax.clamp(0, ksize as i64) as usize;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = bicubic(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            let row = &mut weights[xx * ksize..(xx + 1) * ksize];
            for (x, out) in row.iter_mut().enumerate().take(n) {
                let w = if ww != 0.0 { k[x] / ww } else { k[x] };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                *out = if w < 0.0 {
                    (-0.5 + fixed) as i32
                } else {
                    (0.5 + fixed) as i32
                };
            }
            first.push(xmin as usize);
            len.push(n);
        }
        Self {
            ksize,
            first,
            len,
            weights,
        }
    }
}

/// `sum >> 22` clamped to a byte, as Pillow's `clip8`.
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `image.resize((width, height), Image.BICUBIC)` exactly as Pillow computes it (the whole
/// image, no box, no `reducing_gap`). A size equal to the image's is a copy.
///
/// # Shapes
/// - image: `[H, W, C]` interleaved bytes
/// - output: `[height, width, C]`
pub fn pil_bicubic_resize(image: &Image8, width: u32, height: u32) -> Image8 {
    let c = usize::from(image.channels);
    let (w_in, h_in) = (image.width as usize, image.height as usize);
    let (w_out, h_out) = (width as usize, height as usize);
    if (w_in, h_in) == (w_out, h_out) || w_out == 0 || h_out == 0 || w_in == 0 || h_in == 0 {
        return Image8 {
            width,
            height,
            channels: image.channels,
            pixels: if (w_in, h_in) == (w_out, h_out) {
                image.pixels.clone()
            } else {
                vec![0; w_out * h_out * c]
            },
        };
    }
    let half = 1i32 << (PRECISION_BITS - 1);
    let vert = Pass::new(h_in, h_out);
    // Only the source rows the vertical pass reads go through the horizontal pass.
    let y_first = vert.first[0];
    let y_last = vert.first[h_out - 1] + vert.len[h_out - 1];
    let (rows, mid): (usize, Vec<u8>) = if w_out != w_in {
        let horiz = Pass::new(w_in, w_out);
        let rows = y_last - y_first;
        let mut mid = vec![0u8; rows * w_out * c];
        for (r, out_row) in mid.chunks_exact_mut(w_out * c).enumerate() {
            let src = &image.pixels[(y_first + r) * w_in * c..(y_first + r + 1) * w_in * c];
            for xx in 0..w_out {
                let k = &horiz.weights[xx * horiz.ksize..][..horiz.len[xx]];
                let x0 = horiz.first[xx];
                for ch in 0..c {
                    let mut sum = half;
                    for (x, &w) in k.iter().enumerate() {
                        sum += i32::from(src[(x0 + x) * c + ch]) * w;
                    }
                    out_row[xx * c + ch] = clip8(sum);
                }
            }
        }
        (rows, mid)
    } else {
        (
            y_last - y_first,
            image.pixels[y_first * w_in * c..y_last * w_in * c].to_vec(),
        )
    };
    debug_assert_eq!(mid.len(), rows * w_out * c);
    if h_out == h_in {
        return Image8 {
            width,
            height,
            channels: image.channels,
            pixels: mid,
        };
    }
    let stride = w_out * c;
    let mut out = vec![0u8; h_out * stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let k = &vert.weights[yy * vert.ksize..][..vert.len[yy]];
        let y0 = vert.first[yy] - y_first;
        for (i, px) in out_row.iter_mut().enumerate() {
            let mut sum = half;
            for (y, &w) in k.iter().enumerate() {
                sum += i32::from(mid[(y0 + y) * stride + i]) * w;
            }
            *px = clip8(sum);
        }
    }
    Image8 {
        width,
        height,
        channels: image.channels,
        pixels: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point_and_a_flat_image_stays_flat() {
        for (i, o) in [(100, 37), (37, 100), (256, 224), (7, 3)] {
            let p = Pass::new(i, o);
            for xx in 0..o {
                let s: i64 = p.weights[xx * p.ksize..][..p.len[xx]]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= p.len[xx] as i64,
                    "{i}->{o}"
                );
            }
        }
        let flat = Image8 {
            width: 50,
            height: 30,
            channels: 3,
            pixels: vec![77; 50 * 30 * 3],
        };
        let out = pil_bicubic_resize(&flat, 23, 41);
        assert_eq!((out.width, out.height), (23, 41));
        assert!(out.pixels.iter().all(|&v| v == 77));
    }
}
