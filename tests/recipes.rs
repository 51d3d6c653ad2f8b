//! Images carry their recipe: `parameters` (A1111) + `kiln` (JSON) chunks, `kiln info`,
//! `kiln generate --from` (bit-identical regeneration), and img2img from the CLI.

use std::path::Path;

use kiln_engine::image::{RgbImage, read_png, read_png_text, write_png};
use kiln_engine::metadata::{Recipe, Source, read_image_info};

use crate::cli::{generate_request, kiln, stderr};
use crate::common::{assert_close, fixture, reference};
use crate::parity::ddim_request;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn recipe(png: &Path) -> Recipe {
    let info = read_image_info(png).unwrap();
    assert_eq!(info.source, Source::Kiln);
    info.recipe.unwrap()
}

/// A Kiln image made with a stochastic sampler, a LoRA (by prompt tag) and an embedding.
fn make_original(dir: &Path) -> std::path::PathBuf {
    let png = dir.join("a.png");
    let model = fixture("tiny-a");
    let lora_dir = fixture("adapters");
    let emb = format!("{}:<cat>", fixture("adapters/ti_cat.safetensors").display());
    let o = kiln(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a <cat>, (sunset:1.2), <lora:kohya_qkvo:0.6>",
        "--negative",
        "blurry",
        "--sampler",
        "euler-a",
        "--karras",
        "--steps",
        "4",
        "--cfg",
        "5",
        "--seed",
        "1234",
        "--width",
        "32",
        "--height",
        "48",
        "--lora-dir",
        lora_dir.to_str().unwrap(),
        "--embedding",
        &emb,
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    png
}

#[test]
fn generate_writes_both_chunks_and_from_regenerates_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_original(dir.path());
    let r = recipe(&a);
    assert_eq!(r.prompt, "a <cat>, (sunset:1.2), <lora:kohya_qkvo:0.6>");
    assert_eq!(
        (r.steps, r.cfg, r.seed, r.width, r.height),
        (4, 5.0, 1234, 32, 48)
    );
    assert_eq!(
        r.device,
        Some(kiln_engine::device::DeviceSpec::Cpu),
        "`auto` recorded as the device it chose"
    );
    assert_eq!(r.sampler.name(), "euler-a");
    assert_eq!(r.loras.len(), 1);
    assert_eq!(
        (r.loras[0].name.as_str(), r.loras[0].weight),
        ("kohya_qkvo", 0.6)
    );
    assert_eq!(r.embeddings[0].token, "<cat>");
    assert_eq!(r.model.hash.as_deref().map(str::len), Some(10));
    let params = read_png_text(&a)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "parameters")
        .unwrap()
        .1;
    assert!(
        params.contains("Steps: 4, Sampler: Euler a, Schedule type: Karras, CFG scale: 5, Seed: 1234, Size: 32x48, Model hash: "),
        "{params}"
    );

    // --from with no other flag: same pixels, same recipe (no --model, --lora-dir or --embedding).
    let b = dir.path().join("b.png");
    let o = kiln(&[
        "generate",
        "--from",
        a.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        read_png(&b).unwrap(),
        read_png(&a).unwrap(),
        "--from reproduces the image exactly"
    );
    assert_eq!(recipe(&b), r);

    // Flags override the recipe.
    let c = dir.path().join("c.png");
    let o = kiln(&[
        "generate",
        "--from",
        a.to_str().unwrap(),
        "--seed",
        "99",
        "--steps",
        "3",
        "--out",
        c.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rc = recipe(&c);
    assert_eq!((rc.seed, rc.steps, rc.sampler), (99, 3, r.sampler));
    assert_ne!(read_png(&c).unwrap(), read_png(&a).unwrap());

    // Precision is part of the recipe: an f16 image regenerates as f16.
    let e = dir.path().join("e.png");
    let o = kiln(&[
        "generate",
        "--from",
        a.to_str().unwrap(),
        "--precision",
        "f16",
        "--out",
        e.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(recipe(&e).precision, kiln_engine::job::Precision::F16);
    let f = dir.path().join("f.png");
    let o = kiln(&[
        "generate",
        "--from",
        e.to_str().unwrap(),
        "--out",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        read_png(&f).unwrap(),
        read_png(&e).unwrap(),
        "f16 regenerates exactly"
    );
}

#[test]
fn info_reads_kiln_a1111_and_comfyui_images() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_original(dir.path());
    let o = kiln(&["info", a.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = out(&o);
    assert!(
        text.starts_with(
            "source: Kiln\na <cat>, (sunset:1.2), <lora:kohya_qkvo:0.6>\nNegative prompt: blurry\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("lora: kohya_qkvo (") && text.contains("embedding: <cat> ("),
        "{text}"
    );

    let pixels = RgbImage {
        width: 2,
        height: 2,
        pixels: vec![0; 12],
    };
    let a1111 = dir.path().join("a1111.png");
    write_png(&a1111, &pixels, &[("parameters", "a fox\nNegative prompt: ugly\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 5, Size: 512x512, Model: sd15")]).unwrap();
    let o = kiln(&["info", "--json", a1111.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(json["source"], "Automatic1111");
    assert_eq!(json["parameters"]["prompt"], "a fox");
    assert_eq!(json["parameters"]["steps"], 30);
    assert_eq!(json["parameters"]["schedule"], "karras");

    let comfy = dir.path().join("comfy.png");
    let graph = r#"{"3": {"class_type": "KSampler", "inputs": {"seed": 8, "steps": 12, "cfg": 6.0, "sampler_name": "euler_ancestral", "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a boat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}}}"#;
    write_png(&comfy, &pixels, &[("prompt", graph)]).unwrap();
    let o = kiln(&["info", comfy.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out(&o).contains("source: ComfyUI\na boat\nSteps: 12, Sampler: Euler a, CFG scale: 6, Seed: 8, Size: 64x64, Model: tiny"), "{}", out(&o));

    // --from an A1111 image takes its settings; the model must be named.
    let d = dir.path().join("d.png");
    let o = kiln(&[
        "generate",
        "--from",
        comfy.to_str().unwrap(),
        "--out",
        d.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("give --model"),
        "{}",
        stderr(&o)
    );
    let o = kiln(&[
        "generate",
        "--from",
        comfy.to_str().unwrap(),
        "--model",
        fixture("tiny-b").to_str().unwrap(),
        "--steps",
        "2",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rd = recipe(&d);
    assert_eq!(
        (
            rd.prompt.as_str(),
            rd.seed,
            rd.steps,
            rd.width,
            rd.sampler.name()
        ),
        ("a boat", 8, 2, 64, "euler-a")
    );

    let plain = dir.path().join("plain.png");
    write_png(&plain, &pixels, &[]).unwrap();
    let o = kiln(&["info", plain.to_str().unwrap()]);
    assert!(
        !o.status.success() && stderr(&o).contains("carries no generation parameters"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn cli_img2img_matches_diffusers_and_records_strength() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = ddim_request("tiny-b");
    let (shape, noise) = reference("samplers", "tiny-b.img2img.noise");
    req.latents = Some(kiln_engine::job::LatentsData {
        shape: shape.try_into().unwrap(),
        values: noise,
    });
    let init = fixture("ref/tiny-b.init.png");
    let o = generate_request(
        &fixture("tiny-b"),
        None,
        &req,
        dir.path(),
        &["--init-image", init.to_str().unwrap(), "--strength", "0.6"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("step 4/4"),
        "plain progress lines when stderr is not a terminal: {}",
        stderr(&o)
    );
    let saved =
        kiln_engine::weights::safetensors::SafeTensors::open(&dir.path().join("final.safetensors"))
            .unwrap();
    assert_close(
        "CLI img2img DDIM 0.6",
        &saved.f32("latents").unwrap(),
        &reference("samplers", "tiny-b.img2img.ddim.latents_out").1,
        1e-4,
    );
    let png = dir.path().join("img-0.png");
    let r = recipe(&png);
    assert_eq!(r.init_image.as_ref().map(|i| i.strength), Some(0.6));
    let params = read_png_text(&png)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "parameters")
        .unwrap()
        .1;
    assert!(params.contains("Denoising strength: 0.6"), "{params}");
    let o = kiln(&[
        "generate",
        "--model",
        "x",
        "--prompt",
        "x",
        "--strength",
        "0.5",
        "--out",
        "/tmp/never.png",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("--strength needs --init-image"),
        "{}",
        stderr(&o)
    );
}
