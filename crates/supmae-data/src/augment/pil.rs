//! PIL's image operations used by RandAugment (LUTs of `ImageOps`, the blends of
//! `ImageEnhance`, `SMOOTH`, rotations and affine warps), written from their definitions.

use crate::decode::{Image8, luma};

pub(super) fn map_lut(img: &Image8, f: impl Fn(u8) -> u8) -> Image8 {
    let lut: Vec<u8> = (0..=255u8).map(f).collect();
    Image8 {
        pixels: img.pixels.iter().map(|&v| lut[usize::from(v)]).collect(),
        ..img.clone()
    }
}

pub(super) fn posterize(img: &Image8, bits: i32) -> Image8 {
    if bits >= 8 {
        return img.clone();
    }
    let mask = if bits <= 0 {
        0u8
    } else {
        !((1u16 << (8 - bits)) - 1) as u8
    };
    map_lut(img, |v| v & mask)
}

pub(super) fn histograms(img: &Image8) -> Vec<[u64; 256]> {
    let c = usize::from(img.channels);
    let mut hist = vec![[0u64; 256]; c];
    for px in img.pixels.chunks_exact(c) {
        for (ch, &v) in px.iter().enumerate() {
            hist[ch][usize::from(v)] += 1;
        }
    }
    hist
}

pub(super) fn map_channels(img: &Image8, luts: &[[u8; 256]]) -> Image8 {
    let c = usize::from(img.channels);
    let mut pixels = img.pixels.clone();
    for px in pixels.chunks_exact_mut(c) {
        for (ch, v) in px.iter_mut().enumerate() {
            *v = luts[ch][usize::from(*v)];
        }
    }
    Image8 {
        pixels,
        ..img.clone()
    }
}

/// `ImageOps.autocontrast(img)` with no cutoff.
pub(super) fn auto_contrast(img: &Image8) -> Image8 {
    let luts: Vec<[u8; 256]> = histograms(img)
        .iter()
        .map(|h| {
            let mut lut = [0u8; 256];
            let lo = h.iter().position(|&n| n > 0).unwrap_or(0);
            let hi = h.iter().rposition(|&n| n > 0).unwrap_or(255);
            for (i, v) in lut.iter_mut().enumerate() {
                *v = if hi <= lo {
                    i as u8
                } else {
                    let scale = 255.0 / (hi - lo) as f64;
                    let offset = -(lo as f64) * scale;
                    (i as f64 * scale + offset).clamp(0.0, 255.0) as u8
                };
            }
            lut
        })
        .collect();
    map_channels(img, &luts)
}

/// `ImageOps.equalize(img)`.
pub(super) fn equalize(img: &Image8) -> Image8 {
    let luts: Vec<[u8; 256]> = histograms(img)
        .iter()
        .map(|h| {
            let mut lut = [0u8; 256];
            for (i, v) in lut.iter_mut().enumerate() {
                *v = i as u8;
            }
            let nonzero: Vec<u64> = h.iter().copied().filter(|&n| n > 0).collect();
            if nonzero.len() <= 1 {
                return lut;
            }
            let step = (nonzero.iter().sum::<u64>() - nonzero[nonzero.len() - 1]) / 255;
            if step == 0 {
                return lut;
            }
            let mut n = step / 2;
            for (i, v) in lut.iter_mut().enumerate() {
                *v = (n / step).min(255) as u8;
                n += h[i];
            }
            lut
        })
        .collect();
    map_channels(img, &luts)
}

/// PIL's `convert("L")` luma of each pixel.
pub(super) fn luma_of(img: &Image8) -> Vec<u8> {
    match img.channels {
        3 => img.pixels.chunks_exact(3).map(luma).collect(),
        _ => img.pixels.clone(),
    }
}

/// The greyscale image broadcast back to the image's channels.
pub(super) fn greyscale_like(img: &Image8) -> Image8 {
    let c = usize::from(img.channels);
    let pixels = luma_of(img)
        .into_iter()
        .flat_map(|v| std::iter::repeat_n(v, c))
        .collect();
    Image8 {
        pixels,
        ..img.clone()
    }
}

/// `int(mean(convert("L")) + 0.5)`, the grey of `ImageEnhance.Contrast`.
pub(super) fn mean_luma(img: &Image8) -> u8 {
    let l = luma_of(img);
    let sum: u64 = l.iter().map(|&v| u64::from(v)).sum();
    (sum as f64 / l.len().max(1) as f64 + 0.5) as u8
}

