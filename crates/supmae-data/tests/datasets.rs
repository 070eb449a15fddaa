//! Folder trees, ImageNet layouts, Fashion-MNIST and decoding, built at test time.

mod common;

use std::path::Path;

use common::*;
use supmae_data::*;

fn labels_by_file(ds: &FolderDataset) -> Vec<(String, usize)> {
    ds.samples()
        .iter()
        .map(|(p, l)| (p.file_name().unwrap().to_string_lossy().into_owned(), *l))
        .collect()
}

#[test]
fn class_indices_follow_sorted_folder_names_recursively_any_case() {
    let root = scratch("classes");
    small_train_tree(&root);
    let (ds, report) = ImageNet::train(&root, &ScanOptions::default()).unwrap();
    assert_eq!(ds.classes(), ["cls_a", "cls_b"]);
    assert_eq!(report.ignored_files, 1, "notes.txt is ignored");
    assert!(report.skipped.is_empty());
    assert_eq!(
        labels_by_file(&ds),
        vec![
            ("astronaut.jpg".into(), 0),
            ("chelsea.Jpeg".into(), 0),
            ("rocket.jpeg".into(), 1),
            ("coffee.JPG".into(), 1),
        ]
    );
    assert_eq!(ds.class_counts(), vec![2, 2]);
}

#[test]
fn decodes_every_variant_by_content() {
    let root = scratch("variants");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("grey.jpg", grey_jpeg()),
        ("png_named.JPEG", png_bytes()),
        ("alpha.png", rgba_png()),
        ("sixteen.png", rgb16_png()),
        ("palette.png", palette_png()),
        ("cmyk.jpg", std::fs::read(photo_path("cmyk.jpg")).unwrap()),
    ];
    for (name, bytes) in &files {
        let path = root.join(name);
        write(&path, bytes);
        let rgb =
            read_image(&path, 3, DEFAULT_MAX_PIXELS).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rgb.channels, 3, "{name}");
        assert_eq!(
            rgb.pixels.len(),
            (rgb.width * rgb.height * 3) as usize,
            "{name}"
        );
        let grey = read_image(&path, 1, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(grey.channels, 1);
        assert_eq!(
            grey.pixels.len(),
            (grey.width * grey.height) as usize,
            "{name}"
        );
    }
    // Greyscale becomes three equal channels.
    let grey = read_image(&root.join("grey.jpg"), 3, DEFAULT_MAX_PIXELS).unwrap();
    assert!(grey.pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    // Palette entries expand to their colours.
    let pal = read_image(&root.join("palette.png"), 3, DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!((pal.width, pal.height), (8, 4));
    assert_eq!(&pal.pixels[..3], &[255, 0, 0]);
    assert_eq!(&pal.pixels[7 * 3..8 * 3], &[0, 0, 255]);
    // 16-bit samples scale back to the 8-bit originals; alpha is dropped.
    let original = rgb_image().into_raw();
    let wide = read_image(&root.join("sixteen.png"), 3, DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!(wide.pixels, original);
    let alpha = read_image(&root.join("alpha.png"), 3, DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!(alpha.pixels, original);
    // A CMYK JPEG comes out as a plausible RGB photo of the same cat (not inverted).
    let cmyk = read_image(&root.join("cmyk.jpg"), 3, DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!(
        (cmyk.width, cmyk.height),
        (rgb_image().width(), rgb_image().height())
    );
    let mean_diff = cmyk
        .pixels
        .iter()
        .zip(&original)
        .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs() as f64)
        .sum::<f64>()
        / original.len() as f64;
    assert!(
        mean_diff < 40.0,
        "CMYK decode differs from the RGB photo by {mean_diff}"
    );
}

#[test]
fn bad_files_are_typed_errors_naming_the_file() {
    let root = scratch("bad-files");
    let check = |name: &str, bytes: &[u8], expect: fn(&DataError) -> bool| {
        let path = root.join(name);
        write(&path, bytes);
        let err = read_image(&path, 3, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(expect(&err), "{name}: unexpected {err:?}");
        assert!(
            err.to_string().contains(name),
            "{name}: error does not name the file: {err}"
        );
    };
    check("empty.jpg", b"", |e| matches!(e, DataError::Empty { .. }));
    let jpeg = photo("astronaut");
    check("truncated.jpg", &jpeg[..jpeg.len() / 3], |e| {
        matches!(e, DataError::Decode { .. })
    });
    check("text.jpg", b"hello, I am not a JPEG", |e| {
        matches!(e, DataError::NotAnImage { .. })
    });
    check("huge.ppm", &huge_ppm(), |e| {
        matches!(e, DataError::TooLarge { .. })
    });
    let err = read_image(&root.join("absent.jpg"), 3, DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
}

#[test]
fn empty_class_folders_fail_or_keep_their_index_when_skipped() {
    let root = scratch("empty-class");
    small_train_tree(&root);
    std::fs::create_dir_all(root.join("train/cls_0_empty")).unwrap();
    let err = ImageNet::train(&root, &ScanOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::EmptyClass { .. }), "{err}");
    assert!(err.to_string().contains("cls_0_empty"));

    let skip = ScanOptions::default().with_policy(SkipPolicy::Skip);
    let (ds, report) = ImageNet::train(&root, &skip).unwrap();
    assert_eq!(ds.classes(), ["cls_0_empty", "cls_a", "cls_b"]);
    assert_eq!(ds.class_counts(), vec![0, 2, 2], "indices do not shift");
    assert_eq!(report.skipped.len(), 1);
    assert!(report.skipped[0].what.contains("cls_0_empty"));
}

#[cfg(unix)]
#[test]
fn symlink_loops_and_dangling_links_are_reported() {
    let root = scratch("symlinks");
    small_train_tree(&root);
    std::os::unix::fs::symlink(root.join("train/cls_a"), root.join("train/cls_a/loop")).unwrap();
    let err = ImageNet::train(&root, &ScanOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::SymlinkLoop { .. }), "{err}");

    let skip = ScanOptions::default().with_policy(SkipPolicy::Skip);
    let (ds, report) = ImageNet::train(&root, &skip).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(report.skipped.len(), 1);

    std::fs::remove_file(root.join("train/cls_a/loop")).unwrap();
    std::os::unix::fs::symlink(
        root.join("nowhere.jpg"),
        root.join("train/cls_b/dangling.jpg"),
    )
    .unwrap();
    let err = ImageNet::train(&root, &ScanOptions::default()).unwrap_err();
    assert!(err.to_string().contains("dangling.jpg"), "{err}");
}

#[test]
fn missing_splits_are_errors() {
    let root = scratch("missing-split");
    std::fs::create_dir_all(&root).unwrap();
    let err = ImageNet::train(&root, &ScanOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }) && err.to_string().contains("train"));
    let err = ImageNet::val(&root, &ScanOptions::default()).unwrap_err();
    assert!(err.to_string().contains("val"), "{err}");
    let err = FolderDataset::scan(root.join("nope"), &ScanOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }));
}

