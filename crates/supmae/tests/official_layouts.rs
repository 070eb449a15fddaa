//! Checkpoints of every official flavour (random weights, official key names, shapes and
//! save layouts), written by `tools/checkpoints/make_official_like.py`:
//! - tiny ones, committed in `tools/checkpoints/fixtures/official/` (`--tiny`), checked in
//!   every test run;
//! - ViT-B-sized ones (about 350 MB each), generated at test time by an ignored test that
//!   needs python3 with torch: `cargo test --workspace --test official_layouts -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;

use supmae::burn::backend::Flex;
use supmae::convert;
use supmae_model::checkpoint::StateDict;
use supmae_model::{Flavour, inspect};

/// The encoder's (width, depth, heads, patch, image size) and the decoder's (width, depth,
/// heads) of the SupMAE and MAE-full files.
struct Sizes {
    encoder: (usize, usize, usize, usize, usize),
    supmae_decoder: (usize, usize),
    mae_decoder: (usize, usize),
    decoder_heads: usize,
}

#[test]
fn every_official_layout_at_tiny_size_committed() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/checkpoints/fixtures/official");
    let scratch = std::env::temp_dir().join(format!("supmae-official-tiny-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    check_every_flavour(
        &dir,
        &scratch,
        &Sizes {
            encoder: (32, 1, 1, 8, 16),
            supmae_decoder: (32, 1),
            mae_decoder: (32, 2),
            decoder_heads: 1,
        },
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
#[ignore = "needs python3 with torch and 2.5 GB of disk: cargo test --test official_layouts -- --ignored"]
fn every_official_flavour_at_vit_b_size() {
    let has_torch = Command::new("python3")
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_torch,
        "this test needs python3 with torch (pip install torch)"
    );
    let dir = std::env::temp_dir().join(format!("supmae-vitb-{}", std::process::id()));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/checkpoints/make_official_like.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_every_flavour(
        &dir,
        &dir,
        &Sizes {
            encoder: (768, 12, 12, 16, 224),
            supmae_decoder: (512, 1),
            mae_decoder: (512, 8),
            decoder_heads: 16,
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every flavour is recognised with its sizes, and three of them round-trip through our
/// native format and back to safetensors with identical keys and values.
fn check_every_flavour(dir: &Path, scratch: &Path, sizes: &Sizes) {
    let cases = [
        (
            "supmae_pretrain_vit_base.pth",
            Flavour::SupMaePretrain {
                branch: "projection_head".into(),
            },
            Some(sizes.supmae_decoder),
        ),
        (
            "mae_pretrain_vit_base_full.pth",
            Flavour::MaeFull,
            Some(sizes.mae_decoder),
        ),
        (
            "mae_visualize_vit_base.pth",
            Flavour::MaeFull,
            Some(sizes.mae_decoder),
        ),
        ("mae_pretrain_vit_base.pth", Flavour::MaeEncoder, None),
        (
            "supmae_vitb_ft_100e.pth",
            Flavour::Finetuned { global_pool: true },
            None,
        ),
        (
            "mae_finetuned_vit_base.pth",
            Flavour::Finetuned { global_pool: true },
            None,
        ),
        ("mae_linprobe_vit_base.pth", Flavour::LinearProbe, None),
    ];
    for (file, flavour, decoder) in cases {
        let sd = StateDict::from_file(dir.join(file)).unwrap();
        let info = inspect(&sd).unwrap();
        assert_eq!(info.flavour, flavour, "{file}");
        assert_eq!(
            (
                info.embed_dim,
                info.depth,
                info.num_heads,
                info.patch_size,
                info.img_size
            ),
            sizes.encoder,
            "{file}"
        );
        assert_eq!(info.decoder.map(|(d, b, _)| (d, b)), decoder, "{file}");
        if decoder.is_some() {
            assert_eq!(
                info.decoder.unwrap().2,
                sizes.decoder_heads,
                "official decoders have 32-wide heads"
            );
        }
    }
    // Round trips through our native format give identical state dicts.
    for file in [
        "supmae_pretrain_vit_base.pth",
        "supmae_vitb_ft_100e.pth",
        "mae_linprobe_vit_base.pth",
    ] {
        let native = scratch.join("native.ckpt");
        let back = scratch.join("back.safetensors");
        convert::<Flex>(&dir.join(file), &native, &Default::default()).unwrap();
        convert::<Flex>(&native, &back, &Default::default()).unwrap();
        let a = StateDict::from_file(dir.join(file)).unwrap();
        let b = StateDict::from_file(&back).unwrap();
        // The released SupMAE names the branch `projection_head`; ours writes `cls_head`.
        let rename = |k: &str| k.replace("projection_head.", "cls_head.");
        let mut ka: Vec<String> = a.keys().map(rename).collect();
        ka.sort();
        let kb: Vec<String> = b.keys().map(str::to_string).collect();
        assert_eq!(ka, kb, "{file}");
        for key in a.keys() {
            assert_eq!(
                a.read_f32(key).unwrap(),
                b.read_f32(&rename(key)).unwrap(),
                "{file}: {key}"
            );
        }
    }
}
