//! AUTOMATIC1111's vocabulary: its sampler labels and aliases, its schedulers, and its txt2img
//! / img2img request bodies read into what Kiln runs ([`ApiRequest`]).
//!
//! Decisions where A1111 and Kiln differ:
//! - a field left out takes **Kiln's** default, as `kiln generate` does (the model's native
//!   size, 25 steps, CFG 7.5, DDIM), so an API call and the command line with the same
//!   settings make the same pixels; clients that send A1111's full body get exactly what they
//!   sent;
//! - a field Kiln cannot honour is accepted at its A1111 default and refused (422 naming the
//!   field) at any other value: `enable_hr`, `restore_faces`, `tiling`, `alwayson_scripts`,
//!   `script_name`, `styles`, variation seeds, `s_churn`/`s_tmin`/`s_tmax`/`s_noise`, an img2img
//!   `mask`, `refiner_checkpoint`; fields that only matter with those (`hr_*`, `subseed`, …)
//!   are accepted and ignored;
//! - `eta` is DDIM's η (as A1111's `eta` overrides `eta_ddim`); ancestral samplers run at
//!   η = 1, so they accept only 1; the other samplers ignore it, as in A1111;
//! - img2img's `resize_mode`: 0 "Just resize" (stretch), 1 "Crop and resize" (Kiln's own
//!   policy), 2 "Resize and fill" (fit inside, edges stretched into the bands), 3 "Just resize
//!   (latent upscale)" as 0.

use kiln_engine::schedulers::{Sampler, SamplerKind, Schedule};
use serde_json::{Value, json};

use crate::body::Fields;
use crate::config::Limits;
use crate::error::ApiError;
use crate::images::ResizeMode;

/// A1111's label of each Kiln sampler and the aliases A1111 lists for it (plus Kiln's own
/// CLI name).
pub const SAMPLERS: [(SamplerKind, &str, &[&str]); 11] = [
    (
        SamplerKind::DpmPp2m,
        "DPM++ 2M",
        &["k_dpmpp_2m", "dpmpp-2m"],
    ),
    (
        SamplerKind::DpmPp2mSde,
        "DPM++ 2M SDE",
        &["k_dpmpp_2m_sde", "dpmpp-2m-sde"],
    ),
    (
        SamplerKind::DpmPp2sA,
        "DPM++ 2S a",
        &["k_dpmpp_2s_a", "dpmpp-2s-a"],
    ),
    (
        SamplerKind::EulerA,
        "Euler a",
        &["k_euler_a", "k_euler_ancestral", "euler-a"],
    ),
    (SamplerKind::Euler, "Euler", &["k_euler", "euler"]),
    (SamplerKind::Lms, "LMS", &["k_lms", "lms"]),
    (SamplerKind::Heun, "Heun", &["k_heun", "heun"]),
    (SamplerKind::Ddim, "DDIM", &["ddim"]),
    (SamplerKind::Ddpm, "DDPM", &["ddpm"]),
    (SamplerKind::UniPc, "UniPC", &["unipc"]),
    (SamplerKind::Lcm, "LCM", &["k_lcm", "lcm"]),
];

/// A1111's schedulers Kiln has: (name, label, schedule).
pub const SCHEDULERS: [(&str, &str, Schedule); 3] = [
    ("automatic", "Automatic", Schedule::Default),
    ("karras", "Karras", Schedule::Karras),
    ("exponential", "Exponential", Schedule::Exponential),
];

/// A1111's label of `schedule` ("Automatic" for the model's own).
pub fn scheduler_label(schedule: Schedule) -> &'static str {
    SCHEDULERS
        .iter()
        .find(|s| s.2 == schedule)
        .map_or("Automatic", |s| s.1)
}

/// `GET /sdapi/v1/samplers`.
pub fn samplers_json() -> Value {
    Value::Array(
        SAMPLERS
            .iter()
            .map(|(kind, label, aliases)| {
                json!({
                    "name": label,
                    "aliases": aliases,
                    "options": if kind.fixed_schedule() { json!({}) } else { json!({"scheduler": "automatic"}) },
                })
            })
            .collect(),
    )
}

