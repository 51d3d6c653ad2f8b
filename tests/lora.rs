//! LoRA stacks against diffusers + PEFT (`fixtures/ref/adapters.*`, made by
//! `fixtures/make_adapter_fixtures.py`): every file form, the stack, text-encoder LoRAs,
//! rsLoRA, re-weighting, and the files that must be refused.

use std::path::PathBuf;

use kiln_engine::Error;
use kiln_engine::adapters::AdapterId;
use kiln_engine::adapters::lora::LoraFormat;
use kiln_engine::device::DeviceSpec;
use kiln_engine::job::CancelToken;
use kiln_engine::pipeline::StableDiffusion;
use kiln_engine::session::Session;

use crate::common::{assert_close, fixture, reference};
use crate::parity::ddim_request;

pub fn adapter(name: &str) -> PathBuf {
    fixture(&format!("adapters/{name}"))
}

/// A fresh, mutable copy of tiny-a (adapters change the model).
pub fn tiny_a() -> StableDiffusion {
    StableDiffusion::load(
        &fixture("tiny-a"),
        None,
        &kiln_engine::device::device("cpu").unwrap(),
    )
    .unwrap()
}

/// tiny-a in a session of its own, to stack adapters on.
pub fn session() -> Session {
    Session::new(tiny_a(), DeviceSpec::Cpu)
}

/// Final DDIM latents of the reference request.
pub fn latents(sd: &StableDiffusion) -> Vec<f32> {
    sd.generate(&ddim_request("tiny-a"), &CancelToken::new(), &mut |_| {})
        .unwrap()
        .latents
        .values
}

fn want(case: &str) -> Vec<f32> {
    reference("adapters", &format!("{case}.latents_out")).1
}

#[test]
fn every_form_of_one_lora_matches_diffusers() {
    let expected = want("lora_qkvo");
    for form in [
        "peft_qkvo.safetensors",
        "peft_qkvo",
        "kohya_qkvo.safetensors",
        "kohya_ldm_qkvo.safetensors",
        "diffusers_old_qkvo.safetensors",
    ] {
        let mut sd = session();
        let lora = sd
            .open_lora(&adapter(form))
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        assert_eq!(
            lora.report.matched, lora.report.modules,
            "{form}: every module matched"
        );
        assert!(lora.report.unmatched.is_empty());
        sd.add_lora(AdapterId(1), lora, 0.7, true);
        assert_close(
            &format!("LoRA {form} @0.7"),
            &latents(sd.model()),
            &expected,
            1e-4,
        );
    }
}

#[test]
fn reweighting_disabling_and_removing_restore_exactly() {
    let mut sd = session();
    let base = latents(sd.model());
    let lora = sd.open_lora(&adapter("kohya_qkvo.safetensors")).unwrap();
    let i = AdapterId(2);
    sd.add_lora(i, lora, 0.2, true);
    let at_02 = latents(sd.model());
    assert_ne!(at_02, base);
    sd.set_lora_weight(i, 0.7);
    assert_close(
        "re-weighted to 0.7",
        &latents(sd.model()),
        &want("lora_qkvo"),
        1e-4,
    );
    sd.set_lora_weight(i, 0.2);
    assert_eq!(
        latents(sd.model()),
        at_02,
        "going back to 0.2 is exact (merged from pristine weights)"
    );
    sd.set_lora_enabled(i, false);
    assert_eq!(latents(sd.model()), base, "disabled = base model");
    sd.set_lora_enabled(i, true);
    sd.remove_lora(i);
    assert_eq!(latents(sd.model()), base, "removed = base model");
    assert!(sd.loras().is_empty());
}

#[test]
fn stack_of_two_with_convs_and_feed_forward() {
    let mut sd = session();
    let a = sd.open_lora(&adapter("stack_attn.safetensors")).unwrap();
    let b = sd
        .open_lora(&adapter("stack_convff_kohya.safetensors"))
        .unwrap();
    assert!(
        b.modules.iter().any(|m| m.target.path.ends_with("proj_in")),
        "covers 1x1 conv proj_in"
    );
    assert!(
        b.modules
            .iter()
            .any(|m| m.target.path.ends_with("ff.net.2")),
        "covers the feed-forward"
    );
    assert!(
        b.modules
            .iter()
            .any(|m| m.target.path.ends_with("resnets.0.conv1")),
        "covers 3x3 resnet convs (LoCon)"
    );
    sd.add_lora(AdapterId(3), a, 0.5, true);
    sd.add_lora(AdapterId(4), b, -0.3, true);
    assert_close(
        "stack 0.5 / -0.3",
        &latents(sd.model()),
        &want("stack"),
        1e-4,
    );
}

