//! The embedding / classification API on official-format files (tiny fixtures) and on
//! checkpoints written by our learners.

use std::path::PathBuf;

use supmae::burn::backend::Flex;
use supmae::{EmbedError, Embedder};
use supmae_model::checkpoint::StateDict;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/parity/fixtures")
        .join(rel)
}

fn photos() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../supmae-data/tests/data/photos");
    [
        "astronaut.jpg",
        "coffee.jpg",
        "chelsea.jpg",
        "rocket.jpg",
        "cmyk.jpg",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("supmae-embed-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_fine_tuned_checkpoint_embeds_and_classifies_in_batches() {
    let mut e =
        Embedder::<Flex>::load(fixture("tiny/vit_tiny_gp.pth"), &Default::default()).unwrap();
    assert!(
        e.describe().contains("fine-tuned classifier (global pool)"),
        "{}",
        e.describe()
    );
    let paths = photos();
    let all = e.embed_paths(&paths).unwrap();
    assert_eq!(all.len(), 5);
    assert!(
        all.iter()
            .all(|f| f.len() == 64 && f.iter().all(|v| v.is_finite()))
    );
    assert_ne!(all[0], all[1]);
    // Batching does not change the features.
    e.batch_size = 2;
    let batched = e.embed_paths(&paths).unwrap();
    for (a, b) in all.iter().zip(&batched) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5);
        }
    }
    let top = e.classify_paths(&paths, 3).unwrap();
    assert_eq!(top.len(), 5);
    for t in &top {
        assert_eq!(t.len(), 3);
        assert!(t[0].probability >= t[1].probability && t[1].probability >= t[2].probability);
        assert!(t.iter().map(|p| p.probability).sum::<f32>() <= 1.0 + 1e-5);
        assert_eq!(t[0].label, format!("class {}", t[0].index));
    }
    // A file that is not an image is a typed error naming it.
    let bad = scratch("bad").join("not-an-image.jpg");
    std::fs::write(&bad, b"hello").unwrap();
    let err = e.embed_paths(&[&bad]).unwrap_err();
    assert!(
        matches!(err, EmbedError::Data(_)) && err.to_string().contains("not-an-image"),
        "{err}"
    );
}

#[test]
fn an_encoder_only_checkpoint_embeds_but_cannot_classify() {
    let dir = scratch("encoder");
    let mut sd = StateDict::from_file(fixture("tiny/supmae_tiny.pth")).unwrap();
    sd.retain(|k| !k.starts_with("cls_head.") && !k.starts_with("decoder_") && k != "mask_token");
    let file = dir.join("mae_encoder.safetensors");
    sd.write_safetensors(&file).unwrap();
    let e = Embedder::<Flex>::load(&file, &Default::default()).unwrap();
    assert!(e.describe().contains("encoder only"), "{}", e.describe());
    let f = e.embed_paths(&photos()[..2]).unwrap();
    assert_eq!(f[0].len(), 64);
    let err = e.classify_paths(&photos()[..1], 5).unwrap_err();
    assert!(matches!(err, EmbedError::NoClassifier(_)), "{err}");
    // A SupMAE pre-training file classifies through its branch.
    let e = Embedder::<Flex>::load(fixture("tiny/supmae_tiny.pth"), &Default::default()).unwrap();
    assert_eq!(e.classify_paths(&photos()[..1], 2).unwrap()[0].len(), 2);
    assert_eq!(e.classes().unwrap().len(), 10);
}

#[test]
fn a_tensor_of_the_wrong_shape_is_a_clear_error() {
    let dir = scratch("shape");
    let sd = StateDict::from_file(fixture("tiny/vit_tiny_gp.pth")).unwrap();
    let entries = sd.entries_f32().unwrap().into_iter().map(|(k, shape, v)| {
        if k == "blocks.1.attn.qkv.weight" {
            (k, vec![96, 64], v[..96 * 64].to_vec())
        } else {
            (k, shape, v)
        }
    });
    let file = dir.join("bad.safetensors");
    StateDict::from_entries("bad", entries)
        .write_safetensors(&file)
        .unwrap();
    let err = Embedder::<Flex>::load(&file, &Default::default())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("blocks.1.attn.qkv.weight") && msg.contains("[96, 64]"),
        "{msg}"
    );
}