/// `GET /sdapi/v1/schedulers`.
pub fn schedulers_json() -> Value {
    Value::Array(
        SCHEDULERS
            .iter()
            .map(|(name, label, _)| {
                json!({
                    "name": name,
                    "label": label,
                    "aliases": null,
                    "default_rho": if *name == "karras" { json!(7.0) } else { json!(-1) },
                    "need_inner_model": false,
                })
            })
            .collect(),
    )
}

/// The sampler A1111 calls `name` (a label, an alias, Kiln's name, case-insensitive; an old
/// label ending in " Karras" brings the Karras schedule).
pub fn find_sampler(name: &str) -> Result<(SamplerKind, Option<Schedule>), ApiError> {
    let wanted = name.trim();
    let (base, schedule) = match wanted
        .len()
        .checked_sub(" Karras".len())
        .filter(|&i| wanted.is_char_boundary(i) && wanted[i..].eq_ignore_ascii_case(" karras"))
    {
        Some(i) => (&wanted[..i], Some(Schedule::Karras)),
        None => (wanted, None),
    };
    SAMPLERS
        .iter()
        .find(|(_, label, aliases)| {
            label.eq_ignore_ascii_case(base) || aliases.iter().any(|a| a.eq_ignore_ascii_case(base))
        })
        .map(|(kind, _, _)| (*kind, schedule))
        .ok_or_else(|| ApiError::NotFound {
            what: "Sampler",
            name: name.to_owned(),
            known: SAMPLERS.iter().map(|(_, l, _)| (*l).to_owned()).collect(),
        })
}

/// The schedule A1111's scheduler `name` (or label) means.
pub fn find_scheduler(name: &str) -> Result<Schedule, ApiError> {
    SCHEDULERS
        .iter()
        .find(|(n, label, _)| {
            n.eq_ignore_ascii_case(name.trim()) || label.eq_ignore_ascii_case(name.trim())
        })
        .map(|(_, _, s)| *s)
        .ok_or_else(|| ApiError::NotFound {
            what: "Scheduler",
            name: name.to_owned(),
            known: SCHEDULERS.iter().map(|(_, l, _)| (*l).to_owned()).collect(),
        })
}

/// img2img's source.
#[derive(Debug, Clone, PartialEq)]
pub struct InitRequest {
    /// The image file's bytes (PNG, JPEG or WebP), decoded from base64.
    pub bytes: Vec<u8>,
    /// `denoising_strength`.
    pub strength: f64,
    /// `resize_mode`.
    pub resize_mode: ResizeMode,
}

/// Settings a request overrides for itself (`override_settings`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `sd_model_checkpoint`: a model's title, name or hash.
    pub model: Option<String>,
    /// `CLIP_stop_at_last_layers`.
    pub clip_skip: Option<usize>,
    /// `sd_vae` ("Automatic" or "None": the checkpoint's own VAE).
    pub vae: Option<String>,
}

/// A txt2img or img2img request as Kiln understands it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// The prompt (A1111 syntax, `<lora:…>` tags allowed).
    pub prompt: String,
    /// The negative prompt.
    pub negative_prompt: String,
    /// The seed; None = `-1`, drawn by the server.
    pub seed: Option<u64>,
    /// The sampler, when given.
    pub sampler: Option<SamplerKind>,
    /// The schedule (`scheduler`, or a " Karras" label).
    pub schedule: Option<Schedule>,
    /// DDIM's η.
    pub eta: Option<f64>,
    /// Steps.
    pub steps: Option<usize>,
    /// CFG scale.
    pub cfg: Option<f64>,
    /// Width.
    pub width: Option<usize>,
    /// Height.
    pub height: Option<usize>,
    /// Images per iteration.
    pub batch_size: usize,
    /// Iterations.
    pub n_iter: usize,
    /// Settings for this request only.
    pub overrides: Overrides,
    /// Restore the overridden settings afterwards (`override_settings_restore_afterwards`).
    pub restore_afterwards: bool,
    /// Write the images to the outputs folder.
    pub save_images: bool,
    /// Return the images.
    pub send_images: bool,
    /// img2img's source.
    pub init: Option<InitRequest>,
    /// Body fields Kiln does not know (ignored).
    pub unknown: Vec<String>,
}