#[test]
fn text_encoder_loras_in_both_forms() {
    for form in ["te_kohya.safetensors", "te_peft.safetensors"] {
        let mut sd = session();
        let lora = sd.open_lora(&adapter(form)).unwrap();
        assert!(
            lora.report.text_encoder_layers > 0 && lora.report.unet_layers == 0,
            "{form}"
        );
        sd.add_lora(AdapterId(5), lora, 1.0, true);
        assert_close(
            &format!("text-encoder LoRA {form}"),
            &latents(sd.model()),
            &want("te"),
            1e-4,
        );
    }
}

#[test]
fn rslora_with_an_alpha_pattern() {
    let mut sd = session();
    let lora = sd.open_lora(&adapter("peft_rslora")).unwrap();
    assert_eq!(lora.report.format, LoraFormat::PeftFolder);
    assert_eq!(
        serde_json::to_value(&lora.report).unwrap()["format"],
        "peft_folder"
    );
    sd.add_lora(AdapterId(6), lora, 1.0, true);
    assert_close("rsLoRA folder", &latents(sd.model()), &want("rslora"), 1e-4);
}

#[test]
fn files_that_cannot_work_are_refused_by_name() {
    let sd = session();
    let e = sd.open_lora(&adapter("sdxl_lora.safetensors")).unwrap_err();
    assert!(matches!(e, Error::AdapterFamilyMismatch { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("made for Stable Diffusion XL; the loaded model is Stable Diffusion 1.x"),
        "{e}"
    );

    let e = sd
        .open_lora(&adapter("half_unknown.safetensors"))
        .unwrap_err();
    match &e {
        Error::AdapterUnmatched {
            total, unmatched, ..
        } => {
            assert_eq!(
                unmatched.len() * 2,
                *total,
                "half of the modules are unknown: {e}"
            );
            assert!(
                unmatched.iter().all(|u| u.contains("foo_bar")),
                "{unmatched:?}"
            );
        }
        other => panic!("expected AdapterUnmatched, got {other}"),
    }
    for (file, kind) in [
        ("loha.safetensors", "LoHa"),
        ("lokr.safetensors", "LoKr"),
        ("dora.safetensors", "DoRA"),
    ] {
        let e = sd.open_lora(&adapter(file)).unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedAdapter { .. }) && e.to_string().contains(kind),
            "{file}: {e}"
        );
    }
    let e = sd.open_lora(&adapter("empty.safetensors")).unwrap_err();
    assert!(
        matches!(e, Error::NotAnAdapter { .. }) && e.to_string().contains("no tensors"),
        "{e}"
    );
    let e = sd.open_lora(&fixture("tiny-a.safetensors")).unwrap_err();
    assert!(e.to_string().contains("full model checkpoint"), "{e}");
    let e = sd.open_lora(&adapter("ti_cat.safetensors")).unwrap_err();
    assert!(e.to_string().contains("textual-inversion embedding"), "{e}");
    let e = sd.open_lora(&adapter("malicious.pt")).unwrap_err();
    assert!(matches!(e, Error::PickleCheckpoint { .. }), "{e}");
}

#[test]
fn cli_applies_loras_from_flags_and_prompt_tags_and_records_them() {
    use crate::cli::{generate, kiln, stderr};
    use kiln_engine::weights::safetensors::SafeTensors;
    let expected = want("lora_qkvo");
    let lora = adapter("kohya_qkvo.safetensors");
    let flag = format!("{}:0.7", lora.display());
    let lora_dir = fixture("adapters");
    for tagged in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let o = if tagged {
            // The tag rides in the first prompt; it is removed before encoding.
            generate_tagged(dir.path(), &["--lora-dir", lora_dir.to_str().unwrap()])
        } else {
            generate(
                &fixture("tiny-a"),
                None,
                "tiny-a",
                dir.path(),
                &["--lora", flag.as_str()],
            )
        };
        assert!(o.status.success(), "{}", stderr(&o));
        let saved = SafeTensors::open(&dir.path().join("final.safetensors")).unwrap();
        assert_close(
            &format!("CLI LoRA (tags: {tagged})"),
            &saved.f32("latents").unwrap(),
            &expected,
            1e-4,
        );
        let text = kiln_engine::image::read_png_text(&dir.path().join("img-0.png")).unwrap();
        let params = &text
            .iter()
            .find(|(k, _)| k == "parameters")
            .expect("parameters chunk")
            .1;
        let hash = kiln_engine::adapters::lora::short_hash(&lora).unwrap();
        assert!(
            params.contains(&format!("Lora hashes: \"kohya_qkvo: {hash}\"")),
            "{params}"
        );
        assert!(params.contains("Negative prompt: blurry"), "{params}");
    }
    let o = kiln(&[
        "generate",
        "--model",
        fixture("tiny-a").to_str().unwrap(),
        "--prompt",
        "a cat <lora:missing:1>",
        "--out",
        "/tmp/never.png",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("--lora-dir"),
        "{}",
        stderr(&o)
    );
}

