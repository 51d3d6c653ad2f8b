//! Numerical parity with diffusers on the tiny random-weight fixture models.
//! Tolerances: tensors max|Δ| / max|ref| ≤ 1e-4; images mean |Δ| ≤ 0.3 on 0–255.

use kiln_engine::job::CancelToken;
use kiln_engine::schedulers::Sampler;

pub use crate::reference::{ddim_request, image_mean_abs_diff};

use crate::common::{
    Layout, MODELS, assert_close, model, reference, reference_json, tensor, values,
};

const TOL: f32 = 1e-4;
const LAYOUTS: [Layout; 2] = [Layout::Diffusers, Layout::SingleFile];

#[test]
fn text_encoder_matches_transformers() {
    for m in MODELS {
        let (ids_shape, ids) = reference(m, "text.input_ids");
        let (_, want) = reference(m, "text.last_hidden_state");
        let ids: Vec<i64> = ids.iter().map(|v| *v as i64).collect();
        for layout in LAYOUTS {
            let sd = model(m, layout);
            let ids =
                kiln_engine::burn::tensor::Tensor::<2, kiln_engine::burn::tensor::Int>::from_data(
                    kiln_engine::burn::tensor::TensorData::new(
                        ids.clone(),
                        [ids_shape[0], ids_shape[1]],
                    ),
                    sd.device(),
                );
            let got = values(sd.text_encoder.forward(ids, 1));
            assert_close(&format!("{m} {layout:?} text"), &got, &want, TOL);
        }
    }
}

#[test]
fn tokenizer_ids_in_references_match_ours() {
    for m in MODELS {
        let json = reference_json(m);
        let prompts: Vec<String> = serde_json::from_value(json["text"]["prompts"].clone()).unwrap();
        let (_, ids) = reference(m, "text.input_ids");
        let sd = model(m, Layout::Diffusers);
        let ours: Vec<f32> = values(sd.token_ids(&prompts).unwrap().float());
        assert_eq!(ours, ids, "{m}: token ids differ");
    }
}

#[test]
fn unet_matches_diffusers() {
    for m in MODELS {
        let (s_shape, sample) = reference(m, "unet.sample");
        let (c_shape, context) = reference(m, "unet.encoder_hidden_states");
        for (t, out) in [(537.0f32, "unet.out"), (312.75, "unet.out_frac")] {
            let (_, want) = reference(m, out);
            for layout in LAYOUTS {
                let sd = model(m, layout);
                let got = sd.unet.forward(
                    tensor::<4>(&s_shape, sample.clone()),
                    &vec![t; s_shape[0]],
                    &tensor::<3>(&c_shape, context.clone()),
                );
                assert_close(
                    &format!("{m} {layout:?} UNet t={t}"),
                    &values(got),
                    &want,
                    TOL,
                );
            }
        }
    }
}

#[test]
fn vae_decode_and_encode_match_diffusers() {
    for m in MODELS {
        let (z_shape, z) = reference(m, "vae.latents");
        let (_, want) = reference(m, "vae.decoded");
        let (x_shape, x) = reference(m, "vae.image");
        let (_, want_mean) = reference(m, "vae.posterior_mean");
        for layout in LAYOUTS {
            let sd = model(m, layout);
            let got = values(sd.vae.decode(tensor::<4>(&z_shape, z.clone())));
            assert_close(&format!("{m} {layout:?} VAE decode"), &got, &want, TOL);
            let got = values(sd.vae.encode_mean(tensor::<4>(&x_shape, x.clone())));
            assert_close(&format!("{m} {layout:?} VAE encode"), &got, &want_mean, TOL);
        }
    }
}

/// The request the engine thread resolves to [`ddim_request`]`(m)` (its seed fixed, its
/// noise given).
pub fn ddim_spec(m: &str) -> kiln_engine::resolve::GenerationSpec {
    let r = ddim_request(m);
    kiln_engine::resolve::GenerationSpec {
        prompts: r.prompts,
        negatives: r.negatives,
        sampler: Some(r.sampler.kind()),
        eta: Some(0.0),
        steps: Some(r.steps),
        cfg: Some(r.cfg),
        seed: Some(r.seed),
        width: Some(r.width),
        height: Some(r.height),
        batch_size: r.batch,
        latents: r.latents,
        ..Default::default()
    }
}

