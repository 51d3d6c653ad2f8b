//! The routes: A1111's `/sdapi/v1` paths over [`crate::runner`], with Basic auth and CORS in
//! front of them.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kiln_engine::resolve::{GenerationSpec, InitImageChoice};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::a1111::{self, ApiRequest};
use crate::body::Fields;
use crate::catalog::{self, CheckpointEntry};
use crate::config::ServeConfig;
use crate::error::{ApiError, json_body};
use crate::images;
use crate::runner::{Generation, Outcome, Shared, Stop, Work, lock};

/// Settings `options` reads and writes (kept for the server's lifetime).
#[derive(Debug, Clone)]
struct Options {
    clip_skip: usize,
    samples_save: bool,
    outdir_txt2img: PathBuf,
    outdir_img2img: PathBuf,
}

/// What every handler shares.
pub struct App {
    config: Arc<ServeConfig>,
    shared: Arc<Shared>,
    options: Mutex<Options>,
    /// Unknown body fields already logged.
    logged: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

type Answer = Result<Response, ApiError>;

fn ok(value: Value) -> Answer {
    Ok(json_body(&value))
}

/// The router of the whole API over `shared`.
pub fn router(config: Arc<ServeConfig>, shared: Arc<Shared>) -> Router {
    let options = Options {
        clip_skip: 1,
        samples_save: true,
        outdir_txt2img: config.outputs.join("txt2img-images"),
        outdir_img2img: config.outputs.join("img2img-images"),
    };
    let limit = config.limits.max_body_bytes;
    let app = Arc::new(App {
        config,
        shared,
        options: Mutex::new(options),
        logged: Mutex::new(BTreeSet::new()),
    });
    let api = Router::new()
        .route("/txt2img", post(txt2img))
        .route("/img2img", post(img2img))
        .route("/options", get(get_options).post(set_options))
        .route("/sd-models", get(sd_models))
        .route("/refresh-checkpoints", post(refresh_checkpoints))
        .route("/samplers", get(|| async { ok(a1111::samplers_json()) }))
        .route(
            "/schedulers",
            get(|| async { ok(a1111::schedulers_json()) }),
        )
        .route("/upscalers", get(|| async { ok(json!([])) }))
        .route("/latent-upscale-modes", get(|| async { ok(json!([])) }))
        .route("/sd-vae", get(|| async { ok(json!([])) }))
        .route("/sd-modules", get(|| async { ok(json!([])) }))
        .route("/loras", get(loras))
        .route("/refresh-loras", post(|| async { ok(Value::Null) }))
        .route("/embeddings", get(embeddings))
        .route("/refresh-embeddings", post(refresh_embeddings))
        .route("/progress", get(progress))
        .route("/interrupt", post(interrupt))
        .route("/skip", post(skip))
        .route("/png-info", post(png_info))
        .route("/memory", get(memory));
    Router::new()
        .nest("/sdapi/v1", api)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .layer(middleware::from_fn_with_state(app.clone(), cors))
        .with_state(app)
}

/// SHA-256 of `text`, so credentials are compared at a fixed length.
fn digest(text: &[u8]) -> [u8; 32] {
    Sha256::digest(text).into()
}

/// Whether `header` carries one of the credentials, compared in constant time (every
/// credential is checked; no early exit on a byte or an entry).
fn authorized(header: Option<&HeaderValue>, config: &ServeConfig) -> bool {
    let given = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Basic ")
                .or_else(|| h.strip_prefix("basic "))
        })
        .and_then(|b| images::decode_base64(b.trim()))
        .unwrap_or_default();
    let given = digest(&given);
    let mut any = 0u8;
    for c in &config.auth {
        let expected = digest(format!("{}:{}", c.user, c.password).as_bytes());
        let diff = given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        any |= u8::from(diff == 0);
    }
    any == 1
}

