//! Helpers that build small dataset trees at test time from the committed photos.

#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba};

pub const PHOTOS: [&str; 4] = ["astronaut", "chelsea", "coffee", "rocket"];

pub fn photo_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/photos")
        .join(name)
}

pub fn photo(name: &str) -> Vec<u8> {
    std::fs::read(photo_path(&format!("{name}.jpg"))).unwrap()
}

/// A fresh, empty folder unique to this test.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("supmae-data-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

pub fn rgb_image() -> image::RgbImage {
    image::load_from_memory(&photo("chelsea"))
        .unwrap()
        .to_rgb8()
}

/// A greyscale JPEG.
pub fn grey_jpeg() -> Vec<u8> {
    let grey: ImageBuffer<Luma<u8>, Vec<u8>> = DynamicImage::ImageRgb8(rgb_image()).to_luma8();
    encode(DynamicImage::ImageLuma8(grey), ImageFormat::Jpeg)
}

/// A PNG (to be saved under a `.JPEG` name).
pub fn png_bytes() -> Vec<u8> {
    encode(DynamicImage::ImageRgb8(rgb_image()), ImageFormat::Png)
}

/// An RGBA PNG with a varying alpha channel.
pub fn rgba_png() -> Vec<u8> {
    let rgb = rgb_image();
    let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> =
        ImageBuffer::from_fn(rgb.width(), rgb.height(), |x, y| {
            let p = rgb.get_pixel(x, y);
            Rgba([p[0], p[1], p[2], (x % 256) as u8])
        });
    encode(DynamicImage::ImageRgba8(rgba), ImageFormat::Png)
}

/// A 16-bit RGB PNG.
pub fn rgb16_png() -> Vec<u8> {
    let rgb = rgb_image();
    let wide: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_fn(rgb.width(), rgb.height(), |x, y| {
            let p = rgb.get_pixel(x, y);
            Rgb([p[0] as u16 * 257, p[1] as u16 * 257, p[2] as u16 * 257])
        });
    encode(DynamicImage::ImageRgb16(wide), ImageFormat::Png)
}

/// An 8x4 palette PNG: left half palette entry 0 (red), right half entry 1 (blue).
pub fn palette_png() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 8, 4);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(vec![255, 0, 0, 0, 0, 255]);
        let mut writer = encoder.write_header().unwrap();
        let data: Vec<u8> = (0..4).flat_map(|_| [0, 0, 0, 0, 1, 1, 1, 1]).collect();
        writer.write_image_data(&data).unwrap();
    }
    out
}

/// A PPM header declaring a 100000 x 100000 image (10 gigapixels) with almost no data.
pub fn huge_ppm() -> Vec<u8> {
    let mut bytes = b"P6\n100000 100000\n255\n".to_vec();
    bytes.extend_from_slice(&[0u8; 64]);
    bytes
}

/// Builds `root/train/<class>/...` from photos: class `cls_a` gets astronaut + chelsea,
/// `cls_b` gets coffee (with an upper-case extension, in a nested folder) and rocket.
pub fn small_train_tree(root: &Path) {
    write(&root.join("train/cls_b/rocket.jpeg"), &photo("rocket"));
    write(
        &root.join("train/cls_b/nested/deeper/coffee.JPG"),
        &photo("coffee"),
    );
    write(&root.join("train/cls_a/astronaut.jpg"), &photo("astronaut"));
    write(&root.join("train/cls_a/chelsea.Jpeg"), &photo("chelsea"));
    write(
        &root.join("train/cls_a/notes.txt"),
        b"not an image, ignored",
    );
}
