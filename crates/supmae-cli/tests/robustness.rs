//! `supmae eval --robustness` against PyTorch on a tree of real photos
//! (`tools/parity/robustness.py`, fixtures in `tools/parity/fixtures/robustness/`).
//!
//! The tree is the 100 eval photos of `supmae-data/tests/data/eval/` (JPEG baseline,
//! progressive, 4:4:4, grey and CMYK; PNG RGB, RGBA and palette) placed in the standard
//! layouts of ImageNet-A, -R, -Sketch and three ImageNet-C folders; the model is a random
//! 1000-class ViT saved as an official `.pth`. PyTorch's top-1 on each dataset (torchvision's
//! ImageFolder and eval transform, the 200-class masking of -A and -R) must come out exactly,
//! and so must the mCE and the score computed from them.
//!
//! JPEGs decode as PIL's because supmae-data decodes them with libjpeg-turbo's code on every
//! native target; nothing here is ignored.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    repo().join("tools/parity/fixtures/robustness")
}

/// The tree of `tree.tsv` (`<dataset>\t<wnid>\t<photo>`), copied under `root`.
fn build_tree(root: &Path) {
    let photos = repo().join("crates/supmae-data/tests/data/eval");
    let rows = std::fs::read_to_string(fixtures().join("tree.tsv")).unwrap();
    let mut n = 0;
    for line in rows.lines().filter(|l| !l.is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 3, "tree.tsv: {line}");
        let dir = root.join(cols[0]).join(cols[1]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(photos.join(cols[2]), dir.join(cols[2])).unwrap();
        n += 1;
    }
    assert_eq!(n, 100);
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        "{what}: ours {a}, PyTorch {b}"
    );
}

#[test]
fn robustness_top1_equals_pytorch_on_a_tree_of_real_photos() {
    let root = std::env::temp_dir().join(format!("supmae-robust-parity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    build_tree(&root);
    let out = Command::new(env!("CARGO_BIN_EXE_supmae"))
        .arg("eval")
        .arg("--checkpoint")
        .arg(fixtures().join("vit.pth"))
        .arg("--model")
        .arg(fixtures().join("model.json"))
        .arg("--robustness")
        .arg(&root)
        .args(["--batch-size", "16", "--backend", "flex"])
        .output()
        .expect("run supmae");
    let _ = std::fs::remove_dir_all(&root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .chain(stderr.lines())
        .rev()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no JSON report in:\n{stdout}\n{stderr}"));
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
            .unwrap();
    let want = &expected["datasets"];
    let top1 = |v: &Value| (v["top1"].as_f64().unwrap(), v["images"].as_u64().unwrap());
    for (key, name) in [
        ("imagenet_a", "imagenet-a"),
        ("imagenet_r", "imagenet-r"),
        ("imagenet_sketch", "imagenet-sketch"),
    ] {
        let (ours, images) = top1(&report[key]);
        let (theirs, n) = top1(&want[name]);
        assert_eq!(images, n, "{name}: images");
        close(ours, theirs, name);
        println!("{name}: top-1 {ours:.2}% = PyTorch's {theirs:.2}% on {n} images");
    }
    let c = &report["imagenet_c"];
    let mut folders = 0;
    for row in c["corruptions"].as_array().unwrap() {
        let corruption = row["name"].as_str().unwrap();
        for pair in row["severities"].as_array().unwrap() {
            let severity = pair[0].as_u64().unwrap();
            let name = format!("imagenet-c/{corruption}/{severity}");
            let (ours, images) = top1(&pair[1]);
            let (theirs, n) = top1(&want[name.as_str()]);
            assert_eq!(images, n, "{name}: images");
            close(ours, theirs, &name);
            folders += 1;
        }
        close(
            row["ce"].as_f64().unwrap(),
            expected["ce"][corruption].as_f64().unwrap(),
            corruption,
        );
    }
    assert_eq!(folders, 3, "the three ImageNet-C folders of the tree");
    close(
        c["mce"].as_f64().unwrap(),
        expected["mce"].as_f64().unwrap(),
        "mCE",
    );
    close(
        report["score"].as_f64().unwrap(),
        expected["score"].as_f64().unwrap(),
        "score",
    );
}
