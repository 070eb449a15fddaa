//! Loading official-format PyTorch checkpoints: key sets, aliases and bad files.

use std::collections::BTreeSet;
use std::path::PathBuf;

use burn::backend::Flex;
use burn::prelude::*;
use supmae_model::checkpoint::export_state_dict;
use supmae_model::{CheckpointError, ClsHeadConfig, MaeConfig, StateDict, VitConfig};

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/parity/fixtures/tiny")
        .join(name)
}

fn tiny_config() -> MaeConfig {
    MaeConfig::new()
        .with_img_size(32)
        .with_patch_size(8)
        .with_embed_dim(64)
        .with_depth(2)
        .with_num_heads(4)
        .with_decoder_embed_dim(32)
        .with_decoder_depth(1)
        .with_decoder_num_heads(4)
        .with_cls_head(Some(
            ClsHeadConfig::new().with_num_classes(10).with_hidden(128),
        ))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("supmae-model-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

#[test]
fn wrapped_and_bare_state_dicts_load_the_same_weights() {
    // `supmae_tiny_plain.pth` is the bare state dict with the classification branch named
    // `projection_head`, as in the released SupMAE checkpoint.
    let device = Default::default();
    let (a, report) = tiny_config()
        .init::<B>(&device)
        .unwrap()
        .load_pytorch(fixture("supmae_tiny.pth"))
        .unwrap();
    // Everything is used except the BatchNorm batch counter, which Burn does not track.
    assert_eq!(report.unused, set(&["cls_head.1.num_batches_tracked"]));
    assert!(report.missing.is_empty());
    let (b, plain) = tiny_config()
        .init::<B>(&device)
        .unwrap()
        .load_pytorch(fixture("supmae_tiny_plain.pth"))
        .unwrap();
    assert!(plain.applied.contains("projection_head.0.weight"));
    assert_eq!(
        plain.unused,
        set(&["projection_head.1.num_batches_tracked"])
    );
    let (ea, eb) = (export_state_dict(&a), export_state_dict(&b));
    assert_eq!(ea.len(), report.applied.len());
    assert_eq!(ea, eb);

    // Exported keys and shapes are the official ones, in PyTorch layout.
    let state = StateDict::from_pytorch(fixture("supmae_tiny.pth")).unwrap();
    for (key, shape, values) in &ea {
        assert_eq!(state.shape(key).as_ref(), Some(shape), "{key}");
        let (want, _) = state.read_f32(key).unwrap();
        assert_eq!(&want, values, "{key}");
    }
}

#[test]
fn mae_model_ignores_only_the_classification_branch() {
    let device = Default::default();
    let (_, report) = tiny_config()
        .with_cls_head(None)
        .init::<B>(&device)
        .unwrap()
        .load_pytorch(fixture("supmae_tiny.pth"))
        .unwrap();
    assert!(report.missing.is_empty());
    assert!(
        report.unused.iter().all(|k| k.starts_with("cls_head.")),
        "{report:?}"
    );
    // fc1 weight/bias, BN weight/bias/running_mean/running_var/num_batches_tracked, fc2.
    assert_eq!(report.unused.len(), 9);
}

#[test]
fn finetune_from_pretraining_reports_exactly_the_official_key_sets() {
    let device = Default::default();
    let vit = VitConfig::from_pretrain(&tiny_config(), 10);
    let (_, report) = vit
        .clone()
        .init::<B>(&device)
        .unwrap()
        .load_pytorch_pretrained(fixture("supmae_tiny.pth"))
        .unwrap();
    assert_eq!(
        report.missing,
        set(&["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"])
    );
    let unused: BTreeSet<String> = report
        .unused
        .iter()
        .filter(|k| {
            !k.starts_with("decoder_") && !k.starts_with("cls_head.") && !k.starts_with("norm.")
        })
        .cloned()
        .collect();
    assert_eq!(unused, set(&["mask_token"]));

    let (_, report) = vit
        .with_global_pool(false)
        .init::<B>(&device)
        .unwrap()
        .load_pytorch_pretrained(fixture("supmae_tiny.pth"))
        .unwrap();
    assert_eq!(report.missing, set(&["head.bias", "head.weight"]));
    assert!(report.applied.contains("norm.weight"));
}

#[test]
fn a_missing_file_is_an_io_error() {
    let err = StateDict::from_pytorch("/nonexistent/supmae.pth").unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/supmae.pth"));
}

#[test]
fn truncated_and_foreign_files_are_format_errors() {
    let bytes = std::fs::read(fixture("supmae_tiny.pth")).unwrap();
    let truncated = scratch("truncated.pth");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = StateDict::from_pytorch(&truncated).unwrap_err();
    assert!(matches!(err, CheckpointError::Format { .. }), "{err}");

    let text = scratch("not_a_checkpoint.pth");
    std::fs::write(&text, "this is not a checkpoint").unwrap();
    let err = StateDict::from_pytorch(&text).unwrap_err();
    assert!(matches!(err, CheckpointError::Format { .. }), "{err}");

    let empty = scratch("empty.pth");
    std::fs::write(&empty, b"").unwrap();
    assert!(StateDict::from_pytorch(&empty).is_err());
}

#[test]
fn wrong_shapes_name_the_tensor() {
    let device = Default::default();
    let err = tiny_config()
        .with_embed_dim(32)
        .init::<B>(&device)
        .unwrap()
        .load_pytorch(fixture("supmae_tiny.pth"))
        .unwrap_err();
    match err {
        CheckpointError::ShapeMismatch {
            key,
            expected,
            found,
        } => {
            assert_ne!(expected, found);
            assert!(!key.is_empty());
        }
        other => panic!("expected a shape mismatch, got {other}"),
    }
}

#[test]
fn a_foreign_state_dict_is_a_key_mismatch() {
    let device = Default::default();
    // A fine-tuned classifier is not a pre-training checkpoint: no decoder, a `head`.
    let err = tiny_config()
        .init::<B>(&device)
        .unwrap()
        .load_pytorch(fixture("vit_tiny_gp.pth"))
        .unwrap_err();
    match err {
        CheckpointError::KeyMismatch {
            missing,
            unexpected,
        } => {
            assert!(missing.contains(&"mask_token".to_string()), "{missing:?}");
            assert!(missing.contains(&"decoder_pred.weight".to_string()));
            assert!(
                unexpected.contains(&"head.weight".to_string()),
                "{unexpected:?}"
            );
        }
        other => panic!("expected a key mismatch, got {other}"),
    }
    // And the other way round.
    let err = VitConfig::from_pretrain(&tiny_config(), 10)
        .init::<B>(&device)
        .unwrap()
        .load_pytorch_finetuned(fixture("supmae_tiny.pth"))
        .unwrap_err();
    assert!(matches!(err, CheckpointError::KeyMismatch { .. }), "{err}");
}

#[test]
fn loaded_weights_keep_the_position_embeddings_frozen() {
    let device = Default::default();
    type AB = burn::backend::Autodiff<Flex>;
    let (model, _) = tiny_config()
        .init::<AB>(&device)
        .unwrap()
        .load_pytorch(fixture("supmae_tiny.pth"))
        .unwrap();
    assert!(!model.pos_embed.is_require_grad());
    assert!(!model.decoder_pos_embed.is_require_grad());
    assert!(model.cls_token.is_require_grad());
    let _ = Tensor::<AB, 1>::zeros([1], &device);
}

#[test]
fn finetuning_at_another_resolution_interpolates_pos_embed() {
    let device = Default::default();
    // The fixture is 32 px / patch 8 (a 4x4 grid); fine-tune at 48 px (6x6).
    let vit = VitConfig::from_pretrain(&tiny_config(), 10).with_img_size(48);
    let (model, report) = vit
        .init::<B>(&device)
        .unwrap()
        .load_pytorch_pretrained(fixture("supmae_tiny.pth"))
        .unwrap();
    assert!(report.applied.contains("pos_embed"));
    let state = StateDict::from_pytorch(fixture("supmae_tiny.pth")).unwrap();
    let (old, _) = state.read_f32("pos_embed").unwrap();
    let got = model.pos_embed.val().into_data().to_vec::<f32>().unwrap();
    assert_eq!(got.len(), 37 * 64);
    assert_eq!(&got[..64], &old[..64], "the cls row is kept");
    let want = supmae_model::pos_embed::interpolate_pos_embed(&old, 64, 1, 4, 6);
    assert_eq!(got, want);
}