#[test]
fn ddim_txt2img_matches_diffusers() {
    for m in MODELS {
        let req = ddim_request(m);
        let (_, want_latents) = reference(m, "ddim.latents_out");
        let (_, want_image) = reference(m, "ddim.image");
        for layout in LAYOUTS {
            let sd = model(m, layout);
            let mut steps = Vec::new();
            let out = sd
                .generate(&req, &CancelToken::new(), &mut |p| steps.push(p.step))
                .unwrap();
            assert_eq!(
                steps,
                (1..=req.steps).collect::<Vec<_>>(),
                "one callback per step"
            );
            assert_close(
                &format!("{m} {layout:?} DDIM latents"),
                &out.latents.values,
                &want_latents,
                TOL,
            );
            let diff = image_mean_abs_diff(&out.images, &want_image);
            eprintln!("{m} {layout:?} DDIM image mean|Δ| = {diff:.4}/255");
            assert!(diff <= 0.3, "{m} {layout:?}: image mean |Δ| {diff} > 0.3");
            assert_eq!(
                (out.images[0].width, out.images[0].height),
                (req.width, req.height)
            );
        }
    }
}

#[test]
fn cancel_stops_before_the_next_step() {
    let sd = model("tiny-b", Layout::Diffusers);
    let req = ddim_request("tiny-b");
    let cancel = CancelToken::new();
    let mut seen = 0;
    let result = sd.generate(&req, &cancel, &mut |p| {
        seen = p.step;
        if p.step == 2 {
            cancel.cancel();
        }
    });
    assert!(
        matches!(result, Err(kiln_engine::Error::Cancelled)),
        "{result:?}"
    );
    assert_eq!(seen, 2, "no step runs after cancel");
}

#[test]
fn seeded_generation_is_deterministic_and_per_image() {
    let sd = model("tiny-b", Layout::Diffusers);
    let mut req = ddim_request("tiny-b");
    req.latents = None;
    req.steps = 2;
    req.prompts.truncate(1);
    req.negatives.truncate(1);
    req.seed = 7;
    req.batch = 2;
    let a = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
    let b = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
    assert_eq!(a.latents, b.latents, "same seed → identical latents");
    assert_eq!(a.seeds, vec![7, 8]);
    // Image 1 of seed 7 is image 0 of seed 8.
    req.seed = 8;
    req.batch = 1;
    let c = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
    let per = c.latents.values.len();
    assert_eq!(&a.latents.values[per..], &c.latents.values[..]);
    assert_ne!(
        &a.latents.values[..per],
        &c.latents.values[..],
        "different seeds differ"
    );
}

#[test]
fn ldm_yaml_beside_a_single_file_supplies_the_heads() {
    // tiny-a has 4 heads per attention; shapes cannot tell, and SD 1.5's default is 8.
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("tiny.safetensors");
    std::fs::copy(crate::common::fixture("tiny-a.safetensors"), &ckpt).unwrap();
    let device = kiln_engine::device::device("cpu").unwrap();
    let (s_shape, sample) = reference("tiny-a", "unet.sample");
    let (c_shape, context) = reference("tiny-a", "unet.encoder_hidden_states");
    let (_, want) = reference("tiny-a", "unet.out");
    let run = |sd: &kiln_engine::pipeline::StableDiffusion| {
        values(sd.unet.forward(
            tensor::<4>(&s_shape, sample.clone()),
            &[537.0, 537.0],
            &tensor::<3>(&c_shape, context.clone()),
        ))
    };
    let guessed = kiln_engine::pipeline::StableDiffusion::load(&ckpt, None, &device).unwrap();
    assert!(
        crate::common::relative_max_error(&run(&guessed), &want) > 1e-2,
        "8 heads must give a different result"
    );
    std::fs::write(
        dir.path().join("tiny.yaml"),
        "model:\n  params:\n    scale_factor: 0.18215\n    unet_config:\n      params:\n        num_heads: 4\n        context_dim: 32\n",
    )
    .unwrap();
    let sd = kiln_engine::pipeline::StableDiffusion::load(&ckpt, None, &device).unwrap();
    assert!(
        sd.info.config_source.contains("tiny.yaml"),
        "{}",
        sd.info.config_source
    );
    assert_close("tiny-a UNet with LDM yaml", &run(&sd), &want, TOL);
}

