//! Textual-inversion embeddings against diffusers' `load_textual_inversion`
//! (`fixtures/adapters/ti_*`, references `fixtures/ref/adapters.{json,safetensors}` made by
//! `fixtures/make_adapter_fixtures.py`).

use std::path::{Path, PathBuf};

use kiln_engine::Error;
use kiln_engine::adapters::textual_inversion::{self, TextualInversion, TiFormat};
use kiln_engine::pipeline::StableDiffusion;
use kiln_engine::tokenizer::{ClipTokenizer, MAX_LENGTH};
use kiln_engine::weights::safetensors::{WriteTensor, write_f32};

use crate::common::{assert_close, fixture, reference, reference_json, values};

/// The two test embeddings: file stem, token, number of vectors, first row in `ti.embedding_rows`.
const EMBEDDINGS: [(&str, &str, usize, usize); 2] = [
    ("ti_cat", "<kiln-cat>", 1, 0),
    ("ti_style", "<kiln-style>", 2, 1),
];

/// The four files of one embedding, with the format each must be read as.
fn forms(stem: &str) -> [(PathBuf, TiFormat); 4] {
    let f = |name: String| fixture(&format!("adapters/{name}"));
    [
        (f(format!("{stem}.pt")), TiFormat::A1111Pt),
        (f(format!("{stem}.safetensors")), TiFormat::A1111Safetensors),
        (
            f(format!("{stem}_diffusers.safetensors")),
            TiFormat::DiffusersSafetensors,
        ),
        (f(format!("{stem}_diffusers.bin")), TiFormat::DiffusersBin),
    ]
}

fn ti_json() -> serde_json::Value {
    reference_json("adapters")["cases"]["ti"].clone()
}