/// `val/` with 4 flat files named like ImageNet's, labelled cls_b, cls_a, cls_b, cls_a.
fn flat_val(root: &Path) {
    for (i, name) in PHOTOS.iter().enumerate() {
        write(
            &root.join(format!("val/ILSVRC2012_val_{:08}.JPEG", i + 1)),
            &photo(name),
        );
    }
}

#[test]
fn all_three_val_layouts_give_the_same_labels() {
    let expected = vec![
        ("ILSVRC2012_val_00000001.JPEG".to_string(), 1),
        ("ILSVRC2012_val_00000002.JPEG".to_string(), 0),
        ("ILSVRC2012_val_00000003.JPEG".to_string(), 1),
        ("ILSVRC2012_val_00000004.JPEG".to_string(), 0),
    ];
    let sorted = |mut v: Vec<(String, usize)>| {
        v.sort();
        v
    };

    // 1. Class sub-folders.
    let root = scratch("val-folders");
    small_train_tree(&root);
    for (i, name) in PHOTOS.iter().enumerate() {
        let class = if i % 2 == 0 { "cls_b" } else { "cls_a" };
        write(
            &root.join(format!("val/{class}/ILSVRC2012_val_{:08}.JPEG", i + 1)),
            &photo(name),
        );
    }
    assert_eq!(
        ImageNet::detect_val_layout(&root).unwrap(),
        ValLayout::ClassFolders
    );
    let (ds, _) = ImageNet::val(&root, &ScanOptions::default()).unwrap();
    assert_eq!(sorted(labels_by_file(&ds)), expected);

    // 2. Flat folder + one wnid per line.
    let root = scratch("val-labels");
    small_train_tree(&root);
    flat_val(&root);
    write(
        &root.join("validation_labels.txt"),
        b"cls_b\ncls_a\ncls_b\ncls_a\n",
    );
    assert!(matches!(
        ImageNet::detect_val_layout(&root).unwrap(),
        ValLayout::LabelsFile(_)
    ));
    let (ds, _) = ImageNet::val(&root, &ScanOptions::default()).unwrap();
    assert_eq!(labels_by_file(&ds), expected);

    // 3. Kaggle's CSV (rows in any order; the first token of PredictionString is the wnid).
    let root = scratch("val-kaggle");
    small_train_tree(&root);
    flat_val(&root);
    write(
        &root.join("LOC_val_solution.csv"),
        b"ImageId,PredictionString\n\
          ILSVRC2012_val_00000003,cls_b 10 20 30 40 cls_b 1 2 3 4\n\
          ILSVRC2012_val_00000001,cls_b 1 2 3 4\n\
          ILSVRC2012_val_00000004,cls_a 5 6 7 8\n\
          ILSVRC2012_val_00000002,cls_a 5 6 7 8\n",
    );
    let (ds, _) = ImageNet::val(&root, &ScanOptions::default()).unwrap();
    assert_eq!(labels_by_file(&ds), expected);
}