#[test]
fn ddim_eta_adds_seeded_noise() {
    let sd = model("tiny-b", Layout::Diffusers);
    let mut req = ddim_request("tiny-b");
    req.steps = 4;
    req.seed = 11;
    let deterministic = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
    req.sampler = Sampler::Ddim { eta: 1.0 };
    let a = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
    let b = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
    assert_eq!(a.latents, b.latents, "same seed, same η → identical");
    assert_ne!(a.latents, deterministic.latents, "η = 1 adds noise");
    req.seed = 12;
    let c = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
    assert_ne!(a.latents, c.latents, "the seed drives the η noise");
}

#[test]
fn parameter_paths_are_the_diffusers_keys() {
    use kiln_engine::models::paths::param_paths;
    use kiln_engine::weights::safetensors::SafeTensors;
    for m in crate::common::MODELS {
        let sd = model(m, Layout::Diffusers);
        let dir = crate::common::fixture(m);
        let keys = |rel: &str, strip: &str| -> std::collections::BTreeMap<String, Vec<usize>> {
            let f = SafeTensors::open(&dir.join(rel)).unwrap();
            f.tensors()
                .iter()
                .map(|(k, i)| {
                    (
                        k.strip_prefix(strip).unwrap_or(k).to_owned(),
                        i.shape.clone(),
                    )
                })
                .collect()
        };
        let ours =
            |paths: Vec<(String, Vec<usize>)>| -> std::collections::BTreeMap<String, Vec<usize>> {
                // Burn keeps linear weights as [in, out]; files have [out, in].
                paths
                    .into_iter()
                    .map(|(k, s)| (k, if s.len() == 2 { vec![s[1], s[0]] } else { s }))
                    .collect()
            };
        assert_eq!(
            ours(param_paths(&sd.unet)),
            keys("unet/diffusion_pytorch_model.safetensors", ""),
            "{m} UNet"
        );
        assert_eq!(
            ours(param_paths(&sd.vae)),
            keys("vae/diffusion_pytorch_model.safetensors", ""),
            "{m} VAE"
        );
        let text = ours(param_paths(&sd.text_encoder));
        let file = keys("text_encoder/model.safetensors", "text_model.");
        // The token embedding [vocab, dim] is not a linear weight: undo the swap above.
        let mut text = text;
        if let Some(s) = text.get_mut("embeddings.token_embedding.weight") {
            s.reverse();
        }
        if let Some(s) = text.get_mut("embeddings.position_embedding.weight") {
            s.reverse();
        }
        assert_eq!(text, file, "{m} text encoder");
    }
}

/// f16 UNet and text encoder (VAE f32) on the CPU backend: the path GPU backends take by
/// default. f16 rounding keeps it close to, not equal to, the f32 reference.
#[test]
fn f16_precision_stays_close_to_diffusers_f32() {
    use kiln_engine::job::Precision;
    use kiln_engine::pipeline::StableDiffusion;
    for m in MODELS {
        let device = kiln_engine::device::device("cpu").unwrap();
        let mut sd = StableDiffusion::load(&crate::common::fixture(m), None, &device).unwrap();
        sd.set_precision(Precision::F16);
        assert_eq!(sd.precision(), Precision::F16);
        let req = ddim_request(m);
        let out = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
        let (_, want) = reference(m, "ddim.latents_out");
        let err = crate::common::relative_max_error(&out.latents.values, &want);
        let diff = image_mean_abs_diff(&out.images, &reference(m, "ddim.image").1);
        eprintln!("{m} f16: latents max|Δ|/max|ref| = {err:.3e}, image mean|Δ| = {diff:.3}/255");
        assert!(err < 1e-2, "{m} f16 latents {err}");
        assert!(diff < 0.5, "{m} f16 image mean |Δ| {diff}");
    }
}
