//! Reconstruct masked images with a pre-training checkpoint through
//! [`supmae::Reconstructor`] and write MAE's demo picture (original | masked |
//! reconstruction | reconstruction + visible). With no image files, the first 6 images of
//! the embedded Fashion-MNIST test split are used.
//!
//! ```text
//! cargo run --release -p supmae-cli -- pretrain                  # the README's main job
//! cargo run --release --example reconstruct -- runs/pretrain [IMAGE...]
//! ```

use image::{DynamicImage, GrayImage};
use supmae::burn::backend::Flex;
use supmae::data::{FashionMnist, ImageSource, Split};
use supmae::{Reconstructor, grid};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let checkpoint = args.next().unwrap_or("runs/pretrain".into());
    let files: Vec<String> = args.collect();
    let reconstructor = Reconstructor::<Flex>::load(&checkpoint, &Default::default(), None)?;
    println!("{checkpoint}: {}", reconstructor.describe());
    let images = if files.is_empty() {
        let test = FashionMnist::embedded(Split::Test)?;
        (0..6)
            .map(|i| {
                let img = test.load(i, 1)?;
                let gray = GrayImage::from_raw(img.width, img.height, img.pixels)
                    .ok_or("inconsistent image buffer")?;
                Ok(DynamicImage::ImageLuma8(gray))
            })
            .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?
    } else {
        files
            .iter()
            .map(image::open)
            .collect::<Result<Vec<_>, _>>()?
    };
    let rows = reconstructor.reconstruct(&images, 0.75, 0)?;
    for (i, r) in rows.iter().enumerate() {
        println!(
            "image {i}: {} of {} patches removed; error on them {:.4}, flat patch-mean patches {:.4}",
            r.removed, r.patches, r.masked_mse, r.patch_mean_mse
        );
    }
    let scale = if rows[0].original.width() < 64 { 4 } else { 1 };
    grid(&rows, scale)?.save("reconstruction.png")?;
    println!("wrote reconstruction.png");
    Ok(())
}
