//! Every way a checkpoint can be wrong gives a named error the user can act on.

use std::path::{Path, PathBuf};

use kiln_engine::Error;
use kiln_engine::inspect::{Inspection, inspect};
use kiln_engine::weights::Checkpoint;
use kiln_engine::weights::safetensors::{SafeTensors, WriteTensor, write_f32};

use crate::common::fixture;

fn open(path: &Path, config: Option<&Path>) -> Error {
    let device = kiln_engine::device::device("cpu").unwrap();
    match Checkpoint::open(path, config) {
        Err(e) => e,
        Ok(ckpt) => kiln_engine::pipeline::StableDiffusion::from_checkpoint(
            ckpt,
            &device,
            kiln_engine::job::Precision::F32,
        )
        .expect_err("loading must fail"),
    }
}

/// Rewrites `fixtures/tiny-b.safetensors` (as f32) through `edit`, into `dir`.
fn edited_tiny_b(
    dir: &Path,
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>),
) -> PathBuf {
    let src = SafeTensors::open(&fixture("tiny-b.safetensors")).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = src
        .tensors()
        .iter()
        .map(|(k, i)| (k.clone(), i.shape.clone(), src.f32(k).unwrap()))
        .collect();
    edit(&mut tensors);
    let out = dir.join("edited.safetensors");
    let list: Vec<WriteTensor> = tensors
        .iter()
        .map(|(k, s, v)| WriteTensor {
            name: k,
            shape: s.clone(),
            data: v,
        })
        .collect();
    write_f32(&out, &list, &Default::default()).unwrap();
    out
}

fn tiny_file(dir: &Path, name: &str, keys: &[(&str, &[usize])]) -> PathBuf {
    let data: Vec<Vec<f32>> = keys
        .iter()
        .map(|(_, s)| vec![0.0; s.iter().product()])
        .collect();
    let list: Vec<WriteTensor> = keys
        .iter()
        .zip(&data)
        .map(|((k, s), d)| WriteTensor {
            name: k,
            shape: s.to_vec(),
            data: d,
        })
        .collect();
    let p = dir.join(name);
    write_f32(&p, &list, &Default::default()).unwrap();
    p
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("tiny-b.safetensors")).unwrap();
    let p = dir.path().join("cut.safetensors");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = open(&p, None);
    assert!(
        matches!(&e, Error::Format { reason, .. } if reason.contains("truncated")),
        "{e}"
    );
    // Cut inside the header too.
    std::fs::write(&p, &bytes[..100]).unwrap();
    let e = open(&p, None);
    assert!(
        matches!(&e, Error::Format { reason, .. } if reason.contains("truncated")),
        "{e}"
    );
}

#[test]
fn not_safetensors_lfs_pointer_html_and_pickles() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("random.safetensors");
    std::fs::write(
        &p,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let e = open(&p, None);
    assert!(
        matches!(&e, Error::Format { reason, .. } if reason.contains("not a safetensors file")),
        "{e}"
    );

    let p = dir.path().join("lfs.safetensors");
    std::fs::write(
        &p,
        "version https://git-lfs.github.com/spec/v1\noid sha256:4c2b7a1f0e\nsize 4265146304\n",
    )
    .unwrap();
    assert!(matches!(open(&p, None), Error::GitLfsPointer { .. }));
    assert!(matches!(inspect(&p), Err(Error::GitLfsPointer { .. })));

    let p = dir.path().join("page.safetensors");
    std::fs::write(
        &p,
        "\n<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>",
    )
    .unwrap();
    assert!(matches!(open(&p, None), Error::HtmlPage { .. }));

    let p = dir.path().join("model.ckpt");
    std::fs::write(&p, b"PK\x03\x04archive").unwrap();
    let e = open(&p, None);
    assert!(matches!(e, Error::PickleCheckpoint { .. }), "{e}");
    assert!(e.to_string().contains("convert it to .safetensors"));
    let p = dir.path().join("pickle.safetensors");
    std::fs::write(&p, b"\x80\x02}q\x00").unwrap();
    assert!(matches!(open(&p, None), Error::PickleCheckpoint { .. }));
}

