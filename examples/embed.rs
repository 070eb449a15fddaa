//! Embed images with any checkpoint through [`supmae::Embedder`] and use the features for
//! nearest-neighbour retrieval: 500 gallery and 500 query images of the embedded
//! Fashion-MNIST test split; a query counts as correct when its most similar gallery image
//! (cosine similarity) has the same class. Image files given after the checkpoint are
//! embedded and compared with each other instead.
//!
//! ```text
//! cargo run --release -p supmae-cli -- pretrain                  # the README's main job
//! cargo run --release --example embed -- runs/pretrain [IMAGE...]
//! ```

use image::{DynamicImage, GrayImage};
use supmae::Embedder;
use supmae::burn::backend::Flex;
use supmae::data::{FashionMnist, ImageSource, Split};

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let checkpoint = args.next().unwrap_or("runs/pretrain".into());
    let files: Vec<String> = args.collect();
    let embedder = Embedder::<Flex>::load(&checkpoint, &Default::default())?;
    println!("{checkpoint}: {}", embedder.describe());
    if !files.is_empty() {
        let features: Vec<Vec<f32>> = embedder
            .embed_paths(&files)?
            .into_iter()
            .map(normalise)
            .collect();
        println!(
            "{} embeddings of width {}",
            features.len(),
            features[0].len()
        );
        for (i, a) in features.iter().enumerate() {
            for (j, b) in features.iter().enumerate().skip(i + 1) {
                println!("cos({}, {}) = {:.3}", files[i], files[j], cosine(a, b));
            }
        }
        return Ok(());
    }
    let test = FashionMnist::embedded(Split::Test)?;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..1000 {
        let img = test.load(i, 1)?;
        let gray = GrayImage::from_raw(img.width, img.height, img.pixels)
            .ok_or("inconsistent image buffer")?;
        images.push(DynamicImage::ImageLuma8(gray));
        labels.push(test.label(i));
    }
    let start = std::time::Instant::now();
    let features: Vec<Vec<f32>> = embedder
        .embed(&images)?
        .into_iter()
        .map(normalise)
        .collect();
    println!(
        "embedded {} images into {}-d features in {:.2}s",
        features.len(),
        features[0].len(),
        start.elapsed().as_secs_f64()
    );
    let (gallery, queries) = features.split_at(500);
    let correct = queries
        .iter()
        .enumerate()
        .filter(|(q, query)| {
            let best = gallery
                .iter()
                .enumerate()
                .max_by(|a, b| cosine(query, a.1).total_cmp(&cosine(query, b.1)))
                .map(|(g, _)| g)
                .unwrap_or(0);
            labels[best] == labels[500 + q]
        })
        .count();
    println!(
        "1-nearest-neighbour accuracy of 500 queries against 500 gallery images: {:.1}% (chance 10%)",
        100.0 * correct as f64 / 500.0
    );
    Ok(())
}
