//! JPEG decoding equals Pillow's `Image.open(f).convert('RGB')` byte for byte, on the 37
//! variants that `tools/data/jpeg_fixtures.py` writes into `tests/data/jpeg/`: baseline and
//! progressive; 4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1 and mixed sampling; odd sizes; greyscale;
//! CMYK with and without an Adobe marker, YCCK, RGB; arithmetic coding; restart markers;
//! quality 5 to 100; and damaged files. Where Pillow decodes a damaged file (flipped bytes in
//! the entropy-coded data, stray or trailing bytes) we give its pixels; where it refuses one
//! (truncated, no end-of-image marker) we give a typed error naming the file.

use std::path::{Path, PathBuf};

use serde_json::Value;
use supmae_data::{
    CropBox, DEFAULT_MAX_PIXELS, DataError, decode_image, read_image, read_image_part,
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jpeg")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join("manifest.json")).unwrap();
    let meta: Value = serde_json::from_str(&text).unwrap();
    meta["files"].as_array().unwrap().clone()
}

fn pillow_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(path).unwrap();
    assert_eq!(img.color(), image::ColorType::Rgb8, "{}", path.display());
    let rgb = img.into_rgb8();
    (rgb.width(), rgb.height(), rgb.into_raw())
}

#[test]
fn every_variant_decodes_to_pillows_bytes_or_fails_where_pillow_fails() {
    assert_eq!(supmae_data::decode::JPEG_DECODER, "libjpeg-turbo");
    let files = manifest();
    assert!(files.len() >= 30, "only {} fixtures", files.len());
    let (mut exact, mut refused) = (0, 0);
    for entry in &files {
        let name = entry["name"].as_str().unwrap();
        let path = dir().join(format!("{name}.jpg"));
        let got = read_image(&path, 3, DEFAULT_MAX_PIXELS);
        match entry["expect"].as_str().unwrap() {
            "pixels" => {
                let got = got.unwrap_or_else(|e| panic!("{name}: Pillow decodes it, we fail: {e}"));
                let (w, h, want) = pillow_rgb(&dir().join(format!("{name}.png")));
                assert_eq!((got.width, got.height, got.channels), (w, h, 3), "{name}");
                if got.pixels != want {
                    let (diffs, max) = got
                        .pixels
                        .iter()
                        .zip(&want)
                        .filter(|(a, b)| a != b)
                        .fold((0, 0), |(n, m), (a, b)| (n + 1, m.max(a.abs_diff(*b))));
                    panic!("{name}: {diffs} bytes differ from Pillow's, by up to {max} levels");
                }
                exact += 1;
            }
            "error" => {
                let Err(err) = got else {
                    panic!(
                        "{name}: Pillow refuses it ({}), we decoded it",
                        entry["pillow_error"]
                    );
                };
                assert!(matches!(err, DataError::Decode { .. }), "{name}: {err:?}");
                assert!(err.to_string().contains(name), "{name}: {err}");
                refused += 1;
            }
            other => panic!("{name}: unknown expectation {other}"),
        }
    }
    println!("{exact} JPEGs byte-identical to Pillow's, {refused} refused as Pillow refuses them");
    assert!(exact >= 20 && refused >= 3);
}

/// The greyscale path is PIL's `convert('L')` of the same decode: the luma of the RGB
/// pixels for colour files, the samples themselves for greyscale files.
#[test]
fn greyscale_output_is_the_luma_of_pillows_rgb() {
    for name in ["baseline_420_q75", "grey_q75", "cmyk_adobe_q90"] {
        let path = dir().join(format!("{name}.jpg"));
        let grey = read_image(&path, 1, DEFAULT_MAX_PIXELS).unwrap();
        let (_, _, rgb) = pillow_rgb(&dir().join(format!("{name}.png")));
        assert_eq!(grey.channels, 1);
        let luma: Vec<u8> = rgb
            .chunks_exact(3)
            .map(|p| {
                ((u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114 + 500)
                    / 1000) as u8
            })
            .collect();
        assert_eq!(grey.pixels, luma, "{name}");
    }
}

/// A copy of `bytes` whose frame header (SOF0 or SOF2) declares `width` x `height`.
fn declaring(bytes: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut i = 2;
    loop {
        let (marker, len) = (out[i + 1], u16::from_be_bytes([out[i + 2], out[i + 3]]));
        if marker == 0xC0 || marker == 0xC2 {
            out[i + 5..i + 7].copy_from_slice(&height.to_be_bytes());
            out[i + 7..i + 9].copy_from_slice(&width.to_be_bytes());
            return out;
        }
        i += 2 + usize::from(len);
    }
}

/// Sizes are checked from the header, before libjpeg allocates anything for pixels: a small
/// file that declares a huge image is refused at once, with what it declared.
#[test]
fn declared_sizes_are_refused_before_any_pixel_memory() {
    let path = Path::new("forged.jpg");
    let base = std::fs::read(dir().join("baseline_420_q75.jpg")).unwrap();
    let err = decode_image(
        &declaring(&base, 65_000, 65_000),
        path,
        3,
        DEFAULT_MAX_PIXELS,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TooLarge {
                width: 65_000,
                height: 65_000,
                ..
            }
        ),
        "{err:?}"
    );
    // 81 megapixels is under the pixel cap, but a progressive file keeps every coefficient
    // (2 bytes a sample) besides the output rows: 243 + 486 MB = 696 MiB, over the 384 MiB
    // default.
    let prog = std::fs::read(dir().join("progressive_444_q60.jpg")).unwrap();
    let err =
        decode_image(&declaring(&prog, 9_000, 9_000), path, 3, DEFAULT_MAX_PIXELS).unwrap_err();
    match err {
        DataError::TooManyBytes {
            needed_mb, max_mb, ..
        } => {
            assert_eq!(max_mb, 384);
            assert_eq!(needed_mb, 696);
        }
        other => panic!("{other:?}"),
    }
}

