//! The evaluation input pipeline against torchvision's, on 100 photos in many layouts
//! (`tools/data/pil_eval_reference.py`): JPEG (baseline, progressive, 4:4:4, greyscale,
//! CMYK) and PNG (RGB, RGBA, palette), 24-120 px, aspect ratios from 1:3 to 3:1.
//!
//! Every eval input equals torchvision's `Resize(int(size / 0.875), BICUBIC)` +
//! `CenterCrop(size)` of `Image.open(f).convert('RGB')` to the grey level (JPEGs decode
//! through libjpeg-turbo's code, as PIL's do: `supmae_data::decode::JPEG_DECODER`), and a
//! random 1000-class ViT gives the same arg-max on both. Nothing here skips.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::prelude::*;
use supmae_data::{DEFAULT_MAX_PIXELS, SampleRng, Transform, read_image};
use supmae_model::VitConfig;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../supmae-data/tests/data")
}

fn names(index: &Path) -> Vec<String> {
    std::fs::read_to_string(index)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Our eval crops of `files` at `size`, and the reference crops.
fn crops(files: &[PathBuf], size: u32, expected: &Path) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let want = std::fs::read(expected).unwrap();
    let per = (size * size * 3) as usize;
    assert_eq!(want.len(), per * files.len());
    let t = Transform::eval(size);
    let ours = files
        .iter()
        .map(|f| {
            let img = read_image(f, 3, DEFAULT_MAX_PIXELS).unwrap();
            let (out, flip) = t.geometry(&img, &mut SampleRng::new(0)).unwrap();
            assert!(!flip);
            assert_eq!((out.width, out.height, out.channels), (size, size, 3));
            out.pixels
        })
        .collect();
    (ours, want.chunks_exact(per).map(<[u8]>::to_vec).collect())
}

#[test]
fn eval_inputs_equal_torchvisions_to_the_grey_level() {
    let eval = dir().join("eval");
    let list = names(&eval.join("index.txt"));
    assert_eq!(list.len(), 100);
    let files: Vec<PathBuf> = list.iter().map(|n| eval.join(n)).collect();
    let (ours, want) = crops(&files, 32, &eval.join("expected_32.u8"));
    assert_eq!(supmae_data::decode::JPEG_DECODER, "libjpeg-turbo");
    let mut worst = 0u8;
    for ((name, a), b) in list.iter().zip(&ours).zip(&want) {
        let max = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
        assert_eq!(
            max, 0,
            "{name}: eval input differs from torchvision's by {max} levels"
        );
        worst = worst.max(max);
    }
    println!("largest difference over 100 images: {worst} grey levels");
    let photos = dir().join("photos");
    let list = names(&eval.join("index_112.txt"));
    let files: Vec<PathBuf> = list.iter().map(|n| photos.join(n)).collect();
    let (ours, want) = crops(&files, 112, &eval.join("expected_112.u8"));
    for ((name, a), b) in list.iter().zip(&ours).zip(&want) {
        assert!(a == b, "{name} at 112 px differs from torchvision's");
    }
}

#[test]
fn a_random_1000_class_vit_gives_torchvisions_arg_max_on_100_images() {
    type B = Flex;
    let device = Default::default();
    let eval = dir().join("eval");
    let list = names(&eval.join("index.txt"));
    let files: Vec<PathBuf> = list.iter().map(|n| eval.join(n)).collect();
    let (ours, want) = crops(&files, 32, &eval.join("expected_32.u8"));
    let model = VitConfig::new()
        .with_img_size(32)
        .with_patch_size(8)
        .with_embed_dim(64)
        .with_depth(2)
        .with_num_heads(4)
        .with_num_classes(1000)
        .with_head_init_std(0.02)
        .init_seeded::<B>(7, &device)
        .unwrap();
    // ToTensor + Normalize, as the eval transform ends.
    let t = Transform::eval(32);
    let tensor = |crops: &[Vec<u8>]| {
        let mut values = Vec::new();
        for c in crops {
            let img = supmae_data::Image8 {
                width: 32,
                height: 32,
                channels: 3,
                pixels: c.clone(),
            };
            let mut out = vec![0f32; t.output_len()];
            t.apply(&img, &mut SampleRng::new(0), &mut out).unwrap();
            values.extend(out);
        }
        Tensor::<B, 4>::from_data(TensorData::new(values, [crops.len(), 3, 32, 32]), &device)
    };
    let arg_max = |x: Tensor<B, 4>| -> Vec<i64> {
        model
            .forward(x)
            .unwrap()
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap()
    };
    let (a, b) = (arg_max(tensor(&ours)), arg_max(tensor(&want)));
    let classes: std::collections::BTreeSet<i64> = b.iter().copied().collect();
    assert!(
        classes.len() > 5,
        "the random ViT should not answer one class: {classes:?}"
    );
    for ((name, x), y) in list.iter().zip(&a).zip(&b) {
        assert_eq!(x, y, "{name}: arg-max {x}, torchvision's input gives {y}");
    }
}