/// Fields of A1111's request models that Kiln accepts and has no use for (at their defaults;
/// the ones that matter at other values are checked in [`refuse_unsupported`]).
const IGNORED: &[&str] = &[
    "hr_scale",
    "hr_upscaler",
    "hr_second_pass_steps",
    "hr_resize_x",
    "hr_resize_y",
    "hr_checkpoint_name",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_prompt",
    "hr_negative_prompt",
    "hr_cfg",
    "hr_distilled_cfg",
    "hr_additional_modules",
    "firstphase_width",
    "firstphase_height",
    "subseed",
    "do_not_save_samples",
    "do_not_save_grid",
    "comments",
    "disable_extra_networks",
    "firstpass_image",
    "force_task_id",
    "infotext",
    "user",
    "script_args",
    "refiner_switch_at",
    "s_min_uncond",
    "distilled_cfg_scale",
    "include_init_images",
    "image_cfg_scale",
    "initial_noise_multiplier",
    "latent_mask",
    "mask_blur",
    "mask_blur_x",
    "mask_blur_y",
    "mask_round",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "inpainting_mask_invert",
];

/// Refuses (422, by name) every field whose value asks for something Kiln does not do.
fn refuse_unsupported(f: &mut Fields) {
    let flags = [
        ("enable_hr", "Kiln has no hires fix"),
        ("restore_faces", "Kiln has no face restoration"),
        ("tiling", "Kiln has no tiling"),
    ];
    for (key, why) in flags {
        if f.bool(key) == Some(true) {
            f.invalid(key, format!("{why}; send false"), "unsupported");
        }
    }
    if let Some(v) = f.value("alwayson_scripts")
        && !(v.as_object().is_some_and(|o| o.is_empty()))
    {
        f.invalid(
            "alwayson_scripts",
            "Kiln runs no scripts; send {}",
            "unsupported",
        );
    }
    for key in ["script_name", "refiner_checkpoint", "mask"] {
        if f.value(key).is_some_and(|v| v.as_str() != Some("")) {
            let why = match key {
                "mask" => "Kiln has no inpainting yet; send null",
                "refiner_checkpoint" => "Kiln has no refiner; send null",
                _ => "Kiln runs no scripts; send null",
            };
            f.invalid(key, why, "unsupported");
        }
    }
    if f.strings("styles").is_some_and(|s| !s.is_empty()) {
        f.invalid("styles", "Kiln has no styles; send []", "unsupported");
    }
    if f.float("subseed_strength").is_some_and(|s| s != 0.0) {
        f.invalid(
            "subseed_strength",
            "Kiln has no variation seeds; send 0",
            "unsupported",
        );
    }
    for key in ["seed_resize_from_h", "seed_resize_from_w"] {
        if f.int(key).is_some_and(|v| v > 0) {
            f.invalid(key, "Kiln has no seed resize; send -1", "unsupported");
        }
    }
    for (key, default) in [("s_churn", 0.0), ("s_tmin", 0.0), ("s_noise", 1.0)] {
        if f.float(key).is_some_and(|v| v != default) {
            f.invalid(
                key,
                format!("Kiln's samplers take no {key}; send {default}"),
                "unsupported",
            );
        }
    }
    // A1111 sends 0 or null (meaning infinity); anything else limits churn, which Kiln lacks.
    if f.float("s_tmax").is_some_and(|v| v != 0.0) {
        f.invalid(
            "s_tmax",
            "Kiln's samplers take no s_tmax; send 0 or null",
            "unsupported",
        );
    }
    for key in IGNORED {
        f.ignore(key);
    }
}