/// PIL's `ImageFilter.SMOOTH` (3x3 kernel `[1 1 1; 1 5 1; 1 1 1] / 13`), border pixels
/// copied from the input.
pub(super) fn smooth(img: &Image8) -> Image8 {
    let (w, h, c) = (
        img.width as usize,
        img.height as usize,
        usize::from(img.channels),
    );
    let mut out = img.pixels.clone();
    if w < 3 || h < 3 {
        return img.clone();
    }
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for ch in 0..c {
                let mut sum = 0u32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let v = u32::from(img.pixels[((y + dy - 1) * w + x + dx - 1) * c + ch]);
                        sum += if dy == 1 && dx == 1 { 5 * v } else { v };
                    }
                }
                out[(y * w + x) * c + ch] = ((f64::from(sum) / 13.0) + 0.5).min(255.0) as u8;
            }
        }
    }
    Image8 {
        pixels: out,
        ..img.clone()
    }
}

/// `Image.blend(a, b, factor)`: `a + factor · (b − a)`, clipped and truncated.
pub(super) fn blend(a: &Image8, b: &Image8, factor: f64) -> Image8 {
    let pixels = a
        .pixels
        .iter()
        .zip(&b.pixels)
        .map(|(&x, &y)| {
            let v = f64::from(x) + factor * (f64::from(y) - f64::from(x));
            v.clamp(0.0, 255.0) as u8
        })
        .collect();
    Image8 {
        pixels,
        ..b.clone()
    }
}

/// `img.rotate(degrees, fillcolor=fill)`: counter-clockwise about the centre, same size.
pub(super) fn rotate(img: &Image8, degrees: f64, fill: [u8; 3]) -> Image8 {
    let (cx, cy) = (f64::from(img.width) / 2.0, f64::from(img.height) / 2.0);
    let angle = -degrees.to_radians();
    let (cos, sin) = (angle.cos(), angle.sin());
    // Output point (x, y) samples the input at R · (x − c) + c.
    let m = [
        cos,
        sin,
        cos * -cx + sin * -cy + cx,
        -sin,
        cos,
        -sin * -cx + cos * -cy + cy,
    ];
    affine(img, m, fill)
}

/// Cubic convolution weight (`a = -0.5`, PIL's bicubic).
pub(super) fn cubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// `img.transform(size, AFFINE, m, BICUBIC, fillcolor=fill)`: the output pixel centre
/// `(x + ½, y + ½)` samples the input at `(m0 x + m1 y + m2, m3 x + m4 y + m5)`; points
/// outside the image take the fill colour.
pub(super) fn affine(img: &Image8, m: [f64; 6], fill: [u8; 3]) -> Image8 {
    let (w, h, c) = (
        img.width as usize,
        img.height as usize,
        usize::from(img.channels),
    );
    let fill: Vec<u8> = if c == 1 {
        vec![luma(&fill)]
    } else {
        fill.to_vec()
    };
    let mut out = vec![0u8; img.pixels.len()];
    let at = |x: i64, y: i64, ch: usize| -> f64 {
        let x = x.clamp(0, w as i64 - 1) as usize;
        let y = y.clamp(0, h as i64 - 1) as usize;
        f64::from(img.pixels[(y * w + x) * c + ch])
    };
    for y in 0..h {
        for x in 0..w {
            let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
            let xin = m[0] * xo + m[1] * yo + m[2];
            let yin = m[3] * xo + m[4] * yo + m[5];
            let dst = &mut out[(y * w + x) * c..(y * w + x + 1) * c];
            if xin < 0.0 || yin < 0.0 || xin >= w as f64 || yin >= h as f64 {
                dst.copy_from_slice(&fill);
                continue;
            }
            let (xs, ys) = (xin - 0.5, yin - 0.5);
            let (x0, y0) = (xs.floor(), ys.floor());
            let (fx, fy) = (xs - x0, ys - y0);
            let wx = [cubic(fx + 1.0), cubic(fx), cubic(1.0 - fx), cubic(2.0 - fx)];
            let wy = [cubic(fy + 1.0), cubic(fy), cubic(1.0 - fy), cubic(2.0 - fy)];
            let (x0, y0) = (x0 as i64, y0 as i64);
            for (ch, d) in dst.iter_mut().enumerate() {
                let mut v = 0.0;
                for (j, wyj) in wy.iter().enumerate() {
                    let mut row = 0.0;
                    for (i, wxi) in wx.iter().enumerate() {
                        row += wxi * at(x0 + i as i64 - 1, y0 + j as i64 - 1, ch);
                    }
                    v += wyj * row;
                }
                *d = (v + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    Image8 {
        pixels: out,
        ..img.clone()
    }
}
