//! Classify images with any checkpoint through [`supmae::Embedder`]: image files given on the
//! command line, or, with none, the first 8 images of the embedded Fashion-MNIST test split
//! (printed with their true labels).
//!
//! ```text
//! cargo run --release -p supmae-cli -- pretrain                  # the README's main job
//! cargo run --release -p supmae-cli -- finetune --checkpoint runs/pretrain
//! cargo run --release --example classify -- runs/finetune [IMAGE...]
//! ```

use image::{DynamicImage, GrayImage};
use supmae::Embedder;
use supmae::burn::backend::Flex;
use supmae::data::{FashionMnist, ImageSource, Split};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let checkpoint = args.next().unwrap_or("runs/finetune".into());
    let files: Vec<String> = args.collect();
    let embedder = Embedder::<Flex>::load(&checkpoint, &Default::default())?;
    println!("{checkpoint}: {}", embedder.describe());
    let (names, images, truth) = if files.is_empty() {
        let test = FashionMnist::embedded(Split::Test)?;
        let mut images = Vec::new();
        let mut truth = Vec::new();
        for i in 0..8 {
            let img = test.load(i, 1)?;
            let gray = GrayImage::from_raw(img.width, img.height, img.pixels)
                .ok_or("inconsistent image buffer")?;
            images.push(DynamicImage::ImageLuma8(gray));
            truth.push(test.classes()[test.label(i)].clone());
        }
        let names = (0..8).map(|i| format!("test image {i}")).collect();
        (names, images, truth)
    } else {
        let images = files
            .iter()
            .map(image::open)
            .collect::<Result<Vec<_>, _>>()?;
        (files.clone(), images, vec![String::new(); files.len()])
    };
    for ((name, top), truth) in names.iter().zip(embedder.classify(&images, 3)?).zip(truth) {
        let guesses: Vec<String> = top
            .iter()
            .map(|p| format!("{} {:.1}%", p.label, 100.0 * p.probability))
            .collect();
        let truth = if truth.is_empty() {
            String::new()
        } else {
            format!("  (true: {truth})")
        };
        println!("{name}: {}{truth}", guesses.join(", "));
    }
    Ok(())
}