/// Reads a `txt2img` (`img2img = false`) or `img2img` body.
pub fn parse_request(bytes: &[u8], img2img: bool, limits: &Limits) -> Result<ApiRequest, ApiError> {
    let mut f = Fields::parse(bytes)?;
    refuse_unsupported(&mut f);
    let prompt = f.string("prompt").unwrap_or_default();
    let negative_prompt = f.string("negative_prompt").unwrap_or_default();
    let seed = match f.int("seed") {
        Some(s) if s < 0 => None,
        Some(s) => Some(s as u64),
        None => None,
    };
    // `sampler_name`, else the legacy `sampler_index` (a label, or a position in the list).
    let sampler_name = f.string("sampler_name");
    let sampler_index = f.value("sampler_index");
    let label = sampler_name.or_else(|| match &sampler_index {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|i| SAMPLERS.get(i as usize))
            .map(|(_, l, _)| (*l).to_owned())
            .or_else(|| Some(n.to_string())),
        _ => None,
    });
    let (sampler, karras) = match label.filter(|l| !l.trim().is_empty()) {
        Some(l) => {
            let (kind, schedule) = find_sampler(&l)?;
            (Some(kind), schedule)
        }
        None => (None, None),
    };
    let schedule = match f.string("scheduler") {
        Some(s) => Some(find_scheduler(&s)?),
        None => karras,
    };
    let eta = f.float("eta");
    let eta = match sampler.unwrap_or(SamplerKind::Ddim) {
        SamplerKind::Ddim => eta,
        SamplerKind::EulerA | SamplerKind::DpmPp2sA | SamplerKind::DpmPp2mSde => {
            if eta.is_some_and(|e| e != 1.0) {
                f.invalid(
                    "eta",
                    "Kiln's ancestral samplers run at eta 1; send 1 or null",
                    "unsupported",
                );
            }
            None
        }
        _ => None,
    };
    if let Some(kind) = sampler
        && let Err(e) = kind.with(schedule.unwrap_or_default(), eta.unwrap_or(0.0))
    {
        f.invalid("scheduler", e.to_string(), "unsupported");
    }
    let steps = f
        .int_in("steps", 1, limits.max_steps as i64)
        .map(|s| s as usize);
    let cfg = f.float("cfg_scale");
    let max_side = limits.max_side as i64;
    let side = |f: &mut Fields, key: &str| {
        let v = f.int_in(key, 8, max_side)?;
        if v % 8 != 0 {
            f.invalid(key, "Input should be a multiple of 8", "multiple_of");
            return None;
        }
        Some(v as usize)
    };
    let width = side(&mut f, "width");
    let height = side(&mut f, "height");
    let batch_size = f
        .int_in("batch_size", 1, limits.max_images as i64)
        .unwrap_or(1) as usize;
    let n_iter = f.int_in("n_iter", 1, limits.max_images as i64).unwrap_or(1) as usize;
    if batch_size * n_iter > limits.max_images {
        f.invalid(
            "n_iter",
            format!("batch_size × n_iter must be at most {}", limits.max_images),
            "less_than_equal",
        );
    }
    let overrides = match f.value("override_settings") {
        Some(Value::Object(map)) => read_overrides(&mut f, map),
        Some(_) => {
            f.invalid(
                "override_settings",
                "Input should be a valid dictionary",
                "dict_type",
            );
            Overrides::default()
        }
        None => Overrides::default(),
    };
    let restore_afterwards = f
        .bool("override_settings_restore_afterwards")
        .unwrap_or(true);
    let save_images = f.bool("save_images").unwrap_or(false);
    let send_images = f.bool("send_images").unwrap_or(true);
    let init = if img2img {
        read_init(&mut f)
    } else {
        f.ignore("denoising_strength");
        None
    };
    let unknown = f.unknown();
    f.finish()?;
    Ok(ApiRequest {
        prompt,
        negative_prompt,
        seed,
        sampler,
        schedule,
        eta,
        steps,
        cfg,
        width,
        height,
        batch_size,
        n_iter,
        overrides,
        restore_afterwards,
        save_images,
        send_images,
        init,
        unknown,
    })
}

/// `override_settings`: the options a request may change for itself.
fn read_overrides(outer: &mut Fields, map: serde_json::Map<String, Value>) -> Overrides {
    let mut f = Fields::new(map);
    let overrides = Overrides {
        model: f.string("sd_model_checkpoint"),
        clip_skip: f
            .int_in("CLIP_stop_at_last_layers", 1, 12)
            .map(|c| c as usize),
        vae: f.string("sd_vae"),
    };
    for key in f.unknown() {
        tracing::info!(option = %key, "override_settings: an option Kiln does not have; ignored");
    }
    if let Err(ApiError::Invalid(issues)) = f.finish() {
        for issue in issues {
            let field = issue
                .loc
                .last()
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            outer.invalid(&format!("override_settings.{field}"), issue.msg, issue.kind);
        }
    }
    overrides
}

