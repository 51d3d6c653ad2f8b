//! Token ids equal transformers' `CLIPTokenizer` (what diffusers uses) on hard prompts.

use kiln_engine::tokenizer::ClipTokenizer;

use crate::common::fixture;

#[test]
fn ids_match_transformers_on_hard_prompts() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_cases.json")).unwrap())
            .unwrap();
    assert!(
        cases.len() >= 20,
        "need at least 20 cases, have {}",
        cases.len()
    );
    let tok = ClipTokenizer::sd15().unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let got = tok.encode(text).unwrap();
        if got != want {
            failures.push(format!(
                "{text:?}: got {:?}, want {:?}",
                &got[..12],
                &want[..12]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} prompts differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A model whose tokenizer config says `model_max_length` 24 (as kiln-tiny's can) is read
/// with it: prompts become 24 ids, and since CLIP's text encoder is causal its embeddings are
/// exactly the first 24 rows of the 77-id ones, and the model generates. A length beyond the
/// encoder's positions is read as the positions; one with no room for a prompt is refused.
#[test]
fn a_model_with_a_shorter_tokenizer_length_encodes_that_many_tokens() {
    use kiln_engine::pipeline::StableDiffusion;
    let device = kiln_engine::device::device("cpu").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    crate::common::copy_dir(&fixture("tiny-a"), &model);
    let config = model.join("tokenizer/tokenizer_config.json");
    let set_length = |n: usize| {
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        c["model_max_length"] = n.into();
        std::fs::write(&config, c.to_string()).unwrap();
    };
    let prompt = vec!["a large red circle at the top left on a white background".to_owned()];
    let full = StableDiffusion::load(&fixture("tiny-a"), None, &device).unwrap();
    set_length(24);
    let short = StableDiffusion::load(&model, None, &device).unwrap();
    assert_eq!(short.tokenizer.max_length(), 24);
    assert_eq!(short.info.config.tokenizer_max_length, 24);
    let a = full.encode_prompts(&prompt, 1).unwrap();
    let b = short.encode_prompts(&prompt, 1).unwrap();
    let [_, _, d] = a.dims();
    assert_eq!(a.dims()[1], 77);
    assert_eq!(b.dims(), [1, 24, d]);
    let first: Vec<f32> = a
        .slice([0..1, 0..24, 0..d])
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let got: Vec<f32> = b.into_data().try_to_vec::<f32>().unwrap();
    crate::common::assert_close("first 24 rows", &got, &first, 1e-5);
    let mut req = crate::parity::ddim_request("tiny-a");
    req.latents = None;
    req.steps = 2;
    let out = short
        .generate(&req, &kiln_engine::job::CancelToken::new(), &mut |_| {})
        .unwrap();
    assert_eq!(out.images.len(), req.prompts.len());
    // transformers writes a huge model_max_length when none is set: read as the positions.
    set_length(1_000_000);
    let sd = StableDiffusion::load(&model, None, &device).unwrap();
    assert_eq!(sd.tokenizer.max_length(), 77);
    set_length(2);
    let Err(err) = StableDiffusion::load(&model, None, &device) else {
        panic!("a length of 2 is refused")
    };
    let err = err.to_string();
    assert!(err.contains("model_max_length 2"), "{err}");
}