/// libjpeg's fatal errors (here a frame header that claims 200 components, and one with a
/// zero width) come back as typed errors; the process goes on.
#[test]
fn fatal_libjpeg_errors_are_typed_errors_not_aborts() {
    let path = Path::new("broken.jpg");
    let base = std::fs::read(dir().join("baseline_420_q75.jpg")).unwrap();
    let zero = declaring(&base, 0, 45);
    let err = decode_image(&zero, path, 3, DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(matches!(err, DataError::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("broken.jpg"), "{err}");

    let mut components = base.clone();
    let sof = components
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .unwrap();
    components[sof + 9] = 200;
    let err = decode_image(&components, path, 3, DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(matches!(err, DataError::Decode { .. }), "{err:?}");
    // And a good file still decodes after them.
    assert!(decode_image(&base, path, 3, DEFAULT_MAX_PIXELS).is_ok());
}

/// The part of `image` in `crop`.
fn cut(image: &supmae_data::Image8, crop: CropBox) -> Vec<u8> {
    let c = usize::from(image.channels);
    let row = image.width as usize * c;
    (crop.top..crop.top + crop.height)
        .flat_map(|y| {
            let start = y as usize * row + crop.left as usize * c;
            image.pixels[start..start + crop.width as usize * c].to_vec()
        })
        .collect()
}

/// Decoding only a box (what a `RandomResizedCrop` uses: `jpeg_crop_scanline` and
/// `jpeg_skip_scanlines` with a margin) gives the full decode's pixels in that box, for every
/// variant Pillow decodes and the test photos, in RGB and greyscale, for boxes at every edge
/// and corner, one pixel, whole rows and columns, and random ones.
#[test]
fn a_decoded_box_has_the_full_decodes_pixels() {
    let mut paths: Vec<PathBuf> = manifest()
        .iter()
        .filter(|e| e["expect"].as_str() == Some("pixels"))
        .map(|e| dir().join(format!("{}.jpg", e["name"].as_str().unwrap())))
        .collect();
    let photos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos");
    for name in ["astronaut", "chelsea", "coffee", "rocket"] {
        paths.push(photos.join(format!("{name}.jpg")));
    }
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |n: u32| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) % u64::from(n.max(1))) as u32
    };
    let mut checked = 0;
    for path in &paths {
        for channels in [3u8, 1] {
            let full = read_image(path, channels, DEFAULT_MAX_PIXELS).unwrap();
            let (w, h) = (full.width, full.height);
            let mut boxes = vec![
                CropBox {
                    left: 0,
                    top: 0,
                    width: w,
                    height: h,
                },
                CropBox {
                    left: 0,
                    top: 0,
                    width: 1,
                    height: 1,
                },
                CropBox {
                    left: w - 1,
                    top: h - 1,
                    width: 1,
                    height: 1,
                },
                CropBox {
                    left: 0,
                    top: h / 2,
                    width: w,
                    height: h - h / 2,
                },
                CropBox {
                    left: w / 3,
                    top: 0,
                    width: w - w / 3,
                    height: h / 3 + 1,
                },
                CropBox {
                    left: w / 2,
                    top: h / 2,
                    width: (w / 4).max(1),
                    height: (h / 4).max(1),
                },
            ];
            for _ in 0..8 {
                let (cw, ch) = (1 + next(w), 1 + next(h));
                boxes.push(CropBox {
                    left: next(w - cw + 1),
                    top: next(h - ch + 1),
                    width: cw,
                    height: ch,
                });
            }
            for want in boxes {
                let (part, got) =
                    read_image_part(path, channels, DEFAULT_MAX_PIXELS, &mut |pw, ph| {
                        assert_eq!((pw, ph), (w, h));
                        Ok(Some(want))
                    })
                    .unwrap();
                let got = got.unwrap();
                assert_eq!((got.width, got.height), (want.width, want.height));
                assert!(
                    cut(&part, got) == cut(&full, want),
                    "{}, {channels} channels, box {want:?}: pixels differ from the full decode",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 500, "{checked} boxes");
}

/// A box that is empty or reaches outside the image is a typed error, not a panic or a
/// read outside the decoded rows.
#[test]
fn a_box_outside_the_image_is_an_error() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos/chelsea.jpg");
    let full = read_image(&path, 3, DEFAULT_MAX_PIXELS).unwrap();
    let (w, h) = (full.width, full.height);
    for bad in [
        CropBox {
            left: w,
            top: 0,
            width: 1,
            height: 1,
        },
        CropBox {
            left: 0,
            top: h - 1,
            width: 1,
            height: 2,
        },
        CropBox {
            left: 1,
            top: 1,
            width: 0,
            height: 5,
        },
        CropBox {
            left: u32::MAX,
            top: 0,
            width: 2,
            height: 1,
        },
    ] {
        let got = read_image_part(&path, 3, DEFAULT_MAX_PIXELS, &mut |_, _| Ok(Some(bad)));
        assert!(
            matches!(got, Err(DataError::InvalidConfig { field: "crop", .. })),
            "{bad:?}: {:?}",
            got.map(|(_, b)| b)
        );
    }
}