#[test]
fn labels_files_that_do_not_fit_are_errors() {
    let root = scratch("val-bad-labels");
    small_train_tree(&root);
    flat_val(&root);
    write(
        &root.join("validation_labels.txt"),
        b"cls_b\ncls_a\ncls_b\n",
    );
    let err = ImageNet::val(&root, &ScanOptions::default()).unwrap_err();
    assert!(err.to_string().contains("has 3 labels but"), "{err}");

    write(
        &root.join("validation_labels.txt"),
        b"cls_b\ncls_a\ncls_b\nn99999999\n",
    );
    let err = ImageNet::val(&root, &ScanOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("line 4: unknown class `n99999999`"),
        "{err}"
    );
}

#[test]
fn without_a_train_split_labels_use_the_imagenet_1k_index() {
    let root = scratch("val-1k");
    flat_val(&root);
    write(
        &root.join("validation_labels.txt"),
        b"n01440764\nn02123045\nn15075141\nn02123045\n",
    );
    let (ds, _) = ImageNet::val(&root, &ScanOptions::default()).unwrap();
    let labels: Vec<usize> = ds.samples().iter().map(|s| s.1).collect();
    assert_eq!(labels, vec![0, 281, 999, 281]);
    assert_eq!(imagenet_class_name(labels[1]), Some("tabby, tabby cat"));
}

#[test]
fn embedded_fashion_mnist_needs_no_files() {
    let train = FashionMnist::embedded(fashion_mnist::Split::Train).unwrap();
    let test = FashionMnist::embedded(fashion_mnist::Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (10_000, 2_000));
    assert_eq!(train.classes().len(), 10);
    assert_eq!(train.native_channels(), 1);
    let mut counts = [0usize; 10];
    for &l in train.labels() {
        counts[usize::from(l)] += 1;
    }
    assert!(
        counts.iter().all(|&c| (900..1100).contains(&c)),
        "{counts:?}"
    );
    let img = train.load(0, 1).unwrap();
    assert_eq!((img.width, img.height, img.channels), (28, 28, 1));
    assert!(img.pixels.iter().any(|&p| p > 0));
}

#[test]
fn full_fashion_mnist_loads_from_the_debian_package_when_installed() {
    if !Path::new(fashion_mnist::DEBIAN_PATH).is_dir() {
        eprintln!(
            "skipped: {} not present (apt-get install dataset-fashion-mnist)",
            fashion_mnist::DEBIAN_PATH
        );
        return;
    }
    let train = FashionMnist::debian(fashion_mnist::Split::Train).unwrap();
    let test = FashionMnist::debian(fashion_mnist::Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    // The embedded subset is the head of the full set.
    let embedded = FashionMnist::embedded(fashion_mnist::Split::Train).unwrap();
    assert_eq!(embedded.pixels(9_999), train.pixels(9_999));
    assert_eq!(embedded.labels(), &train.labels()[..10_000]);
}

#[test]
fn malformed_idx_files_are_errors() {
    let root = scratch("idx");
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
    images.extend(vec![7u8; 2 * 784]);
    let labels = vec![0, 0, 8, 1, 0, 0, 0, 2, 3, 4];
    write(&root.join("train-images-idx3-ubyte"), &images);
    write(&root.join("train-labels-idx1-ubyte"), &labels);
    let ok = FashionMnist::from_dir(&root, fashion_mnist::Split::Train).unwrap();
    assert_eq!(ok.len(), 2);

    write(
        &root.join("train-images-idx3-ubyte"),
        &images[..images.len() - 5],
    );
    let err = FashionMnist::from_dir(&root, fashion_mnist::Split::Train).unwrap_err();
    assert!(err.to_string().contains("header declares"), "{err}");

    let mut bad_magic = images.clone();
    bad_magic[2] = 0x0d;
    write(&root.join("train-images-idx3-ubyte"), &bad_magic);
    let err = FashionMnist::from_dir(&root, fashion_mnist::Split::Train).unwrap_err();
    assert!(err.to_string().contains("bad magic"), "{err}");

    write(&root.join("train-images-idx3-ubyte"), &images);
    write(
        &root.join("train-labels-idx1-ubyte"),
        &[0, 0, 8, 1, 0, 0, 0, 1, 3],
    );
    let err = FashionMnist::from_dir(&root, fashion_mnist::Split::Train).unwrap_err();
    assert!(err.to_string().contains("1 labels for 2 images"), "{err}");
}

#[test]
fn check_reports_classes_counts_and_every_bad_file() {
    let root = scratch("check");
    small_train_tree(&root);
    write(&root.join("train/cls_a/zero.jpg"), b"");
    write(
        &root.join("train/cls_b/fake.png"),
        b"<html>not an image</html>",
    );
    let report = check_dataset(&root, DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!(report.splits.len(), 1);
    let train = &report.splits[0];
    assert_eq!(train.classes, ["cls_a", "cls_b"]);
    assert_eq!(train.counts, vec![3, 3]);
    assert_eq!(report.bad_count(), 2);
    let text = report.to_string();
    assert!(
        text.contains("zero.jpg") && text.contains("fake.png"),
        "{text}"
    );
    assert!(text.contains("2 classes, 6 images"), "{text}");
}
