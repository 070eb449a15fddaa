//! Checkpoint flavours, safetensors round trips and hostile files, on the tiny
//! official-format fixtures (tools/parity/fixtures).

use std::path::PathBuf;

use supmae_model::checkpoint::StateDict;
use supmae_model::{CheckpointError, Flavour, inspect};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/parity/fixtures")
        .join(rel)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("supmae-inspect-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_flavour_is_recognised_with_its_shape() {
    let sd = StateDict::from_file(fixture("tiny/supmae_tiny.pth")).unwrap();
    let info = inspect(&sd).unwrap();
    assert_eq!(
        info.flavour,
        Flavour::SupMaePretrain {
            branch: "cls_head".into()
        }
    );
    assert_eq!(
        (
            info.embed_dim,
            info.depth,
            info.patch_size,
            info.img_size,
            info.in_chans
        ),
        (64, 2, 8, 32, 3)
    );
    assert_eq!(info.mlp_ratio, 4.0);
    assert_eq!((info.decoder.unwrap().0, info.decoder.unwrap().1), (32, 1));
    assert_eq!((info.num_classes, info.cls_hidden), (Some(10), Some(128)));
    assert!(info.can_reconstruct() && info.can_classify());
    let cfg = info.mae_config().unwrap();
    assert_eq!(cfg.cls_head.unwrap().hidden, 128);

    let plain = StateDict::from_file(fixture("tiny/supmae_tiny_plain.pth")).unwrap();
    assert_eq!(
        inspect(&plain).unwrap().flavour,
        Flavour::SupMaePretrain {
            branch: "projection_head".into()
        }
    );

    // MAE full (no branch) and encoder only (no decoder, no mask token).
    let mut full = StateDict::from_file(fixture("tiny/supmae_tiny.pth")).unwrap();
    full.retain(|k| !k.starts_with("cls_head."));
    assert_eq!(inspect(&full).unwrap().flavour, Flavour::MaeFull);
    let mut enc = StateDict::from_file(fixture("tiny/supmae_tiny.pth")).unwrap();
    enc.retain(|k| !k.starts_with("cls_head.") && !k.starts_with("decoder_") && k != "mask_token");
    let info = inspect(&enc).unwrap();
    assert_eq!(info.flavour, Flavour::MaeEncoder);
    assert!(!info.can_reconstruct() && !info.can_classify());
    assert!(
        info.describe().contains("cannot reconstruct (no decoder)"),
        "{}",
        info.describe()
    );
    assert!(info.mae_config().is_none());

    for (file, gp) in [
        ("tiny/vit_tiny_gp.pth", true),
        ("tiny/vit_tiny_cls.pth", false),
    ] {
        let sd = StateDict::from_file(fixture(file)).unwrap();
        let info = inspect(&sd).unwrap();
        assert_eq!(info.flavour, Flavour::Finetuned { global_pool: gp });
        assert_eq!(info.num_classes, Some(10));
        assert_eq!(
            info.vit_config(1000, !gp).global_pool,
            gp,
            "the file's pooling wins"
        );
    }

    // A linear probe: the cls-token encoder with `head.0` BatchNorm and `head.1` Linear.
    let cls = StateDict::from_file(fixture("tiny/vit_tiny_cls.pth")).unwrap();
    let mut entries = cls.entries_f32().unwrap();
    for e in &mut entries {
        if let Some(rest) = e.0.strip_prefix("head.") {
            e.0 = format!("head.1.{rest}");
        }
    }
    entries.push(("head.0.running_mean".into(), vec![64], vec![0.0; 64]));
    entries.push(("head.0.running_var".into(), vec![64], vec![1.0; 64]));
    let probe = StateDict::from_entries("probe", entries);
    let info = inspect(&probe).unwrap();
    assert_eq!(info.flavour, Flavour::LinearProbe);
    assert_eq!(info.num_classes, Some(10));
}

#[test]
fn foreign_truncated_and_hostile_files_are_clear_errors() {
    let foreign = StateDict::from_entries(
        "resnet",
        vec![("fc.weight".to_string(), vec![2, 2], vec![0.0; 4])],
    );
    let err = inspect(&foreign).unwrap_err();
    assert!(
        err.to_string().contains("not a MAE/SupMAE/ViT checkpoint"),
        "{err}"
    );

    let dir = scratch("bad");
    let bytes = std::fs::read(fixture("tiny/supmae_tiny.pth")).unwrap();
    let truncated = dir.join("truncated.pth");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        StateDict::from_file(&truncated),
        Err(CheckpointError::Format { .. })
    ));
    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(StateDict::from_file(&empty).is_err());

    // torch.save's full layout with a pickled argparse.Namespace, optimizer and scaler: the
    // model loads.
    let sd = StateDict::from_file(fixture("bad/args_namespace.pth")).unwrap();
    let keys: Vec<&str> = sd.keys().collect();
    assert_eq!(keys, ["cls_token", "patch_embed.proj.weight"]);

    // A pickle that calls os.system: refused, and nothing ran.
    let _ = std::fs::remove_file("/tmp/supmae-pwned");
    let err = StateDict::from_file(fixture("bad/evil_global.pth")).unwrap_err();
    assert!(matches!(err, CheckpointError::Format { .. }), "{err}");
    assert!(err.to_string().contains("system"), "{err}");
    assert!(!std::path::Path::new("/tmp/supmae-pwned").exists());
}

#[test]
fn safetensors_round_trip_is_identical() {
    let dir = scratch("st");
    for file in ["tiny/supmae_tiny.pth", "tiny/vit_tiny_gp.pth"] {
        let sd = StateDict::from_file(fixture(file)).unwrap();
        let out = dir.join("out.safetensors");
        sd.write_safetensors(&out).unwrap();
        let back = StateDict::from_file(&out).unwrap();
        assert_eq!(
            sd.keys().collect::<Vec<_>>(),
            back.keys().collect::<Vec<_>>()
        );
        for key in sd.keys() {
            let (a, sa) = sd.read_f32(key).unwrap();
            let (b, sb) = back.read_f32(key).unwrap();
            assert_eq!((a, sa), (b, sb), "{key}");
        }
        // BatchNorm's int64 counter survives as an integer.
        if sd.contains("cls_head.1.num_batches_tracked") {
            assert_eq!(
                back.shape("cls_head.1.num_batches_tracked"),
                sd.shape("cls_head.1.num_batches_tracked")
            );
        }
    }
}