fn prompts() -> Vec<String> {
    ti_json()["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

/// A private copy of tiny-a (the shared cache in `common` must stay unmodified).
fn tiny_a() -> StableDiffusion {
    let device = kiln_engine::device::device("cpu").unwrap();
    StableDiffusion::load(&fixture("tiny-a"), None, &device).unwrap()
}

fn table_rows(sd: &StableDiffusion) -> usize {
    sd.text_encoder
        .embeddings
        .token_embedding
        .weight
        .val()
        .dims()[0]
}

/// Loads and applies the cat then the style embedding from the given form (diffusers' order).
fn apply_both(sd: &mut StableDiffusion, form: usize) -> Vec<Vec<u32>> {
    EMBEDDINGS
        .iter()
        .map(|(stem, token, _, _)| {
            let (path, _) = &forms(stem)[form];
            let ti = textual_inversion::load(path, Some(token)).unwrap();
            textual_inversion::apply(&ti, &mut sd.tokenizer, &mut sd.text_encoder).unwrap()
        })
        .collect()
}

#[test]
fn all_four_forms_load_the_same_vectors() {
    let (shape, rows) = reference("adapters", "ti.embedding_rows");
    let width = shape[1];
    assert_eq!(width, 32);
    for (stem, token, n, first) in EMBEDDINGS {
        let want: Vec<Vec<f32>> = rows[first * width..(first + n) * width]
            .chunks(width)
            .map(<[f32]>::to_vec)
            .collect();
        for (path, format) in forms(stem) {
            let ti = textual_inversion::load(&path, Some(token))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(ti.format, format, "{}", path.display());
            assert_eq!(ti.token, token);
            assert_eq!(ti.width, width);
            assert_eq!(ti.n_vectors(), n);
            assert_eq!(
                ti.vectors,
                want,
                "{}: vectors differ from the reference",
                path.display()
            );
            assert_eq!(ti.path, path);
            // Without a token, the file stem names it (as AUTOMATIC1111 does).
            let stemmed = textual_inversion::load(&path, None).unwrap();
            assert_eq!(stemmed.token, path.file_stem().unwrap().to_string_lossy());
        }
    }
    let ti = textual_inversion::load(&forms("ti_style")[0].0, Some("<kiln-style>")).unwrap();
    assert_eq!(ti.token_names(), ["<kiln-style>", "<kiln-style>_1"]);
}

#[test]
fn token_ids_and_prompt_embeddings_match_diffusers_for_every_form() {
    let json = ti_json();
    let (ids_shape, want_ids) = reference("adapters", "ti.input_ids");
    assert_eq!(ids_shape, [2, MAX_LENGTH]);
    let (pe_shape, want_pe) = reference("adapters", "ti.prompt_embeds");
    assert_eq!(pe_shape, [2, MAX_LENGTH, 32]);
    let prompts = prompts();
    let converted: Vec<&str> = json["prompts_after_maybe_convert_prompt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for form in 0..4 {
        let mut sd = tiny_a();
        assert_eq!(table_rows(&sd), 49408);
        assert_eq!(sd.tokenizer.vocab_size(), 49408);
        let ids = apply_both(&mut sd, form);
        assert_eq!(ids, [vec![49408], vec![49409, 49410]], "form {form}");
        assert_eq!(sd.tokenizer.vocab_size(), 49411);
        assert_eq!(
            table_rows(&sd),
            49411,
            "the embedding table must stay in step with the tokenizer"
        );
        for (prompt, want) in prompts.iter().zip(&converted) {
            assert_eq!(sd.tokenizer.convert_prompt(prompt).unwrap(), *want);
        }
        let got_ids: Vec<f32> = prompts
            .iter()
            .flat_map(|p| sd.tokenizer.encode(p).unwrap())
            .map(|i| i as f32)
            .collect();
        assert_eq!(
            got_ids, want_ids,
            "form {form}: token ids differ from diffusers'"
        );
        let pe = values(sd.encode_prompts(&prompts, 1).unwrap());
        assert_close(
            &format!("ti.prompt_embeds (form {form})"),
            &pe,
            &want_pe,
            1e-4,
        );
    }
}

#[test]
fn width_mismatch_is_refused_and_changes_nothing() {
    let mut sd = tiny_a();
    let ti = TextualInversion {
        token: "<sd2>".into(),
        vectors: vec![vec![0.1; 1024]; 2],
        width: 1024,
        format: TiFormat::A1111Safetensors,
        path: PathBuf::from("sd2-embedding.safetensors"),
    };
    let err = textual_inversion::apply(&ti, &mut sd.tokenizer, &mut sd.text_encoder).unwrap_err();
    assert!(
        matches!(
            err,
            Error::EmbeddingWidthMismatch {
                width: 1024,
                model_width: 32,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("this embedding is 1024 wide (made for SD 2.x); the loaded model's text encoder is 32 wide"), "{msg}");
    assert_eq!(sd.tokenizer.vocab_size(), 49408);
    assert_eq!(table_rows(&sd), 49408);
}

#[test]
fn a_token_already_in_the_vocabulary_is_refused() {
    let mut sd = tiny_a();
    let ti = textual_inversion::load(&fixture("adapters/ti_cat.safetensors"), Some("cat")).unwrap();
    let err = textual_inversion::apply(&ti, &mut sd.tokenizer, &mut sd.text_encoder).unwrap_err();
    assert!(matches!(err, Error::TokenInVocabulary { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "token 'cat' is already in the vocabulary; pass another token name"
    );
    // Loading the same token twice is refused too, and leaves tokenizer and table in step.
    let ti =
        textual_inversion::load(&fixture("adapters/ti_style.pt"), Some("<kiln-style>")).unwrap();
    textual_inversion::apply(&ti, &mut sd.tokenizer, &mut sd.text_encoder).unwrap();
    let err = textual_inversion::apply(&ti, &mut sd.tokenizer, &mut sd.text_encoder).unwrap_err();
    assert_eq!(
        err.to_string(),
        "token '<kiln-style>' is already in the vocabulary; pass another token name"
    );
    assert_eq!(sd.tokenizer.vocab_size(), 49410);
    assert_eq!(table_rows(&sd), 49410);
}

#[test]
fn malicious_pickles_are_refused_without_running_them() {
    for name in ["malicious.pt", "malicious_raw.pt"] {
        let err = textual_inversion::load(&fixture(&format!("adapters/{name}")), None).unwrap_err();
        match &err {
            Error::UnsafePickle { callable, .. } => assert_eq!(callable, "posix.system", "{name}"),
            other => panic!("{name}: expected UnsafePickle, got {other:?}"),
        }
        eprintln!("{name}: {err}");
        assert!(err.to_string().contains("posix.system"), "{err}");
    }
}

#[test]
fn files_that_are_not_embeddings_say_what_they_are() {
    let err =
        textual_inversion::load(&fixture("adapters/kohya_qkvo.safetensors"), None).unwrap_err();
    assert!(matches!(err, Error::NotAnEmbedding { .. }), "{err:?}");
    eprintln!("{err}");
    assert!(err.to_string().contains("LoRA"), "{err}");

    let err = textual_inversion::load(&fixture("adapters/empty.safetensors"), None).unwrap_err();
    assert!(matches!(err, Error::NotAnEmbedding { .. }), "{err:?}");
    assert!(err.to_string().contains("no tensors"), "{err}");

    let err = textual_inversion::load(&fixture("tiny-a.safetensors"), None).unwrap_err();
    assert!(matches!(err, Error::NotAnEmbedding { .. }), "{err:?}");
    assert!(err.to_string().contains("checkpoint"), "{err}");
}

fn write(dir: &Path, name: &str, tensors: &[(&str, Vec<usize>)]) -> PathBuf {
    let data: Vec<Vec<f32>> = tensors
        .iter()
        .map(|(_, s)| vec![0.5; s.iter().product()])
        .collect();
    let list: Vec<WriteTensor> = tensors
        .iter()
        .zip(&data)
        .map(|((k, s), d)| WriteTensor {
            name: k,
            shape: s.clone(),
            data: d,
        })
        .collect();
    let p = dir.join(name);
    write_f32(&p, &list, &Default::default()).unwrap();
    p
}

#[test]
fn broken_and_foreign_embedding_files_give_named_errors() {
    let dir = tempfile::tempdir().unwrap();

    let sdxl = write(
        dir.path(),
        "sdxl.safetensors",
        &[("clip_l", vec![2, 768]), ("clip_g", vec![2, 1280])],
    );
    let err = textual_inversion::load(&sdxl, None).unwrap_err();
    assert!(matches!(err, Error::UnsupportedModel { .. }), "{err:?}");
    assert!(err.to_string().contains("Stable Diffusion XL"), "{err}");

    let three_d = write(
        dir.path(),
        "3d.safetensors",
        &[("emb_params", vec![1, 2, 32])],
    );
    let err = textual_inversion::load(&three_d, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected [width] or [vectors, width]"),
        "{err}"
    );

    let empty = dir.path().join("zero.pt");
    std::fs::write(&empty, b"").unwrap();
    let err = textual_inversion::load(&empty, None).unwrap_err();
    assert!(matches!(err, Error::NotAnEmbedding { .. }), "{err:?}");

    let lfs = dir.path().join("lfs.safetensors");
    std::fs::write(
        &lfs,
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 3840\n",
    )
    .unwrap();
    assert!(matches!(
        textual_inversion::load(&lfs, None),
        Err(Error::GitLfsPointer { .. })
    ));

    let bytes = std::fs::read(fixture("adapters/ti_style.pt")).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 30, 10] {
        let truncated = dir.path().join("cut.pt");
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        let err = textual_inversion::load(&truncated, None).unwrap_err();
        eprintln!("cut at {cut}: {err}");
        assert!(matches!(err, Error::Format { .. }), "cut at {cut}: {err:?}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }
    let bytes = std::fs::read(fixture("adapters/ti_style.safetensors")).unwrap();
    let truncated = dir.path().join("cut.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 5]).unwrap();
    let err = textual_inversion::load(&truncated, None).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    // A tokenizer alone can take an embedding's tokens (e.g. for `kiln tokenize`).
    let mut tok = ClipTokenizer::sd15().unwrap();
    let ti = textual_inversion::load(&fixture("adapters/ti_style_diffusers.bin"), None).unwrap();
    assert_eq!(
        tok.add_embedding_tokens(&ti.token, ti.n_vectors()).unwrap(),
        [49408, 49409]
    );
}