/// `kiln generate` with the reference request where the first prompt carries a LoRA tag.
fn generate_tagged(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut req = ddim_request("tiny-a");
    req.prompts[0] = format!("{} <lora:kohya_qkvo:0.7>", req.prompts[0]);
    crate::cli::generate_request(&fixture("tiny-a"), None, &req, dir, extra)
}

#[test]
fn inspect_reports_each_lora() {
    for (file, format) in [
        ("kohya_qkvo.safetensors", "kohya"),
        ("kohya_ldm_qkvo.safetensors", "kohya"),
        ("peft_qkvo.safetensors", "peft"),
        ("peft_qkvo", "peft_folder"),
        ("diffusers_old_qkvo.safetensors", "diffusers_old"),
        ("te_kohya.safetensors", "kohya"),
        ("stack_convff_kohya.safetensors", "kohya"),
    ] {
        let o = crate::cli::kiln(&["inspect", adapter(file).to_str().unwrap()]);
        assert!(o.status.success(), "{file}: {}", crate::cli::stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["kind"], "lora", "{file}");
        assert_eq!(v["format"], format, "{file}");
        assert!(v["modules"].as_u64().unwrap() > 0, "{file}");
        assert_eq!(v["short_hash"].as_str().unwrap().len(), 12);
    }
    let o = crate::cli::kiln(&[
        "inspect",
        adapter("kohya_qkvo.safetensors").to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ranks"], serde_json::json!([4]));
    assert_eq!(v["alphas"], serde_json::json!(["8"]));
}

#[test]
fn embeddings_in_txt2img_match_diffusers() {
    // Every form of both embeddings (1 and 2 vectors) gives diffusers' final latents.
    let mut req = ddim_request("tiny-a");
    req.prompts = vec![
        "a photo of a <kiln-cat>".into(),
        "a red circle on a blue background, <kiln-style>".into(),
    ];
    let expected = want("ti");
    for (cat, style) in [
        ("ti_cat.pt", "ti_style.pt"),
        ("ti_cat.safetensors", "ti_style.safetensors"),
        (
            "ti_cat_diffusers.safetensors",
            "ti_style_diffusers.safetensors",
        ),
        ("ti_cat_diffusers.bin", "ti_style_diffusers.bin"),
    ] {
        let mut sd = session();
        assert_eq!(
            sd.load_embedding(AdapterId(1), &adapter(cat), Some("<kiln-cat>"))
                .unwrap()
                .ids,
            vec![49408]
        );
        assert_eq!(
            sd.load_embedding(AdapterId(2), &adapter(style), Some("<kiln-style>"))
                .unwrap()
                .ids,
            vec![49409, 49410]
        );
        let out = sd
            .model()
            .generate(&req, &CancelToken::new(), &mut |_| {})
            .unwrap();
        assert_close(
            &format!("embeddings {cat} + {style}"),
            &out.latents.values,
            &expected,
            1e-4,
        );
    }
}

#[test]
fn cli_loads_embeddings() {
    use crate::cli::stderr;
    use kiln_engine::weights::safetensors::SafeTensors;
    let dir = tempfile::tempdir().unwrap();
    let mut req = ddim_request("tiny-a");
    req.prompts = vec![
        "a photo of a <kiln-cat>".into(),
        "a red circle on a blue background, <kiln-style>".into(),
    ];
    let (cat, style) = (
        format!("{}:<kiln-cat>", adapter("ti_cat.pt").display()),
        format!("{}:<kiln-style>", adapter("ti_style.safetensors").display()),
    );
    let o = crate::cli::generate_request(
        &fixture("tiny-a"),
        None,
        &req,
        dir.path(),
        &["--embedding", &cat, "--embedding", &style],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let got = SafeTensors::open(&dir.path().join("final.safetensors"))
        .unwrap()
        .f32("latents")
        .unwrap();
    assert_close("CLI embeddings", &got, &want("ti"), 1e-4);
}

#[test]
fn inspect_reports_each_embedding() {
    for (file, format, vectors) in [
        ("ti_cat.pt", "a1111_pt", 1),
        ("ti_cat.safetensors", "a1111_safetensors", 1),
        ("ti_style_diffusers.safetensors", "diffusers_safetensors", 2),
        ("ti_style_diffusers.bin", "diffusers_bin", 2),
    ] {
        let o = crate::cli::kiln(&["inspect", adapter(file).to_str().unwrap()]);
        assert!(o.status.success(), "{file}: {}", crate::cli::stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            (
                v["kind"].as_str(),
                v["format"].as_str(),
                v["vectors"].as_u64(),
                v["width"].as_u64()
            ),
            (Some("embedding"), Some(format), Some(vectors), Some(32)),
            "{file}"
        );
    }
    let o = crate::cli::kiln(&["inspect", adapter("malicious.pt").to_str().unwrap()]);
    assert!(!o.status.success(), "a malicious pickle is refused");
    assert!(
        crate::cli::stderr(&o).contains("posix.system"),
        "{}",
        crate::cli::stderr(&o)
    );
}

#[test]
fn trigger_words_and_family_come_from_kohya_metadata() {
    use kiln_engine::weights::safetensors::{SafeTensors, WriteTensor, write_f32};
    let src = SafeTensors::open(&adapter("kohya_qkvo.safetensors")).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = src
        .tensors()
        .iter()
        .map(|(k, i)| (k.clone(), i.shape.clone(), src.f32(k).unwrap()))
        .collect();
    let list: Vec<WriteTensor> = tensors
        .iter()
        .map(|(k, s, v)| WriteTensor {
            name: k,
            shape: s.clone(),
            data: v,
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("styled.safetensors");
    let meta = [
        (
            "ss_tag_frequency".to_owned(),
            r#"{"10_mystyle": {"mystyle": 12, "red circle": 3, " blue": 5}}"#.to_owned(),
        ),
        ("ss_output_name".to_owned(), "mystyle_v2".to_owned()),
        ("ss_base_model_version".to_owned(), "sd_v1".to_owned()),
    ]
    .into_iter()
    .collect();
    write_f32(&p, &list, &meta).unwrap();
    let sd = session();
    let lora = sd.open_lora(&p).unwrap();
    assert_eq!(
        lora.report.trigger_words,
        vec!["mystyle", "blue", "red circle", "mystyle_v2"]
    );
    assert_eq!(
        lora.report.family,
        Some(kiln_engine::family::ModelFamily::Sd1)
    );
    // A trigger phrase the trainer recorded (Kiln writes one) comes first, and the output
    // name is then not taken for a trigger.
    let meta = [
        (
            "ss_tag_frequency".to_owned(),
            r#"{"10_mystyle": {"mystyle": 12, "zz": 2}}"#.to_owned(),
        ),
        ("ss_output_name".to_owned(), "mystyle_v2".to_owned()),
        ("modelspec.trigger_phrase".to_owned(), " zz ".to_owned()),
    ]
    .into_iter()
    .collect();
    write_f32(&p, &list, &meta).unwrap();
    let lora = sd.open_lora(&p).unwrap();
    assert_eq!(lora.report.trigger_words, vec!["zz", "mystyle"]);
    let mut meta2 = std::collections::BTreeMap::new();
    meta2.insert("ss_v2".to_owned(), "True".to_owned());
    write_f32(&p, &list, &meta2).unwrap();
    let e = sd.open_lora(&p).unwrap_err();
    assert!(
        e.to_string().contains("made for Stable Diffusion 2.x"),
        "{e}"
    );
}

/// A LoRA merged into an f16 model (either order: LoRA then precision, or precision then
/// LoRA) stays close to diffusers' f32 result; merging accumulates in f32.
#[test]
fn loras_merge_into_f16_models() {
    use kiln_engine::job::Precision;
    let expected = want("lora_qkvo");
    for lora_first in [false, true] {
        let mut sd = session();
        let lora = sd.open_lora(&adapter("kohya_qkvo.safetensors")).unwrap();
        if lora_first {
            sd.add_lora(AdapterId(7), lora, 0.7, true);
            sd.set_precision(Precision::F16);
        } else {
            sd.set_precision(Precision::F16);
            sd.add_lora(AdapterId(8), lora, 0.7, true);
        }
        let err = crate::common::relative_max_error(&latents(sd.model()), &expected);
        assert!(err < 1e-2, "f16 LoRA (lora first: {lora_first}): {err}");
        // Re-weighting in f16 goes back to the base exactly when the weight is 0.
        sd.set_lora_weight(AdapterId(if lora_first { 7 } else { 8 }), 0.0);
        let base = latents(sd.model());
        let mut plain = session();
        plain.set_precision(Precision::F16);
        assert_eq!(
            base,
            latents(plain.model()),
            "weight 0 restores the f16 base (lora first: {lora_first})"
        );
    }
}

/// An absurd LoRA weight overflows the weights; the result is a named error, not a black image.
#[test]
fn overflowing_weights_give_a_non_finite_error() {
    let mut sd = session();
    let lora = sd.open_lora(&adapter("kohya_qkvo.safetensors")).unwrap();
    sd.add_lora(AdapterId(9), lora, 1e38, true);
    let err = sd
        .model()
        .generate(&ddim_request("tiny-a"), &CancelToken::new(), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, kiln_engine::Error::NonFinite(_)), "{err:?}");
    assert!(
        err.to_string().contains("produced NaN or infinite values"),
        "{err}"
    );
}
