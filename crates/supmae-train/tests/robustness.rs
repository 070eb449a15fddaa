//! Robustness evaluation on trees built here: solid-colour images in wnid folders, read
//! through the real loaders, and a stand-in classifier whose logit for class `j` is highest
//! for the colour `40·j`. That makes every prediction known in advance, so the tests check
//! the subset masking of ImageNet-A / -R, top-1, the mCE arithmetic against a hand
//! computation, and the score.

use std::path::Path;

use burn::backend::Flex;
use burn::prelude::*;
use supmae_data::Transform;
use supmae_train::TrainError;
use supmae_train::robustness::{
    ClassSubsets, RobustnessOptions, RobustnessRoot, evaluate_robustness, score,
};

type B = Flex;

/// The classifier's classes: five wnids; class `j` is the colour with red `40·j`.
const CLASSES: [&str; 5] = [
    "n01440764",
    "n01443537",
    "n01484850",
    "n01491361",
    "n01494475",
];

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("supmae-robust-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `dir/<wnid>/<i>.png`, a 20x20 image of red `red`, for each `(wnid, red)`.
fn images(dir: &Path, items: &[(&str, u8)]) {
    for (i, (wnid, red)) in items.iter().enumerate() {
        let folder = dir.join(wnid);
        std::fs::create_dir_all(&folder).unwrap();
        image::RgbImage::from_pixel(20, 20, image::Rgb([*red, 128, 7]))
            .save(folder.join(format!("{i}.png")))
            .unwrap();
    }
}

/// Logits `-(red - 40·j)^2` from the images' mean red (the transform leaves pixels in
/// [0, 1]: no normalisation).
///
/// # Shapes
/// - `x`: `[N, 3, H, W]`; output `[N, 5]`.
fn classify(x: Tensor<B, 4>) -> supmae_train::error::Result<Tensor<B, 2>> {
    let [n, _, h, w] = x.dims();
    let red = x
        .narrow(1, 0, 1)
        .reshape([n, h * w])
        .mean_dim(1)
        .mul_scalar(255.0);
    let centres =
        Tensor::<B, 1>::from_floats([0.0, 40.0, 80.0, 120.0, 160.0], &red.device()).reshape([1, 5]);
    Ok((red - centres).powf_scalar(2.0).neg())
}

fn options() -> RobustnessOptions {
    RobustnessOptions {
        batch_size: 3,
        threads: 1,
        transform: Transform::eval(16).with_normalization(3, vec![0.0; 3], vec![1.0; 3]),
    }
}

fn classes() -> Vec<String> {
    CLASSES.iter().map(|c| c.to_string()).collect()
}

/// Three wnids stand in for ImageNet-A's 200 (and R's).
fn subsets() -> ClassSubsets {
    ClassSubsets {
        a: vec![CLASSES[1].into(), CLASSES[3].into(), CLASSES[4].into()],
        r: vec![CLASSES[0].into(), CLASSES[2].into(), CLASSES[3].into()],
    }
}

#[test]
fn a_and_r_restrict_the_logits_to_their_classes_and_c_gives_the_hand_computed_mce() {
    let root = scratch("all");
    // ImageNet-A: [1: 40 -> 1 right], [3: 120 -> 3 right; 95 -> 2 unrestricted (wrong), 3
    // among {1, 3, 4} (right)], [4: 0 -> 0 unrestricted, 1 among {1, 3, 4} (wrong)].
    images(
        &root.join("imagenet-a"),
        &[
            (CLASSES[1], 40),
            (CLASSES[3], 120),
            (CLASSES[3], 95),
            (CLASSES[4], 0),
        ],
    );
    // ImageNet-R: classes {0, 2, 3}: [0: 30 -> 1 unrestricted, 0 among them (right)],
    // [2: 80 right], [3: 150 -> 4 unrestricted, 3 among them (right)], [3: 10 -> 0 (wrong)].
    images(
        &root.join("imagenet-r"),
        &[
            (CLASSES[0], 30),
            (CLASSES[2], 80),
            (CLASSES[3], 150),
            (CLASSES[3], 10),
        ],
    );
    // Sketch: all five classes, no masking: 3 of 5 right.
    images(
        &root.join("imagenet-sketch").join("sketch"),
        &[
            (CLASSES[0], 0),
            (CLASSES[1], 40),
            (CLASSES[2], 85),
            (CLASSES[3], 150),
            (CLASSES[4], 100),
        ],
    );
    // ImageNet-C: gaussian_noise severity 1 = 2 of 2 right, severity 2 = 1 of 2; fog
    // severity 1 = 1 of 4. An extra folder (not one of the 15) is left alone.
    let c = root.join("imagenet-c");
    images(
        &c.join("gaussian_noise/1"),
        &[(CLASSES[0], 0), (CLASSES[1], 40)],
    );
    images(
        &c.join("gaussian_noise/2"),
        &[(CLASSES[2], 80), (CLASSES[3], 0)],
    );
    images(
        &c.join("fog/1"),
        &[
            (CLASSES[0], 160),
            (CLASSES[1], 40),
            (CLASSES[2], 0),
            (CLASSES[4], 0),
        ],
    );
    images(&c.join("speckle_noise/1"), &[(CLASSES[0], 0)]);

    let found = RobustnessRoot::find(&root).unwrap();
    assert_eq!(found.sketch, Some(root.join("imagenet-sketch/sketch")));
    let mut heard = Vec::new();
    let report = evaluate_robustness::<B>(
        &found,
        &classes(),
        &subsets(),
        &options(),
        &Default::default(),
        classify,
        |name, top1| heard.push((name.to_string(), top1.images)),
    )
    .unwrap();

    let a = report.imagenet_a.unwrap();
    assert_eq!((a.top1, a.images, a.classes), (75.0, 4, 3));
    let r = report.imagenet_r.unwrap();
    assert_eq!((r.top1, r.images, r.classes), (75.0, 4, 3));
    let s = report.imagenet_sketch.unwrap();
    assert_eq!((s.top1, s.images, s.classes), (60.0, 5, 5));

    let c = report.imagenet_c.unwrap();
    assert!(!c.complete);
    let names: Vec<&str> = c.corruptions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["gaussian_noise", "fog"]);
    let noise = &c.corruptions[0];
    assert_eq!(noise.severities.len(), 2);
    assert_eq!(
        (noise.severities[0].1.top1, noise.severities[1].1.top1),
        (100.0, 50.0)
    );
    // By hand: errors 0% and 50% -> 25%, over AlexNet's 88.6428% -> 28.20308; fog: 75% over
    // 81.9324% -> 91.53888; mCE = their mean.
    assert!((noise.error - 25.0).abs() < 1e-9);
    assert!((noise.ce - 28.203_080_227_6).abs() < 1e-6, "{}", noise.ce);
    assert!((c.corruptions[1].ce - 91.538_878_392_4).abs() < 1e-6);
    assert!((c.mce - 59.870_979_310_0).abs() < 1e-6, "{}", c.mce);

    let want = score(c.mce, 75.0, 75.0, 60.0);
    assert!((report.score.unwrap() - want).abs() < 1e-12);
    assert!((want - (100.0 - 59.870_979_31 + 210.0) / 4.0).abs() < 1e-6);

    let names: Vec<&str> = heard.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "imagenet-a",
            "imagenet-r",
            "imagenet-sketch",
            "imagenet-c/gaussian_noise/1",
            "imagenet-c/gaussian_noise/2",
            "imagenet-c/fog/1"
        ]
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_partial_root_has_no_score_and_bad_trees_are_clear_errors() {
    let root = scratch("partial");
    images(&root.join("imagenet-a"), &[(CLASSES[1], 40)]);
    let found = RobustnessRoot::find(&root).unwrap();
    let report = evaluate_robustness::<B>(
        &found,
        &classes(),
        &subsets(),
        &options(),
        &Default::default(),
        classify,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(report.imagenet_a.unwrap().top1, 100.0);
    assert!(report.imagenet_c.is_none() && report.score.is_none());

    // A folder of a class outside the subset.
    images(&root.join("imagenet-a"), &[(CLASSES[0], 0)]);
    let err = evaluate_robustness::<B>(
        &found,
        &classes(),
        &subsets(),
        &options(),
        &Default::default(),
        classify,
        |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Data(_)), "{err}");
    assert!(err.to_string().contains(CLASSES[0]), "{err}");

    // Nothing to evaluate.
    let empty = scratch("empty");
    let err = RobustnessRoot::find(&empty).unwrap_err().to_string();
    assert!(err.contains("imagenet-c/"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&empty);
}
