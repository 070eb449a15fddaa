//! Transforms (against torchvision's algorithm and PIL's bicubic) and the batch loader.

mod common;

use std::sync::Arc;

use burn::backend::Flex;
use common::*;
use supmae_data::resample::pil_bicubic_resize;
use supmae_data::transform::{random_resized_crop_box, resized_crop};
use supmae_data::*;

#[test]
fn random_resized_crop_boxes_follow_torchvision() {
    let mut rng = SampleRng::new(42);
    let (scale, ratio) = ((0.2, 1.0), (3.0 / 4.0, 4.0 / 3.0));
    let (mut sampled, mut square) = (0, 0);
    for _ in 0..2_000 {
        let w = rng.int_range(16, 800) as u32;
        let h = rng.int_range(16, 800) as u32;
        let b = random_resized_crop_box(w, h, scale, ratio, &mut rng);
        assert!(b.width >= 1 && b.height >= 1);
        assert!(
            b.left + b.width <= w && b.top + b.height <= h,
            "{b:?} outside {w}x{h}"
        );
        let area = f64::from(b.width * b.height) / f64::from(w * h);
        let aspect = f64::from(b.width) / f64::from(b.height);
        let central = b.left == (w - b.width) / 2 && b.top == (h - b.height) / 2;
        // Sampled boxes: area share and aspect within bounds up to rounding of w and h.
        let slack_w = 0.5 / f64::from(b.width);
        let slack_h = 0.5 / f64::from(b.height);
        let in_bounds = area >= scale.0 * (1.0 - slack_w - slack_h) - 1e-9
            && area <= scale.1 * (1.0 + slack_w + slack_h) + 1e-9
            && aspect >= ratio.0 * (1.0 - slack_w - slack_h) - 1e-9
            && aspect <= ratio.1 * (1.0 + slack_w + slack_h) + 1e-9;
        assert!(
            in_bounds || central,
            "{b:?} of {w}x{h}: area {area}, aspect {aspect}"
        );
        // For roughly square images a fallback needs 10 failed tries in a row: rare.
        if (0.75..=1.333).contains(&(f64::from(w) / f64::from(h))) && w >= 100 && h >= 100 {
            square += 1;
            sampled += usize::from(in_bounds);
        }
    }
    assert!(
        sampled * 100 >= square * 99,
        "{sampled} of {square} square images sampled"
    );

    // A 1000x100 strip cannot hold 90% of its area at an aspect in [3/4, 4/3]: after 10
    // tries torchvision falls back to the central crop clamped to the largest ratio:
    // h = 100, w = round(100 * 4/3) = 133, left = (1000 - 133) // 2 = 433.
    let b = random_resized_crop_box(1000, 100, (0.9, 1.0), ratio, &mut rng);
    assert_eq!(
        b,
        CropBox {
            top: 0,
            left: 433,
            height: 100,
            width: 133
        }
    );
    // And a tall one clamps to the smallest ratio: w = 100, h = round(100 / 0.75) = 133.
    let b = random_resized_crop_box(100, 1000, (0.9, 1.0), ratio, &mut rng);
    assert_eq!(
        b,
        CropBox {
            top: 433,
            left: 0,
            height: 133,
            width: 100
        }
    );
}

fn pil_reference(name: &str) -> image::RgbImage {
    image::open(photo_path(name)).unwrap().to_rgb8()
}

fn diff(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let max = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    let mean = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(x.abs_diff(*y)))
        .sum::<f64>()
        / a.len() as f64;
    (max, mean)
}

fn as_image8(img: image::RgbImage) -> Image8 {
    Image8 {
        width: img.width(),
        height: img.height(),
        channels: 3,
        pixels: img.into_raw(),
    }
}

#[test]
fn bicubic_resize_is_pils_and_the_training_resize_is_close() {
    // References written by tools/data/pil_reference.py (Pillow 13.0.0): PIL's decode of
    // astronaut.jpg, and its bicubic resizes of the whole image and of a crop.
    let pil_decoded = as_image8(pil_reference("astronaut_pil_decoded.png"));
    let ours_decoded = read_image(&photo_path("astronaut.jpg"), 3, DEFAULT_MAX_PIXELS).unwrap();
    let (max, mean) = diff(&ours_decoded.pixels, &pil_decoded.pixels);
    // libjpeg-turbo's decoder with PIL's settings: the same pixels.
    assert_eq!(
        max, 0,
        "decode through libjpeg-turbo differs from PIL's (mean {mean})"
    );

    let full = CropBox {
        top: 0,
        left: 0,
        height: 320,
        width: 320,
    };
    let crop = CropBox {
        top: 30,
        left: 40,
        height: 170,
        width: 200,
    };
    let cases = [
        (
            "320x320 -> 224x224",
            full,
            224,
            "astronaut_pil_bicubic_224.png",
        ),
        (
            "crop 200x170 -> 96x96",
            crop,
            96,
            "astronaut_pil_bicubic_crop.png",
        ),
    ];
    for (what, boxed, size, reference) in cases {
        let reference = pil_reference(reference);
        // Pillow's algorithm (the evaluation path): exactly PIL's bytes.
        let exact = pil_bicubic_resize(
            &supmae_data::transform::crop(&pil_decoded, boxed),
            size,
            size,
        );
        assert_eq!(
            diff(&exact.pixels, reference.as_raw()).0,
            0,
            "{what}: Pillow's resize"
        );
        // The training path's SIMD resize from the same input pixels: close to PIL.
        let resized = resized_crop(&pil_decoded, boxed, size, size).unwrap();
        let (max, mean) = diff(&resized.pixels, reference.as_raw());
        println!("resize {what} from PIL's pixels: max abs diff {max}, mean {mean:.4}");
        assert!(max <= 6 && mean < 0.3, "{what}: max {max}, mean {mean}");
        // End to end: our decode, then our resize.
        let resized = resized_crop(&ours_decoded, boxed, size, size).unwrap();
        let (max, mean) = diff(&resized.pixels, reference.as_raw());
        println!("decode + resize {what}: max abs diff {max}, mean {mean:.3}");
        assert!(mean < 1.0 && max <= 16, "{what}: max {max}, mean {mean}");
    }
}

