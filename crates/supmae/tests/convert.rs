//! `convert` round trips: official-format files to our native format and back to identical
//! state dicts, and our checkpoints to official key names.

use std::path::{Path, PathBuf};

use supmae::burn::backend::Flex;
use supmae::convert;
use supmae_model::checkpoint::StateDict;
use supmae_model::{Flavour, inspect};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/parity/fixtures")
        .join(rel)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("supmae-convert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_identical(a: &StateDict, b: &StateDict) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for key in a.keys() {
        let (va, sa) = a.read_f32(key).unwrap();
        let (vb, sb) = b.read_f32(key).unwrap();
        assert_eq!(sa, sb, "{key}");
        assert_eq!(va, vb, "{key}");
    }
}

fn round_trip(input: &Path, dir: &Path) -> StateDict {
    let dev = Default::default();
    let native = dir.join("native.ckpt");
    let back = dir.join("back.safetensors");
    convert::<Flex>(input, &native, &dev).unwrap();
    convert::<Flex>(&native, &back, &dev).unwrap();
    StateDict::from_file(back).unwrap()
}

#[test]
fn official_flavours_round_trip_through_the_native_format() {
    let dir = scratch("official");
    for file in [
        "tiny/supmae_tiny.pth",
        "tiny/vit_tiny_gp.pth",
        "tiny/vit_tiny_cls.pth",
    ] {
        let original = StateDict::from_file(fixture(file)).unwrap();
        assert_identical(&original, &round_trip(&fixture(file), &dir));
    }
    // MAE full (no branch) and a linear probe (head.0 BatchNorm + head.1 Linear).
    let mut full = StateDict::from_file(fixture("tiny/supmae_tiny.pth")).unwrap();
    full.retain(|k| !k.starts_with("cls_head."));
    let full_file = dir.join("mae_full.safetensors");
    full.write_safetensors(&full_file).unwrap();
    assert_identical(&full, &round_trip(&full_file, &dir));

    let cls = StateDict::from_file(fixture("tiny/vit_tiny_cls.pth")).unwrap();
    let mut entries = cls.entries_f32().unwrap();
    for e in &mut entries {
        if let Some(rest) = e.0.strip_prefix("head.") {
            e.0 = format!("head.1.{rest}");
        }
    }
    entries.push((
        "head.0.running_mean".into(),
        vec![64],
        (0..64).map(|i| i as f32 * 0.1).collect(),
    ));
    entries.push((
        "head.0.running_var".into(),
        vec![64],
        (0..64).map(|i| 1.0 + i as f32).collect(),
    ));
    let mut probe = StateDict::from_entries("probe", entries);
    probe.insert_i64("head.0.num_batches_tracked", vec![1234], vec![]);
    let probe_file = dir.join("linprobe.safetensors");
    probe.write_safetensors(&probe_file).unwrap();
    let probe = StateDict::from_file(&probe_file).unwrap();
    assert_identical(&probe, &round_trip(&probe_file, &dir));

    // An encoder-only file has no native pre-training form: a clear error.
    let mut enc = StateDict::from_file(fixture("tiny/supmae_tiny.pth")).unwrap();
    enc.retain(|k| !k.starts_with("cls_head.") && !k.starts_with("decoder_") && k != "mask_token");
    let enc_file = dir.join("mae_encoder.safetensors");
    enc.write_safetensors(&enc_file).unwrap();
    let enc_back = dir.join("mae_encoder_back.safetensors");
    convert::<Flex>(&enc_file, &enc_back, &Default::default()).unwrap();
    assert_identical(&enc, &StateDict::from_file(&enc_back).unwrap());
    let err = convert::<Flex>(&enc_file, &dir.join("x.ckpt"), &Default::default()).unwrap_err();
    assert!(err.to_string().contains("needs the decoder"), "{err}");
    let err = convert::<Flex>(&enc_file, &dir.join("x.bin"), &Default::default()).unwrap_err();
    assert!(err.to_string().contains(".safetensors"), "{err}");
}

#[test]
fn a_checkpoint_trained_here_exports_official_keys() {
    let dir = scratch("ours");
    // A converted SupMAE file is a native pre-training checkpoint: it exports the same keys
    // with BatchNorm's counter, and loads back into the model.
    let native = dir.join("supmae.ckpt");
    convert::<Flex>(
        &fixture("tiny/supmae_tiny.pth"),
        &native,
        &Default::default(),
    )
    .unwrap();
    let out = dir.join("supmae.safetensors");
    convert::<Flex>(&native, &out, &Default::default()).unwrap();
    let sd = StateDict::from_file(&out).unwrap();
    assert!(sd.contains("cls_head.1.num_batches_tracked"));
    assert!(sd.contains("cls_head.1.running_var"));
    let info = inspect(&sd).unwrap();
    assert_eq!(
        info.flavour,
        Flavour::SupMaePretrain {
            branch: "cls_head".into()
        }
    );
}