/// img2img's `init_images` (the first is used), `denoising_strength` and `resize_mode`.
fn read_init(f: &mut Fields) -> Option<InitRequest> {
    let strength = f.float("denoising_strength").unwrap_or(0.75);
    if !(strength > 0.0 && strength <= 1.0) {
        f.invalid(
            "denoising_strength",
            "Input should be greater than 0 and at most 1",
            "less_than_equal",
        );
    }
    let resize_mode = match f.int_in("resize_mode", 0, 3).unwrap_or(0) {
        1 => ResizeMode::CropAndResize,
        2 => ResizeMode::ResizeAndFill,
        _ => ResizeMode::JustResize,
    };
    let images = f.strings("init_images");
    let Some(first) = images.as_ref().and_then(|i| i.first()) else {
        if images.is_some() || !f.has("init_images") {
            f.invalid(
                "init_images",
                "img2img needs one image in init_images (base64)",
                "missing",
            );
        }
        return None;
    };
    match crate::images::decode_base64(first) {
        Some(bytes) => Some(InitRequest {
            bytes,
            strength,
            resize_mode,
        }),
        None => {
            f.invalid(
                "init_images",
                "not valid base64 (a data: URL prefix is allowed)",
                "base64_decode",
            );
            None
        }
    }
}

/// The `parameters` echoed in a response: the request as Kiln understood it, with A1111's
/// field names.
pub fn understood(
    req: &ApiRequest,
    sampler: &Sampler,
    steps: usize,
    cfg: f64,
    size: (usize, usize),
) -> Value {
    let mut v = json!({
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "seed": req.seed.map_or(-1, |s| s as i64),
        "sampler_name": sampler.a1111_name(),
        "scheduler": scheduler_label(sampler.schedule()),
        "steps": steps,
        "cfg_scale": cfg,
        "width": size.0,
        "height": size.1,
        "batch_size": req.batch_size,
        "n_iter": req.n_iter,
        "eta": req.eta,
        "save_images": req.save_images,
        "send_images": req.send_images,
        "override_settings_restore_afterwards": req.restore_afterwards,
        "enable_hr": false,
        "restore_faces": false,
        "tiling": false,
        "styles": [],
        "subseed": -1,
        "subseed_strength": 0.0,
        "alwayson_scripts": {},
    });
    if let Some(init) = &req.init
        && let Some(map) = v.as_object_mut()
    {
        map.insert("denoising_strength".into(), json!(init.strength));
        map.insert(
            "resize_mode".into(),
            json!(match init.resize_mode {
                ResizeMode::JustResize => 0,
                ResizeMode::CropAndResize => 1,
                ResizeMode::ResizeAndFill => 2,
            }),
        );
        map.insert("init_images".into(), json!([]));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ApiRequest, ApiError> {
        parse_request(body.as_bytes(), false, &Limits::default())
    }

    fn invalid_fields(e: ApiError) -> Vec<String> {
        match e {
            ApiError::Invalid(issues) => issues
                .iter()
                .map(|i| {
                    i.loc
                        .last()
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                })
                .collect(),
            other => panic!("expected 422, got {other}"),
        }
    }

    #[test]
    fn sampler_labels_aliases_karras_suffix_and_index_resolve() {
        assert_eq!(
            find_sampler("Euler a").expect("a"),
            (SamplerKind::EulerA, None)
        );
        assert_eq!(
            find_sampler("k_dpmpp_2m").expect("b").0,
            SamplerKind::DpmPp2m
        );
        assert_eq!(
            find_sampler("DPM++ 2M Karras").expect("c"),
            (SamplerKind::DpmPp2m, Some(Schedule::Karras))
        );
        assert_eq!(find_sampler("ddim").expect("d").0, SamplerKind::Ddim);
        assert!(
            matches!(find_sampler("Restart"), Err(ApiError::NotFound { known, .. }) if known.len() == 11)
        );
        let r = parse(r#"{"sampler_index": "Heun"}"#).expect("index");
        assert_eq!(r.sampler, Some(SamplerKind::Heun));
        let r =
            parse(r#"{"sampler_name": "Euler", "sampler_index": "Heun", "scheduler": "Karras"}"#)
                .expect("name wins");
        assert_eq!(
            (r.sampler, r.schedule),
            (Some(SamplerKind::Euler), Some(Schedule::Karras))
        );
        assert!(matches!(
            parse(r#"{"scheduler": "Uniform"}"#),
            Err(ApiError::NotFound { .. })
        ));
    }

    #[test]
    fn a1111_defaults_are_accepted_and_other_values_refused_by_name() {
        let defaults = r#"{"prompt": "a cat", "enable_hr": false, "restore_faces": false,
            "tiling": false, "alwayson_scripts": {}, "script_name": null, "styles": [],
            "subseed": -1, "subseed_strength": 0, "seed_resize_from_h": -1,
            "seed_resize_from_w": -1, "s_churn": 0, "s_tmax": null, "s_tmin": 0, "s_noise": 1,
            "eta": 1.0, "sampler_index": "Euler a", "hr_scale": 2, "denoising_strength": 0.7,
            "brand_new_field": 1}"#;
        let r = parse(defaults).expect("accepted");
        assert_eq!(r.unknown, ["brand_new_field"]);
        assert_eq!(r.seed, None);
        let refused = parse(
            r#"{"enable_hr": true, "restore_faces": true, "alwayson_scripts": {"x": {}},
                "styles": ["s"], "subseed_strength": 0.5, "s_churn": 1, "mask": "abc"}"#,
        )
        .expect_err("refused");
        assert_eq!(
            invalid_fields(refused),
            [
                "enable_hr",
                "restore_faces",
                "alwayson_scripts",
                "mask",
                "styles",
                "subseed_strength",
                "s_churn"
            ]
        );
        let eta = parse(r#"{"sampler_name": "Euler a", "eta": 0.5}"#).expect_err("eta");
        assert_eq!(invalid_fields(eta), ["eta"]);
        assert_eq!(
            parse(r#"{"sampler_name": "DDIM", "eta": 0.5}"#)
                .expect("ddim")
                .eta,
            Some(0.5)
        );
    }

    #[test]
    fn sizes_steps_and_batches_are_bounded() {
        let e = parse(r#"{"width": 500, "height": 8192, "steps": 0, "batch_size": 65}"#)
            .expect_err("bad");
        assert_eq!(
            invalid_fields(e),
            ["steps", "width", "height", "batch_size"]
        );
        let e = parse(r#"{"batch_size": 8, "n_iter": 9}"#).expect_err("too many");
        assert_eq!(invalid_fields(e), ["n_iter"]);
        let e = parse(r#"{"steps": "many", "cfg_scale": [1]}"#).expect_err("types");
        assert_eq!(invalid_fields(e), ["steps", "cfg_scale"]);
        let e = parse(r#"{"sampler_name": "DDIM", "scheduler": "Karras"}"#).expect_err("fixed");
        assert_eq!(invalid_fields(e), ["scheduler"]);
    }

    #[test]
    fn overrides_are_read_and_bad_ones_named() {
        let r = parse(
            r#"{"override_settings": {"CLIP_stop_at_last_layers": 2, "sd_model_checkpoint": "m",
                "sd_vae": "Automatic", "unknown_option": 1},
                "override_settings_restore_afterwards": false}"#,
        )
        .expect("overrides");
        assert_eq!(r.overrides.clip_skip, Some(2));
        assert_eq!(r.overrides.model.as_deref(), Some("m"));
        assert!(!r.restore_afterwards);
        let e =
            parse(r#"{"override_settings": {"CLIP_stop_at_last_layers": "x"}}"#).expect_err("bad");
        assert_eq!(
            invalid_fields(e),
            ["override_settings.CLIP_stop_at_last_layers"]
        );
    }

    #[test]
    fn img2img_needs_a_decodable_image_and_a_strength_in_range() {
        let limits = Limits::default();
        let e = parse_request(br#"{"prompt": "x"}"#, true, &limits).expect_err("no image");
        assert_eq!(invalid_fields(e), ["init_images"]);
        let e = parse_request(
            br#"{"init_images": ["%%%"], "denoising_strength": 1.5}"#,
            true,
            &limits,
        )
        .expect_err("bad");
        assert_eq!(invalid_fields(e), ["denoising_strength", "init_images"]);
        let r = parse_request(
            br#"{"init_images": ["data:image/png;base64,aGVsbG8="], "resize_mode": 2}"#,
            true,
            &limits,
        )
        .expect("ok");
        let init = r.init.expect("init");
        assert_eq!(
            (init.bytes.as_slice(), init.resize_mode),
            (&b"hello"[..], ResizeMode::ResizeAndFill)
        );
    }
}