#[test]
fn eval_transform_resizes_the_shorter_side_then_centre_crops() {
    let t = Transform::eval(224);
    // A 500x375 gradient: after Resize(256) it is 341x256, the crop starts at x = 58.
    let img = Image8 {
        width: 500,
        height: 375,
        channels: 3,
        pixels: (0..375u32)
            .flat_map(|_| {
                (0..500u32).flat_map(|x| {
                    let v = (x / 2) as u8;
                    [v, v, v]
                })
            })
            .collect(),
    };
    let (out, flip) = t.geometry(&img, &mut SampleRng::new(0)).unwrap();
    assert!(!flip);
    assert_eq!((out.width, out.height), (224, 224));
    // Column 0 of the crop is column 58 of the 341-wide resize, i.e. x ≈ 58 · 500/341 ≈ 85
    // of the source, whose value is ≈ 42.
    let v = out.pixels[3 * (112 * 224)];
    assert!((40..=45).contains(&v), "{v}");
}

#[test]
fn normalisation_matches_totensor_and_normalize() {
    let t = Transform {
        geometry: Geometry::Resize,
        hflip: 0.0,
        ..Transform::pretrain(4)
    };
    let img = Image8 {
        width: 4,
        height: 4,
        channels: 3,
        pixels: vec![128; 48],
    };
    let mut out = vec![0f32; t.output_len()];
    t.apply(&img, &mut SampleRng::new(0), &mut out).unwrap();
    for c in 0..3 {
        let want = (128.0 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        assert!(
            out[c * 16..(c + 1) * 16]
                .iter()
                .all(|v| (v - want).abs() < 1e-6)
        );
    }
    // Greyscale sources fill all three channels.
    let grey = Image8 {
        width: 4,
        height: 4,
        channels: 1,
        pixels: vec![128; 16],
    };
    t.apply(&grey, &mut SampleRng::new(0), &mut out).unwrap();
    let want = (128.0 / 255.0 - IMAGENET_MEAN[2]) / IMAGENET_STD[2];
    assert!((out[2 * 16] - want).abs() < 1e-6);
}

#[test]
fn flips_are_horizontal_and_about_half() {
    let t = Transform {
        geometry: Geometry::Resize,
        ..Transform::pretrain(2)
    };
    let img = Image8 {
        width: 2,
        height: 2,
        channels: 1,
        pixels: vec![0, 255, 0, 255],
    };
    let t = t.with_normalization(1, vec![0.0], vec![1.0]);
    let mut flipped = 0;
    for i in 0..1000 {
        let mut out = vec![0f32; 4];
        t.apply(&img, &mut SampleRng::for_sample(1, 0, i), &mut out)
            .unwrap();
        if out == [1.0, 0.0, 1.0, 0.0] {
            flipped += 1;
        } else {
            assert_eq!(out, [0.0, 1.0, 0.0, 1.0]);
        }
    }
    assert!((430..570).contains(&flipped), "{flipped}");
}

fn photo_dataset(root: &std::path::Path) -> FolderDataset {
    small_train_tree(root);
    ImageNet::train(root, &ScanOptions::default()).unwrap().0
}

fn collect<S: ImageSource>(loader: &DataLoader<S>, epoch: u64) -> Vec<HostBatch> {
    loader.epoch(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn same_seed_same_batches_whatever_the_thread_count() {
    let root = scratch("determinism");
    let ds = Arc::new(photo_dataset(&root));
    let make = |threads, seed| {
        let cfg = LoaderConfig {
            threads,
            seed,
            ..LoaderConfig::new(3)
        };
        DataLoader::new(Arc::clone(&ds), Transform::pretrain(32), cfg).unwrap()
    };
    let one = collect(&make(1, 7), 0);
    let two = collect(&make(2, 7), 0);
    assert_eq!(one.len(), 2);
    assert_eq!(
        (one[0].len(), one[1].len()),
        (3, 1),
        "last partial batch kept"
    );
    assert_eq!(one, two, "1 thread and 2 threads give identical batches");
    assert_ne!(collect(&make(2, 8), 0), one, "another seed, other crops");
    assert_ne!(collect(&make(2, 7), 1), one, "another epoch, other crops");
    let (images, labels) = one[0].to_tensors::<Flex>(&Default::default());
    assert_eq!(images.dims(), [3, 3, 32, 32]);
    assert_eq!(labels.dims(), [3]);
}

/// The loader's path (the crop box drawn from the image's size, then only that part of a
/// JPEG decoded) gives the same tensors as the transform on the fully decoded image, for
/// both crop geometries, RandAugment and RandomErasing included.
#[test]
fn decoding_only_the_crop_changes_no_output() {
    let root = scratch("part-decode");
    let ds = photo_dataset(&root);
    let mut once = Transform::pretrain(48);
    once.geometry = Geometry::RandomResizedCropOnce {
        scale: (0.08, 1.0),
        ratio: (3.0 / 4.0, 4.0 / 3.0),
    };
    for transform in [Transform::pretrain(48), Transform::finetune(48), once] {
        for index in 0..ds.len() {
            for sample in 0..6u64 {
                let mut a = vec![0f32; transform.output_len()];
                let mut b = a.clone();
                let image = ds.load(index, transform.channels).unwrap();
                transform
                    .apply(
                        &image,
                        &mut SampleRng::for_sample(3, sample, index as u64),
                        &mut a,
                    )
                    .unwrap();
                transform
                    .load_and_apply(
                        &ds,
                        index,
                        &mut SampleRng::for_sample(3, sample, index as u64),
                        &mut b,
                    )
                    .unwrap();
                assert!(
                    a == b,
                    "{:?}, sample {index}, draw {sample}",
                    transform.geometry
                );
            }
        }
    }
}

#[test]
fn the_loader_fails_on_a_bad_file_or_skips_and_reports_it() {
    let root = scratch("loader-bad");
    small_train_tree(&root);
    let jpeg = photo("chelsea");
    write(
        &root.join("train/cls_a/broken.jpg"),
        &jpeg[..jpeg.len() / 4],
    );
    let ds = Arc::new(ImageNet::train(&root, &ScanOptions::default()).unwrap().0);
    assert_eq!(ds.len(), 5);

    let cfg = LoaderConfig {
        shuffle: false,
        ..LoaderConfig::new(5)
    };
    let loader = DataLoader::new(Arc::clone(&ds), Transform::pretrain(16), cfg.clone()).unwrap();
    let err = loader.epoch(0).find_map(|b| b.err()).expect("an error");
    assert!(err.to_string().contains("broken.jpg"), "{err}");

    let cfg = LoaderConfig {
        policy: SkipPolicy::Skip,
        batch_size: 2,
        ..cfg
    };
    let loader = DataLoader::new(ds, Transform::pretrain(16), cfg).unwrap();
    let mut epoch = loader.epoch(0);
    let sizes: Vec<usize> = epoch.by_ref().map(|b| b.unwrap().len()).collect();
    assert_eq!(
        sizes,
        vec![2, 2],
        "the bad file is replaced, batches stay full"
    );
    let skipped = epoch.skipped();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].what.ends_with("broken.jpg"));
}

#[test]
fn fashion_mnist_batches_for_a_one_channel_model() {
    let ds = Arc::new(FashionMnist::embedded(fashion_mnist::Split::Test).unwrap());
    let t = Transform {
        geometry: Geometry::Resize,
        hflip: 0.0,
        ..Transform::pretrain(28)
    }
    .with_normalization(1, vec![fashion_mnist::MEAN], vec![fashion_mnist::STD]);
    let cfg = LoaderConfig {
        drop_last: true,
        ..LoaderConfig::new(256)
    };
    let loader = DataLoader::new(ds, t, cfg).unwrap();
    assert_eq!(loader.num_batches(), 7);
    let batches = collect(&loader, 0);
    assert_eq!(batches.len(), 7);
    assert!(
        batches
            .iter()
            .all(|b| b.len() == 256 && b.channels == 1 && b.size == 28)
    );
    let mean = batches[0].images.iter().sum::<f32>() / batches[0].images.len() as f32;
    assert!(mean.abs() < 0.3, "normalised mean {mean}");
}

#[test]
fn bad_settings_are_errors() {
    let ds = Arc::new(FashionMnist::embedded(fashion_mnist::Split::Test).unwrap());
    let zero = LoaderConfig::new(0);
    assert!(DataLoader::new(Arc::clone(&ds), Transform::pretrain(28), zero).is_err());
    let bad = Transform {
        hflip: 2.0,
        ..Transform::pretrain(28)
    };
    assert!(DataLoader::new(ds, bad, LoaderConfig::new(4)).is_err());
}