async fn authenticate(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if app.config.auth.is_empty()
        || authorized(request.headers().get(header::AUTHORIZATION), &app.config)
    {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// CORS: off unless origins are configured; then allowed origins get the headers and a
/// preflight is answered here (before authentication, as browsers send it without
/// credentials).
async fn cors(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let origins = &app.config.cors_allow_origins;
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin.as_ref().filter(|o| {
        !origins.is_empty()
            && o.to_str()
                .is_ok_and(|o| origins.iter().any(|a| a == "*" || a == o))
    });
    let Some(origin) = allowed.cloned() else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let requested_headers = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let mut response = if preflight {
        StatusCode::OK.into_response()
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            requested_headers.unwrap_or(HeaderValue::from_static("content-type, authorization")),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

/// The body's bytes, or 413 past the limit.
fn body(bytes: Result<Bytes, BytesRejection>, app: &App) -> Result<Bytes, ApiError> {
    bytes.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge {
                limit: app.config.limits.max_body_bytes,
            }
        } else {
            ApiError::Invalid(vec![crate::error::FieldIssue {
                loc: vec!["body".into()],
                msg: r.body_text(),
                kind: "body_read",
            }])
        }
    })
}

impl App {
    fn log_unknown(&self, fields: &[String]) {
        let mut logged = lock(&self.logged);
        for f in fields {
            if logged.insert(f.clone()) {
                tracing::info!(field = %f, "a request field Kiln does not know; ignored (said once)");
            }
        }
    }

    fn checkpoints(&self) -> Vec<CheckpointEntry> {
        let loaded = self.shared.status().model.clone();
        catalog::checkpoints(&self.config, loaded.as_ref())
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Engine {
            kind: None,
            message: format!("a server task failed: {e}"),
        })
}

async fn txt2img(State(app): State<Arc<App>>, bytes: Result<Bytes, BytesRejection>) -> Answer {
    let bytes = body(bytes, &app)?;
    generate(app, bytes, false).await
}

async fn img2img(State(app): State<Arc<App>>, bytes: Result<Bytes, BytesRejection>) -> Answer {
    let bytes = body(bytes, &app)?;
    generate(app, bytes, true).await
}

async fn generate(app: Arc<App>, bytes: Bytes, img2img: bool) -> Answer {
    let limits = app.config.limits;
    let req = blocking(move || a1111::parse_request(&bytes, img2img, &limits)).await??;
    app.log_unknown(&req.unknown);
    if let Some(vae) = &req.overrides.vae {
        check_vae(vae)?;
    }
    let model = match &req.overrides.model {
        Some(name) => {
            let app2 = app.clone();
            let list = blocking(move || app2.checkpoints()).await?;
            Some(catalog::find_checkpoint(&list, name)?)
        }
        None => None,
    };
    let options = lock(&app.options).clone();
    let seed = req.seed.unwrap_or_else(kiln_engine::job::random_seed);
    let init = match &req.init {
        Some(init) => {
            let (bytes, mode, dir) = (
                init.bytes.clone(),
                init.resize_mode,
                app.config.outputs.clone(),
            );
            let size = req.width.zip(req.height);
            Some(blocking(move || images::prepare_init_image(&bytes, mode, size, &dir)).await??)
        }
        None => None,
    };
    let spec = GenerationSpec {
        prompts: vec![req.prompt.clone()],
        negatives: vec![req.negative_prompt.clone()],
        sampler: req.sampler,
        schedule: req.schedule,
        eta: req.eta,
        steps: req.steps,
        cfg: req.cfg,
        seed: Some(seed),
        width: req.width,
        height: req.height,
        batch_size: req.batch_size,
        batch_count: req.n_iter,
        clip_skip: Some(req.overrides.clip_skip.unwrap_or(options.clip_skip)),
        lora_dir: app.config.lora_dir.clone(),
        init_image: init.map(|path| InitImageChoice {
            path,
            expected_sha256: None,
        }),
        strength: req.init.as_ref().map(|i| i.strength),
        device: Some(app.config.device.clone()),
        ..GenerationSpec::default()
    };
    let work = crate::runner::GenerateWork {
        spec,
        model,
        restore_model: req.restore_afterwards,
    };
    let what = if img2img { "img2img" } else { "txt2img" };
    let Outcome::Images(generation) = app.shared.run(what, Work::Generate(Box::new(work))).await?
    else {
        return Err(ApiError::Engine {
            kind: None,
            message: "the engine answered a generation with no images".into(),
        });
    };
    let outdir = if img2img {
        options.outdir_img2img
    } else {
        options.outdir_txt2img
    };
    let save = req.save_images && options.samples_save;
    blocking(move || respond(&req, seed, &generation, save.then_some(outdir.as_path()))).await?
}

/// The response of a generation: images (PNG with recipe, base64), `parameters`, `info`.
fn respond(req: &ApiRequest, seed: u64, generation: &Generation, save_to: Option<&Path>) -> Answer {
    let engine_error = |e: kiln_engine::error::Error| ApiError::Engine {
        kind: Some(e.kind()),
        message: e.to_string(),
    };
    let mut encoded = Vec::new();
    for g in &generation.images {
        let png =
            kiln_engine::metadata::png_with_recipe(&g.image, &g.recipe).map_err(engine_error)?;
        if let Some(dir) = save_to {
            std::fs::create_dir_all(dir).map_err(|e| ApiError::Engine {
                kind: Some(kiln_engine::error::ErrorKind::Io),
                message: format!("{}: {e}", dir.display()),
            })?;
            let path = images::next_output_path(dir, g.recipe.seed);
            kiln_engine::fs::write_atomic(&path, &png).map_err(engine_error)?;
        }
        if req.send_images {
            encoded.push(images::encode_base64(&png));
        }
    }
    let first = generation.images.first().map(|g| &g.recipe);
    let sampler = first.map(|r| r.sampler).unwrap_or_else(|| {
        req.sampler
            .unwrap_or(kiln_engine::schedulers::SamplerKind::Ddim)
            .with(req.schedule.unwrap_or_default(), req.eta.unwrap_or(0.0))
            .unwrap_or(kiln_engine::schedulers::Sampler::Ddim { eta: 0.0 })
    });
    let steps = first.map_or(
        req.steps.unwrap_or(kiln_engine::resolve::DEFAULT_STEPS),
        |r| r.steps,
    );
    let cfg = first.map_or(req.cfg.unwrap_or(kiln_engine::resolve::DEFAULT_CFG), |r| {
        r.cfg
    });
    let size = first.map_or((req.width.unwrap_or(0), req.height.unwrap_or(0)), |r| {
        (r.width, r.height)
    });
    let recipes: Vec<_> = generation.images.iter().map(|g| &g.recipe).collect();
    let info = json!({
        "prompt": req.prompt,
        "all_prompts": recipes.iter().map(|r| &r.prompt).collect::<Vec<_>>(),
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": recipes.iter().map(|r| &r.negative_prompt).collect::<Vec<_>>(),
        "seed": seed,
        "all_seeds": recipes.iter().map(|r| r.seed).collect::<Vec<_>>(),
        "subseed": seed,
        "all_subseeds": recipes.iter().map(|r| r.seed).collect::<Vec<_>>(),
        "subseed_strength": 0.0,
        "width": size.0,
        "height": size.1,
        "sampler_name": sampler.a1111_name(),
        "scheduler": a1111::scheduler_label(sampler.schedule()),
        "cfg_scale": cfg,
        "steps": steps,
        "batch_size": req.batch_size,
        "n_iter": req.n_iter,
        "restore_faces": false,
        "face_restoration_model": null,
        "sd_model_name": generation.model.as_ref().map(|m| &m.name),
        "sd_model_hash": generation.model.as_ref().and_then(|m| m.hash.as_ref()),
        "sd_vae_name": null,
        "sd_vae_hash": null,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": req.init.as_ref().map(|i| i.strength),
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": recipes.iter().map(|r| r.a1111_parameters()).collect::<Vec<_>>(),
        "styles": [],
        "job_timestamp": null,
        "clip_skip": first.map(|r| r.clip_skip),
        "is_using_inpainting_conditioning": false,
        "interrupted": generation.interrupted,
        "version": concat!("kiln ", env!("CARGO_PKG_VERSION")),
    });
    ok(json!({
        "images": encoded,
        "parameters": a1111::understood(req, &sampler, steps, cfg, size),
        "info": info.to_string(),
    }))
}

fn check_vae(name: &str) -> Result<(), ApiError> {
    const KNOWN: [&str; 2] = ["Automatic", "None"];
    if KNOWN.iter().any(|k| k.eq_ignore_ascii_case(name.trim())) {
        Ok(())
    } else {
        Err(ApiError::NotFound {
            what: "VAE",
            name: name.to_owned(),
            known: KNOWN.iter().map(|k| (*k).to_owned()).collect(),
        })
    }
}

async fn get_options(State(app): State<Arc<App>>) -> Answer {
    let o = lock(&app.options).clone();
    let model = app.shared.status().model.clone();
    ok(json!({
        "sd_model_checkpoint": model.as_ref().map(CheckpointEntry::title),
        "sd_checkpoint_hash": model.as_ref().and_then(|m| m.hash.clone()),
        "CLIP_stop_at_last_layers": o.clip_skip,
        "sd_vae": "Automatic",
        "samples_save": o.samples_save,
        "samples_format": "png",
        "outdir_samples": "",
        "outdir_txt2img_samples": o.outdir_txt2img,
        "outdir_img2img_samples": o.outdir_img2img,
    }))
}

/// A folder option: inside the outputs folder (relative to it, or absolute under it), never
/// outside.
fn output_folder(outputs: &Path, value: &str) -> Option<PathBuf> {
    let path = Path::new(value);
    let inside = |p: &Path| !p.components().any(|c| matches!(c, Component::ParentDir));
    if path.is_absolute() {
        (path.starts_with(outputs) && inside(path)).then(|| path.to_owned())
    } else {
        (inside(path) && !value.is_empty()).then(|| outputs.join(path))
    }
}

async fn set_options(State(app): State<Arc<App>>, bytes: Result<Bytes, BytesRejection>) -> Answer {
    let bytes = body(bytes, &app)?;
    let mut f = Fields::parse(&bytes)?;
    let model = f.string("sd_model_checkpoint");
    let clip_skip = f.int_in("CLIP_stop_at_last_layers", 1, 12);
    let vae = f.string("sd_vae");
    let samples_save = f.bool("samples_save");
    let mut folders = Vec::new();
    for key in ["outdir_txt2img_samples", "outdir_img2img_samples"] {
        if let Some(v) = f.string(key) {
            match output_folder(&app.config.outputs, &v) {
                Some(p) => folders.push((key, p)),
                None => f.invalid(
                    key,
                    format!(
                        "must be a folder inside the outputs folder {}",
                        app.config.outputs.display()
                    ),
                    "path_outside_outputs",
                ),
            }
        }
    }
    app.log_unknown(
        &f.unknown()
            .iter()
            .map(|k| format!("options.{k}"))
            .collect::<Vec<_>>(),
    );
    f.finish()?;
    if let Some(vae) = &vae {
        check_vae(vae)?;
    }
    let entry = match &model {
        Some(name) => {
            let app2 = app.clone();
            let list = blocking(move || app2.checkpoints()).await?;
            Some(catalog::find_checkpoint(&list, name)?)
        }
        None => None,
    };
    {
        let mut o = lock(&app.options);
        if let Some(c) = clip_skip {
            o.clip_skip = c as usize;
        }
        if let Some(s) = samples_save {
            o.samples_save = s;
        }
        for (key, path) in folders {
            match key {
                "outdir_txt2img_samples" => o.outdir_txt2img = path,
                _ => o.outdir_img2img = path,
            }
        }
    }
    if let Some(entry) = entry {
        let loaded = app.shared.status().model.as_ref().map(|m| m.path.clone());
        if loaded.as_ref() != Some(&entry.path) {
            app.shared.run("load model", Work::LoadModel(entry)).await?;
        }
    }
    ok(Value::Null)
}

async fn sd_models(State(app): State<Arc<App>>) -> Answer {
    let list = blocking(move || app.checkpoints()).await?;
    ok(Value::Array(
        list.iter().map(CheckpointEntry::to_json).collect(),
    ))
}

async fn refresh_checkpoints() -> Answer {
    // The list is read from the folders at every `sd-models`: nothing is cached to refresh.
    ok(Value::Null)
}

async fn loras(State(app): State<Arc<App>>) -> Answer {
    let dir = app.config.lora_dir.clone();
    let list = blocking(move || catalog::loras(dir.as_deref())).await?;
    ok(Value::Array(list))
}

async fn embeddings(State(app): State<Arc<App>>) -> Answer {
    let status = app.shared.status();
    ok(json!({"loaded": status.embeddings_loaded, "skipped": status.embeddings_skipped}))
}

async fn refresh_embeddings(State(app): State<Arc<App>>) -> Answer {
    app.shared
        .run("refresh embeddings", Work::RefreshEmbeddings)
        .await?;
    ok(Value::Null)
}

/// Whether the query string sets `skip_current_image` to true (`true`, `True`, `1`).
fn skips_image(query: Option<&str>) -> bool {
    query.into_iter().flat_map(|q| q.split('&')).any(|pair| {
        pair.split_once('=').is_some_and(|(k, v)| {
            k == "skip_current_image" && matches!(v.to_ascii_lowercase().as_str(), "true" | "1")
        })
    })
}

async fn progress(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Answer {
    let skip_image = skips_image(query.as_deref());
    if !skip_image {
        app.shared.want_previews();
    }
    let (body, preview) = {
        let status = app.shared.status();
        let job_count = status.queued + usize::from(status.running.is_some());
        match &status.running {
            Some(r) => {
                let fraction = if r.total > 0 {
                    r.done as f64 / r.total as f64
                } else {
                    0.0
                };
                let elapsed = r.started.elapsed().as_secs_f64();
                let eta = if fraction > 0.0 {
                    elapsed / fraction - elapsed
                } else {
                    0.0
                };
                (
                    json!({
                        "progress": fraction,
                        "eta_relative": eta,
                        "state": {
                            "skipped": false,
                            "interrupted": false,
                            "stopping_generation": false,
                            "job": r.what,
                            "job_count": job_count,
                            "job_timestamp": r.timestamp,
                            "job_no": r.iteration,
                            "sampling_step": r.sampling_step,
                            "sampling_steps": r.sampling_steps,
                        },
                        "current_image": null,
                        "textinfo": null,
                        "current_task": format!("task({})", r.job),
                    }),
                    (!skip_image).then(|| r.preview.clone()).flatten(),
                )
            }
            None => (
                json!({
                    "progress": 0.0,
                    "eta_relative": 0.0,
                    "state": {
                        "skipped": false,
                        "interrupted": false,
                        "stopping_generation": false,
                        "job": "",
                        "job_count": job_count,
                        "job_timestamp": "0",
                        "job_no": 0,
                        "sampling_step": 0,
                        "sampling_steps": 0,
                    },
                    "current_image": null,
                    "textinfo": null,
                    "current_task": null,
                }),
                None,
            ),
        }
    };
    let mut body = body;
    if let Some(image) = preview {
        let png = blocking(move || kiln_engine::image::encode_png(&image, &[])).await?;
        if let (Ok(png), Some(map)) = (png, body.as_object_mut()) {
            map.insert("current_image".into(), json!(images::encode_base64(&png)));
        }
    }
    ok(body)
}

async fn interrupt(State(app): State<Arc<App>>) -> Answer {
    app.shared.stop_running(Stop::Interrupt);
    ok(json!({}))
}

async fn skip(State(app): State<Arc<App>>) -> Answer {
    app.shared.stop_running(Stop::Skip);
    ok(json!({}))
}

async fn png_info(State(app): State<Arc<App>>, bytes: Result<Bytes, BytesRejection>) -> Answer {
    let bytes = body(bytes, &app)?;
    let mut f = Fields::parse(&bytes)?;
    let image = f.string("image");
    f.finish()?;
    let Some(image) = image.filter(|i| !i.trim().is_empty()) else {
        return Err(ApiError::field("image", "Field required", "missing"));
    };
    let Some(bytes) = images::decode_base64(&image) else {
        return Err(ApiError::field(
            "image",
            "not valid base64",
            "base64_decode",
        ));
    };
    blocking(move || png_info_of(&bytes)).await?
}

/// `png-info`: the A1111 infotext (`info`), every other text chunk (`items`), and the
/// parameters A1111 would parse from it (`parameters`).
fn png_info_of(bytes: &[u8]) -> Answer {
    if image::guess_format(bytes).is_err() {
        return Err(ApiError::field(
            "image",
            "not a PNG, JPEG or WebP image",
            "image_decode",
        ));
    }
    let chunks = kiln_engine::image::png_text(bytes, Path::new("image")).unwrap_or_default();
    let parsed = kiln_engine::metadata::image_info(&chunks);
    let info = chunks
        .iter()
        .find(|(k, _)| k == kiln_engine::metadata::PARAMETERS_CHUNK)
        .map(|(_, v)| v.clone())
        .or_else(|| {
            parsed
                .as_ref()
                .map(|i| kiln_engine::metadata::a1111::write(&i.parameters))
        })
        .unwrap_or_default();
    let items: serde_json::Map<String, Value> = chunks
        .iter()
        .filter(|(k, _)| k != kiln_engine::metadata::PARAMETERS_CHUNK)
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let parameters = parsed.map_or(json!({}), |i| {
        let p = i.parameters;
        let mut m = serde_json::Map::new();
        m.insert("Prompt".into(), json!(p.prompt.unwrap_or_default()));
        m.insert(
            "Negative prompt".into(),
            json!(p.negative_prompt.unwrap_or_default()),
        );
        if let Some(s) = p.steps {
            m.insert("Steps".into(), json!(s.to_string()));
        }
        if let Some(s) = &p.sampler {
            m.insert("Sampler".into(), json!(s));
        }
        if let Some(c) = p.cfg {
            m.insert("CFG scale".into(), json!(c.to_string()));
        }
        if let Some(s) = p.seed {
            m.insert("Seed".into(), json!(s.to_string()));
        }
        if let Some((w, h)) = p.size {
            m.insert("Size-1".into(), json!(w.to_string()));
            m.insert("Size-2".into(), json!(h.to_string()));
        }
        if let Some(c) = p.clip_skip {
            m.insert("Clip skip".into(), json!(c.to_string()));
        }
        if let Some(s) = p.strength {
            m.insert("Denoising strength".into(), json!(s.to_string()));
        }
        for (k, v) in p.extra {
            m.entry(k).or_insert(json!(v));
        }
        Value::Object(m)
    });
    ok(json!({"info": info, "items": items, "parameters": parameters}))
}

/// `/proc/meminfo`'s value for `key` in bytes.
fn meminfo(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn memory(State(app): State<Arc<App>>) -> Answer {
    let device = app.shared.status().device.clone();
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = meminfo(&info, "MemTotal:");
    let free = meminfo(&info, "MemAvailable:");
    let used = total.zip(free).map(|(t, f)| t.saturating_sub(f));
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| meminfo(&s, "VmRSS:"));
    ok(json!({
        "ram": {"free": free, "used": used, "total": total, "kiln_rss": rss},
        "cuda": {"error": format!("Kiln reports no CUDA memory here (device: {})", device.as_deref().unwrap_or("none loaded"))},
    }))
}

/// An `Authorization` header for `user_pass`, for tests of the check.
#[cfg(test)]
fn auth_header(user_pass: &str) -> axum::http::HeaderMap {
    let mut h = axum::http::HeaderMap::new();
    let value = format!("Basic {}", images::encode_base64(user_pass.as_bytes()));
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&value).expect("header"),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_accepts_each_pair_and_nothing_else() {
        let mut config = crate::tests::config();
        config.auth = crate::config::parse_credentials("ann:pw,bob:x:y").expect("auth");
        for good in ["ann:pw", "bob:x:y"] {
            assert!(
                authorized(auth_header(good).get(header::AUTHORIZATION), &config),
                "{good}"
            );
        }
        for bad in ["ann:p", "ann:pw ", "bob:x", ":", ""] {
            assert!(
                !authorized(auth_header(bad).get(header::AUTHORIZATION), &config),
                "{bad}"
            );
        }
        assert!(!authorized(None, &config));
    }

    #[test]
    fn folder_options_stay_inside_the_outputs_folder() {
        let out = Path::new("/srv/out");
        assert_eq!(output_folder(out, "mine"), Some(out.join("mine")));
        assert_eq!(output_folder(out, "/srv/out/a"), Some(out.join("a")));
        for bad in ["../x", "/etc", "/srv/out/../x", "a/../../b", ""] {
            assert_eq!(output_folder(out, bad), None, "{bad}");
        }
    }

    #[test]
    fn progress_reads_skip_current_image_as_fastapi_does() {
        assert!(skips_image(Some("skip_current_image=true")));
        assert!(skips_image(Some("a=1&skip_current_image=True")));
        assert!(!skips_image(Some("skip_current_image=false")));
        assert!(!skips_image(None));
    }

    #[test]
    fn meminfo_values_are_bytes() {
        assert_eq!(
            meminfo("MemTotal:  1024 kB\nMemFree: 1 kB", "MemTotal:"),
            Some(1 << 20)
        );
    }
}