#[test]
fn wrong_shapes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = edited_tiny_b(dir.path(), |t| {
        let e = t
            .iter_mut()
            .find(|(k, _, _)| k == "model.diffusion_model.out.2.bias")
            .unwrap();
        e.1 = vec![3];
        e.2.truncate(3);
    });
    let e = open(&p, Some(&fixture("tiny-b")));
    match &e {
        Error::ShapeMismatch { mismatches, .. } => {
            assert_eq!(mismatches[0].key, "conv_out.bias");
            assert_eq!(
                (mismatches[0].expected.clone(), mismatches[0].got.clone()),
                (vec![4], vec![3])
            );
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
}

#[test]
fn missing_and_unused_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = edited_tiny_b(dir.path(), |t| {
        t.retain(|(k, _, _)| k != "first_stage_model.decoder.mid.attn_1.q.weight")
    });
    let e = open(&p, Some(&fixture("tiny-b")));
    assert!(
        matches!(&e, Error::MissingTensors { keys, .. } if keys == &["decoder.mid_block.attentions.0.to_q.weight"]),
        "{e}"
    );

    let p = edited_tiny_b(dir.path(), |t| {
        t.push((
            "model.diffusion_model.extra_block.weight".into(),
            vec![2],
            vec![0.0; 2],
        ))
    });
    let e = open(&p, Some(&fixture("tiny-b")));
    assert!(
        matches!(&e, Error::UnusedTensors { keys, .. } if keys == &["model.diffusion_model.extra_block.weight"]),
        "{e}"
    );
}

#[test]
fn other_families_are_recognised_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    // (file, tensors as (name, shape), what the error says)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a [usize])>, &'a str);
    let cases: [Case; 3] = [
        (
            "sdxl.safetensors",
            vec![
                (
                    "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
                    &[4],
                ),
                (
                    "model.diffusion_model.input_blocks.0.0.weight",
                    &[2, 4, 3, 3],
                ),
            ],
            "Stable Diffusion XL",
        ),
        (
            "sd2.safetensors",
            vec![
                ("cond_stage_model.model.ln_final.weight", &[4]),
                (
                    "model.diffusion_model.input_blocks.0.0.weight",
                    &[2, 4, 3, 3],
                ),
            ],
            "Stable Diffusion 2.x",
        ),
        (
            "inpaint.safetensors",
            vec![(
                "model.diffusion_model.input_blocks.0.0.weight",
                &[2, 9, 3, 3],
            )],
            "inpainting",
        ),
    ];
    for (name, keys, family) in cases {
        let p = tiny_file(dir.path(), name, &keys);
        let e = open(&p, None);
        assert!(matches!(&e, Error::UnsupportedFamily { .. }), "{name}: {e}");
        assert!(e.to_string().contains(family), "{name}: {e}");
        match inspect(&p).unwrap() {
            Inspection::UnsupportedCheckpoint { family: f } => assert!(f.name().contains(family)),
            other => panic!("{name}: {other:?}"),
        }
    }
    let p = tiny_file(
        dir.path(),
        "foreign.safetensors",
        &[("backbone.layer1.weight", &[2, 2])],
    );
    let e = open(&p, None);
    assert!(
        e.to_string().contains("not a Stable Diffusion checkpoint"),
        "{e}"
    );
    assert!(matches!(
        inspect(&p).unwrap(),
        Inspection::Unknown { tensors: 1, .. }
    ));
}

#[test]
fn incomplete_diffusers_folder() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("model");
    crate::common::copy_dir(&fixture("tiny-b"), &m);
    std::fs::remove_file(m.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let e = open(&m, None);
    assert!(
        e.to_string()
            .contains("'vae/diffusion_pytorch_model.safetensors' is missing"),
        "{e}"
    );
    std::fs::remove_dir_all(m.join("unet")).unwrap();
    let e = open(&m, None);
    assert!(
        e.to_string().contains("'unet/config.json' is missing"),
        "{e}"
    );
    std::fs::remove_file(m.join("model_index.json")).unwrap();
    let e = open(&m, None);
    assert!(
        e.to_string().contains("'model_index.json' is missing"),
        "{e}"
    );
    let e = open(&dir.path().join("nowhere"), None);
    assert!(matches!(e, Error::Io { .. }), "{e}");
}
