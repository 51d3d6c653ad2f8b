//! `kiln serve`, run as a user runs it (the real binary on a loopback port) and called over
//! real HTTP by a small raw HTTP/1.1 client — raw so a test can send a 50 MB body, malformed
//! JSON, or hang up mid-request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/kiln-tiny")
}

fn striped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/loras/kiln-tiny-striped.safetensors")
}

/// A running `kiln serve` with its folders; killed on drop.
struct Served {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
    /// `Authorization` for every request, when started with `--api-auth`.
    auth: Option<String>,
}

impl Served {
    /// `kiln serve --model kiln-tiny --port 0` with a LoRA folder (the striped LoRA), an
    /// embeddings folder (one embedding `<kilnsunny>` for kiln-tiny's width and one of the wrong
    /// width), an outputs folder and a models folder, plus `extra` flags.
    fn start(extra: &[&str]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let loras = dir.path().join("loras");
        let embeddings = dir.path().join("embeddings");
        let models = dir.path().join("models");
        for d in [&loras, &embeddings, &models] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::copy(striped(), loras.join("kiln-tiny-striped.safetensors")).unwrap();
        write_embedding(&embeddings.join("kilnsunny.safetensors"), 64, 0.05);
        write_embedding(&embeddings.join("too-wide.safetensors"), 768, 0.05);
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "serve",
                "--model",
                tiny().to_str().unwrap(),
                "--port",
                "0",
                "--device",
                "cpu",
            ])
            .args(["--lora-dir", loras.to_str().unwrap()])
            .args(["--embeddings-dir", embeddings.to_str().unwrap()])
            .args(["--outputs", dir.path().join("out").to_str().unwrap()])
            .args(["--models-dir", models.to_str().unwrap()])
            .args(extra)
            .env("KILN_LOG", "info")
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| {
                panic!(
                    "no address in {line:?}; log: {}",
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
                )
            })
            .to_owned();
        let auth = extra
            .iter()
            .position(|a| *a == "--api-auth")
            .and_then(|i| extra.get(i + 1))
            .and_then(|pairs| pairs.split(',').next())
            .map(|pair| format!("Basic {}", b64(pair.as_bytes())));
        let served = Served {
            child,
            addr,
            dir,
            auth,
        };
        served.wait_idle();
        served
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        self.auth
            .iter()
            .map(|a| ("Authorization", a.as_str()))
            .collect()
    }

    fn get(&self, path: &str) -> Reply {
        request(&self.addr, "GET", path, &self.headers(), b"")
    }

    fn post(&self, path: &str, body: &Value) -> Reply {
        request(
            &self.addr,
            "POST",
            path,
            &self.headers(),
            body.to_string().as_bytes(),
        )
    }

    /// Posts `body` to `path` from a thread of its own (a client waiting for its answer).
    fn post_in_background(
        &self,
        path: &'static str,
        body: &'static [u8],
    ) -> std::thread::JoinHandle<Reply> {
        let addr = self.addr.clone();
        std::thread::spawn(move || request(&addr, "POST", path, &[], body))
    }

    /// Waits until a job has made its first step.
    fn wait_running(&self) -> Value {
        self.wait_for("a job's first step", |p| {
            p["state"]["sampling_step"].as_u64().unwrap_or(0) > 0
        })
    }

    fn progress(&self) -> Value {
        self.get("/sdapi/v1/progress?skip_current_image=true")
            .json()
    }

    /// Polls `progress` until nothing runs or waits (A1111 clients do this after a model
    /// switch).
    fn wait_idle(&self) {
        self.wait_for("the server to be idle", |p| {
            p["state"]["job_count"] == 0 && p["progress"] == 0.0
        });
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let p = self.progress();
            if ok(&p) {
                return p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "waited 120 s for {what}; last progress {p}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A textual-inversion embedding (`emb_params`, one vector of `width`).
fn write_embedding(path: &Path, width: usize, value: f32) {
    let data: Vec<f32> = (0..width).map(|i| value * ((i % 7) as f32 - 3.0)).collect();
    kiln_engine::weights::safetensors::write_f32(
        path,
        &[kiln_engine::weights::safetensors::WriteTensor {
            name: "emb_params",
            shape: vec![1, width],
            data: &data,
        }],
        &Default::default(),
    )
    .unwrap();
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[track_caller]
    pub(crate) fn expect(self, status: u16) -> Reply {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
pub(crate) fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The body goes on another thread while this one reads: a server may answer (413) and
    // close before the whole body is sent, and the answer must not be lost meanwhile.
    let mut writer = stream.try_clone().unwrap();
    let mut raw = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = writer.write_all(body);
        });
        let _ = stream.read_to_end(&mut raw);
    });
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 4 + size..];
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// The pixels of PNG bytes.
pub(crate) fn pixels(png: &[u8]) -> kiln_engine::image::RgbImage {
    kiln_engine::image::decode_image(png, Path::new("response")).unwrap()
}

/// The images of a generation response, as PNG bytes.
pub(crate) fn images(reply: &Value) -> Vec<Vec<u8>> {
    reply["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| unb64(i.as_str().unwrap()))
        .collect()
}

pub(crate) fn info(reply: &Value) -> Value {
    serde_json::from_str(reply["info"].as_str().unwrap()).unwrap()
}

#[test]
fn every_listing_endpoint_answers_in_a1111s_shapes() {
    let s = Served::start(&[]);
    let samplers = s.get("/sdapi/v1/samplers").expect(200).json();
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"DPM++ 2M") && names.contains(&"Euler a") && names.contains(&"DDIM"),
        "{names:?}"
    );
    assert!(samplers[0]["aliases"].is_array());
    let schedulers = s.get("/sdapi/v1/schedulers").expect(200).json();
    assert_eq!(schedulers[1]["label"], "Karras");
    for empty in ["upscalers", "latent-upscale-modes", "sd-vae", "sd-modules"] {
        assert_eq!(
            s.get(&format!("/sdapi/v1/{empty}")).expect(200).json(),
            json!([]),
            "{empty}"
        );
    }
    let models = s.get("/sdapi/v1/sd-models").expect(200).json();
    assert_eq!(models[0]["model_name"], "kiln-tiny");
    let title = models[0]["title"].as_str().unwrap().to_owned();
    assert!(
        title.starts_with("kiln-tiny [") && title.ends_with(']'),
        "{title}"
    );
    assert_eq!(models[0]["hash"].as_str().unwrap().len(), 10);
    s.post("/sdapi/v1/refresh-checkpoints", &json!({}))
        .expect(200);
    let options = s.get("/sdapi/v1/options").expect(200).json();
    assert_eq!(options["sd_model_checkpoint"], title);
    assert_eq!(options["CLIP_stop_at_last_layers"], 1);
    assert_eq!(options["sd_vae"], "Automatic");
    let loras = s.get("/sdapi/v1/loras").expect(200).json();
    assert_eq!(loras[0]["name"], "kiln-tiny-striped");
    assert!(loras[0]["metadata"].is_object());
    s.post("/sdapi/v1/refresh-loras", &json!({})).expect(200);
    let embeddings = s.get("/sdapi/v1/embeddings").expect(200).json();
    assert_eq!(
        embeddings["loaded"]["kilnsunny"]["shape"], 64,
        "{embeddings}"
    );
    assert_eq!(embeddings["loaded"]["kilnsunny"]["vectors"], 1);
    assert!(
        embeddings["skipped"]["too-wide"].is_object(),
        "{embeddings}"
    );
    s.post("/sdapi/v1/refresh-embeddings", &json!({}))
        .expect(200);
    let memory = s.get("/sdapi/v1/memory").expect(200).json();
    assert!(memory["ram"]["total"].as_u64().unwrap() > 0);
    let idle = s.get("/sdapi/v1/progress").expect(200).json();
    assert_eq!(idle["state"]["job_count"], 0);
    assert_eq!(idle["current_image"], Value::Null);
    s.post("/sdapi/v1/interrupt", &json!({})).expect(200);
    s.post("/sdapi/v1/skip", &json!({})).expect(200);
    assert_eq!(s.get("/sdapi/v1/nothing-here").status, 404);
}

#[test]
fn an_api_txt2img_equals_kiln_generate_pixel_for_pixel_loras_and_embeddings_included() {
    let s = Served::start(&[]);
    let lora_dir = s.dir.path().join("loras");
    let embedding = s.dir.path().join("embeddings/kilnsunny.safetensors");
    for (prompt, sampler_api, sampler_cli) in [
        ("a large red circle on a blue background", "DDIM", "ddim"),
        (
            "a small green star <lora:kiln-tiny-striped:0.8>",
            "DPM++ 2M",
            "dpmpp-2m",
        ),
        (
            "a large kilnsunny square on a black background",
            "Euler a",
            "euler-a",
        ),
    ] {
        let reply = s
            .post(
                "/sdapi/v1/txt2img",
                &json!({"prompt": prompt, "negative_prompt": "blurry", "seed": 1234, "steps": 6,
                        "cfg_scale": 6.5, "sampler_name": sampler_api, "batch_size": 2,
                        "width": 64, "height": 64}),
            )
            .expect(200)
            .json();
        let api = images(&reply);
        assert_eq!(api.len(), 2);
        let out = s.dir.path().join(format!("cli-{sampler_cli}.png"));
        let (tiny, out_path, lora_path, embedding_path) = (
            tiny(),
            out.to_str().unwrap().to_owned(),
            lora_dir.to_str().unwrap().to_owned(),
            embedding.to_str().unwrap().to_owned(),
        );
        let mut args = vec![
            "generate",
            "--model",
            tiny.to_str().unwrap(),
            "--prompt",
            prompt,
            "--negative",
            "blurry",
            "--seed",
            "1234",
            "--steps",
            "6",
            "--cfg",
            "6.5",
            "--sampler",
            sampler_cli,
            "--batch",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--device",
            "cpu",
            "--out",
            &out_path,
            "--lora-dir",
            &lora_path,
        ];
        if prompt.contains("kilnsunny") {
            args.extend(["--embedding", &embedding_path]);
        }
        let o = crate::cli::kiln(&args);
        assert!(o.status.success(), "{}", crate::cli::stderr(&o));
        for (k, png) in api.iter().enumerate() {
            let cli =
                std::fs::read(out.with_file_name(format!("cli-{sampler_cli}-{k}.png"))).unwrap();
            assert_eq!(
                pixels(png),
                pixels(&cli),
                "{prompt}: image {k} differs from kiln generate"
            );
            // The PNG carries A1111's parameters and Kiln's recipe, as a saved file does.
            let text = kiln_engine::image::png_text(png, Path::new("api")).unwrap();
            let parameters = &text.iter().find(|(k, _)| k == "parameters").unwrap().1;
            assert!(
                parameters.contains(&format!("Seed: {}", 1234 + k)),
                "{parameters}"
            );
            let recipe: Value =
                serde_json::from_str(&text.iter().find(|(k, _)| k == "kiln").unwrap().1).unwrap();
            assert_eq!(recipe["seed"], 1234 + k as u64);
            if prompt.contains("lora") {
                assert_eq!(recipe["loras"][0]["name"], "kiln-tiny-striped", "{recipe}");
            }
        }
        let info = info(&reply);
        assert_eq!(info["all_seeds"], json!([1234, 1235]));
        assert_eq!(info["sampler_name"], sampler_api);
        assert_eq!(info["sd_model_name"], "kiln-tiny");
        assert_eq!(info["infotexts"].as_array().unwrap().len(), 2);
        assert_eq!(reply["parameters"]["steps"], 6);
    }
}

#[test]
fn a_full_a1111_body_is_accepted_and_seed_minus_one_is_drawn_and_returned() {
    let s = Served::start(&[]);
    // AUTOMATIC1111 1.10's txt2img model with every default, as Python clients send it
    // (size and steps made small for kiln-tiny).
    let body: Value = serde_json::from_str(
        r#"{
        "prompt": "a large red circle on a blue background", "negative_prompt": "", "styles": [],
        "seed": -1, "subseed": -1, "subseed_strength": 0, "seed_resize_from_h": -1,
        "seed_resize_from_w": -1, "sampler_name": "Euler a", "scheduler": "Automatic",
        "batch_size": 1, "n_iter": 2, "steps": 4, "cfg_scale": 7, "distilled_cfg_scale": 3.5,
        "width": 64, "height": 64, "restore_faces": false, "tiling": false,
        "do_not_save_samples": false, "do_not_save_grid": false, "eta": 1, "denoising_strength": 0.7,
        "s_min_uncond": 0, "s_churn": 0, "s_tmax": null, "s_tmin": 0, "s_noise": 1,
        "override_settings": {}, "override_settings_restore_afterwards": true,
        "refiner_checkpoint": null, "refiner_switch_at": null, "disable_extra_networks": false,
        "firstpass_image": null, "comments": {}, "enable_hr": false, "firstphase_width": 0,
        "firstphase_height": 0, "hr_scale": 2, "hr_upscaler": null, "hr_second_pass_steps": 0,
        "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": null, "hr_sampler_name": null,
        "hr_scheduler": null, "hr_prompt": "", "hr_negative_prompt": "", "force_task_id": null,
        "sampler_index": "Euler", "script_name": null, "script_args": [], "send_images": true,
        "save_images": false, "alwayson_scripts": {}, "infotext": null, "user": null
    }"#,
    )
    .unwrap();
    let reply = s.post("/sdapi/v1/txt2img", &body).expect(200).json();
    assert_eq!(images(&reply).len(), 2, "batch_size × n_iter images");
    let info = info(&reply);
    let seed = info["seed"].as_u64().unwrap();
    assert_eq!(
        info["all_seeds"],
        json!([seed, seed + 1]),
        "seed -1 is drawn once and returned"
    );
    assert_eq!(
        info["sampler_name"], "Euler a",
        "sampler_name wins over sampler_index"
    );
    assert_eq!(reply["parameters"]["seed"], -1);
    // An unknown field is ignored and said once in the log.
    let with_unknown =
        json!({"prompt": "x", "steps": 2, "width": 64, "height": 64, "brand_new": 1});
    s.post("/sdapi/v1/txt2img", &with_unknown).expect(200);
    s.post("/sdapi/v1/txt2img", &with_unknown).expect(200);
    assert_eq!(s.log().matches("field=brand_new").count(), 1, "{}", s.log());
}

#[test]
fn img2img_takes_base64_init_images_with_resize_modes_and_png_info_reads_them_back() {
    let s = Served::start(&[]);
    let first = s
        .post(
            "/sdapi/v1/txt2img",
            &json!({"prompt": "a large red circle on a blue background", "seed": 3, "steps": 4}),
        )
        .expect(200)
        .json();
    let source = images(&first).remove(0);
    for mode in 0..=3 {
        let reply = s
            .post(
                "/sdapi/v1/img2img",
                &json!({"prompt": "a large red circle on a blue background", "seed": 4, "steps": 8,
                        "init_images": [format!("data:image/png;base64,{}", b64(&source))],
                        "denoising_strength": 0.5, "resize_mode": mode, "width": 64, "height": 48,
                        "save_images": true}),
            )
            .expect(200)
            .json();
        let out = pixels(&images(&reply)[0]);
        assert_eq!((out.width, out.height), (64, 48), "mode {mode}");
        assert_eq!(info(&reply)["denoising_strength"], 0.5);
    }
    // Saved atomically under the outputs folder, A1111's names, nothing half-written.
    let saved: Vec<String> = std::fs::read_dir(s.dir.path().join("out/img2img-images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(saved.len(), 4, "{saved:?}");
    assert!(
        saved
            .iter()
            .all(|n| n.ends_with("-4.png") && !n.starts_with('.')),
        "{saved:?}"
    );
    // The recipe names the kept init image, so the image can be made again.
    let info_reply = s
        .post(
            "/sdapi/v1/png-info",
            &json!({"image": b64(&images(&first)[0])}),
        )
        .expect(200)
        .json();
    assert!(
        info_reply["info"].as_str().unwrap().contains("Seed: 3"),
        "{info_reply}"
    );
    assert_eq!(info_reply["parameters"]["Seed"], "3");
    assert!(info_reply["items"]["kiln"].is_string());
}

#[test]
fn bad_requests_get_their_status_and_the_server_goes_on_serving() {
    let s = Served::start(&["--max-body-mib", "8"]);
    let raw = |body: &[u8]| request(&s.addr, "POST", "/sdapi/v1/txt2img", &[], body);
    let malformed = raw(b"{\"prompt\": \"x\", ").expect(422).json();
    assert_eq!(malformed["detail"][0]["type"], "json_invalid");
    let wrong = s
        .post(
            "/sdapi/v1/txt2img",
            &json!({"steps": "many", "width": 65, "cfg_scale": []}),
        )
        .expect(422)
        .json();
    let fields: Vec<&str> = wrong["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["loc"][1].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["steps", "cfg_scale", "width"], "{wrong}");
    let huge = vec![b' '; 50 << 20];
    assert_eq!(raw(&huge).status, 413);
    let hr = s
        .post("/sdapi/v1/txt2img", &json!({"enable_hr": true}))
        .expect(422)
        .json();
    assert_eq!(hr["detail"][0]["loc"][1], "enable_hr");
    let traversal = s
        .post(
            "/sdapi/v1/txt2img",
            &json!({"prompt": "x <lora:../../etc/passwd:1>", "steps": 2}),
        )
        .expect(404)
        .json();
    assert!(
        traversal["errors"]
            .as_str()
            .unwrap()
            .contains("../../etc/passwd"),
        "{traversal}"
    );
    let sampler = s
        .post("/sdapi/v1/txt2img", &json!({"sampler_name": "Restart"}))
        .expect(404)
        .json();
    assert!(
        sampler["known"]
            .as_array()
            .unwrap()
            .contains(&json!("DPM++ 2M"))
    );
    s.post(
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": "no-such-model"}),
    )
    .expect(404);
    s.post(
        "/sdapi/v1/options",
        &json!({"outdir_txt2img_samples": "/etc"}),
    )
    .expect(422);
    s.post("/sdapi/v1/options", &json!({"sd_vae": "vae-ft-mse"}))
        .expect(404);
    let base64 = s
        .post(
            "/sdapi/v1/img2img",
            &json!({"init_images": ["%%% not base64"]}),
        )
        .expect(422)
        .json();
    assert_eq!(base64["detail"][0]["loc"][1], "init_images");
    let not_image = s
        .post(
            "/sdapi/v1/img2img",
            &json!({"init_images": [b64(b"just some text, not an image")]}),
        )
        .expect(422)
        .json();
    assert!(
        not_image["detail"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("not an image"),
        "{not_image}"
    );
    s.post("/sdapi/v1/png-info", &json!({"image": "@@@"}))
        .expect(422);
    // Still serving.
    let ok = s
        .post("/sdapi/v1/txt2img", &json!({"prompt": "x", "steps": 2}))
        .expect(200)
        .json();
    assert_eq!(images(&ok).len(), 1);
}

#[test]
fn a_model_switch_through_options_loads_it_and_progress_shows_the_job_until_done() {
    let s = Served::start(&[]);
    crate::common::copy_dir(&tiny(), &s.dir.path().join("models/kiln-tiny-copy"));
    let models = s.get("/sdapi/v1/sd-models").expect(200).json();
    assert!(
        models
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["model_name"] == "kiln-tiny-copy"),
        "{models}"
    );
    let switch = s.post_in_background(
        "/sdapi/v1/options",
        br#"{"sd_model_checkpoint": "kiln-tiny-copy", "CLIP_stop_at_last_layers": 2}"#,
    );
    switch.join().unwrap().expect(200);
    s.wait_idle();
    let options = s.get("/sdapi/v1/options").expect(200).json();
    assert!(
        options["sd_model_checkpoint"]
            .as_str()
            .unwrap()
            .starts_with("kiln-tiny-copy ["),
        "{options}"
    );
    assert_eq!(options["CLIP_stop_at_last_layers"], 2);
    let reply = s
        .post(
            "/sdapi/v1/txt2img",
            &json!({"prompt": "x", "steps": 2, "seed": 1}),
        )
        .expect(200)
        .json();
    assert_eq!(info(&reply)["sd_model_name"], "kiln-tiny-copy");
    assert_eq!(info(&reply)["clip_skip"], 2);
    // An override for one request, restored afterwards.
    let reply = s
        .post("/sdapi/v1/txt2img", &json!({"prompt": "x", "steps": 2, "seed": 1,
            "override_settings": {"sd_model_checkpoint": "kiln-tiny", "CLIP_stop_at_last_layers": 1}}))
        .expect(200)
        .json();
    assert_eq!(info(&reply)["sd_model_name"], "kiln-tiny");
    assert_eq!(info(&reply)["clip_skip"], 1);
    s.wait_idle();
    let options = s.get("/sdapi/v1/options").expect(200).json();
    assert!(
        options["sd_model_checkpoint"]
            .as_str()
            .unwrap()
            .starts_with("kiln-tiny-copy"),
        "restored: {options}"
    );
}

#[test]
fn interrupt_stops_the_job_within_a_step_and_answers_with_what_was_made() {
    let s = Served::start(&[]);
    // A client that asks for the live preview gets one in the jobs that follow.
    let idle = s.get("/sdapi/v1/progress").expect(200).json();
    assert_eq!(idle["current_image"], Value::Null);
    let job = s.post_in_background(
        "/sdapi/v1/txt2img",
        br#"{"prompt": "a ring", "steps": 500, "n_iter": 3, "seed": 9}"#,
    );
    let p = s.wait_for("the long job's first steps", |p| {
        p["state"]["sampling_steps"].as_u64().unwrap_or(0) >= 500
            && p["state"]["sampling_step"].as_u64().unwrap_or(0) > 0
    });
    assert!(p["progress"].as_f64().unwrap() > 0.0);
    assert_eq!(p["current_image"], Value::Null, "skip_current_image=true");
    // The live preview, as a PNG of the image's size.
    let with_image = s.get("/sdapi/v1/progress").expect(200).json();
    let preview = pixels(&unb64(with_image["current_image"].as_str().unwrap()));
    assert_eq!((preview.width, preview.height), (64, 64));
    s.post("/sdapi/v1/interrupt", &json!({})).expect(200);
    let reply = job.join().unwrap().expect(200).json();
    let info = info(&reply);
    assert_eq!(info["interrupted"], true);
    assert!(
        images(&reply).len() < 3,
        "stopped before the third iteration"
    );
    s.wait_idle();
}

#[test]
fn skip_drops_the_iteration_under_way_and_the_job_goes_on() {
    let s = Served::start(&[]);
    let job = s.post_in_background(
        "/sdapi/v1/txt2img",
        br#"{"prompt": "a ring", "steps": 60, "n_iter": 2, "seed": 5}"#,
    );
    s.wait_for("the first iteration", |p| {
        p["state"]["job_no"] == 0 && p["state"]["sampling_step"].as_u64().unwrap_or(0) > 0
    });
    s.post("/sdapi/v1/skip", &json!({})).expect(200);
    let reply = job.join().unwrap().expect(200).json();
    // The skipped iteration made nothing; the second ran to its end.
    let made = images(&reply);
    assert_eq!(made.len(), 1);
    assert_eq!(
        info(&reply)["all_seeds"],
        json!([6]),
        "the second iteration's seed"
    );
    assert_eq!(info(&reply)["interrupted"], false);
    s.wait_idle();
}

#[test]
fn eight_concurrent_requests_are_answered_in_order_and_counted() {
    let s = Served::start(&[]);
    // A long job holds the engine while eight requests arrive, one after another.
    let blocker = s.post_in_background("/sdapi/v1/txt2img", br#"{"prompt": "x", "steps": 500}"#);
    s.wait_running();
    let mut handles = Vec::new();
    for k in 0..8u64 {
        let addr = s.addr.clone();
        handles.push(std::thread::spawn(move || {
            let body = json!({"prompt": "a large red circle", "steps": 10, "seed": k}).to_string();
            let reply =
                request(&addr, "POST", "/sdapi/v1/txt2img", &[], body.as_bytes()).expect(200);
            (k, Instant::now(), reply.json())
        }));
        s.wait_for("the request to be counted", |p| {
            p["state"]["job_count"] == k + 2
        });
    }
    s.post("/sdapi/v1/interrupt", &json!({})).expect(200);
    blocker.join().unwrap().expect(200);
    let mut done: Vec<(u64, Instant, Value)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (k, _, reply) in &done {
        assert_eq!(info(reply)["seed"], *k, "each answer is its own request's");
        assert_eq!(images(reply).len(), 1);
    }
    done.sort_by_key(|(_, at, _)| *at);
    let order: Vec<u64> = done.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(
        order,
        (0..8).collect::<Vec<_>>(),
        "answered in arrival order"
    );
    s.wait_idle();
}

#[test]
fn a_client_that_hangs_up_takes_its_queued_job_away() {
    let s = Served::start(&[]);
    let running = s.post_in_background("/sdapi/v1/txt2img", br#"{"prompt": "x", "steps": 500}"#);
    s.wait_running();
    // A second client queues a job and hangs up.
    {
        let mut stream = TcpStream::connect(&s.addr).unwrap();
        let body = br#"{"prompt": "y", "steps": 500}"#;
        write!(
            stream,
            "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        s.wait_for("the second job to be queued", |p| {
            p["state"]["job_count"] == 2
        });
    }
    s.wait_for("the hung-up job to leave the queue", |p| {
        p["state"]["job_count"] == 1
    });
    s.post("/sdapi/v1/interrupt", &json!({})).expect(200);
    running.join().unwrap().expect(200);
    s.wait_idle();
    assert!(s.log().contains("went away"), "{}", s.log());
}

#[test]
fn basic_auth_guards_every_endpoint_and_cors_is_off_unless_asked() {
    let s = Served::start(&[
        "--api-auth",
        "ann:s3cret,bob:pw",
        "--cors-allow-origins",
        "http://app.example",
    ]);
    assert_eq!(
        request(&s.addr, "GET", "/sdapi/v1/samplers", &[], b"").status,
        401
    );
    s.get("/sdapi/v1/samplers").expect(200);
    let wrong = format!("Basic {}", b64(b"ann:wrong"));
    let right = format!("Basic {}", b64(b"bob:pw"));
    let unauthorized = request(
        &s.addr,
        "GET",
        "/sdapi/v1/options",
        &[("Authorization", &wrong)],
        b"",
    );
    assert_eq!(unauthorized.status, 401);
    assert!(unauthorized.header("www-authenticate").is_some());
    for path in [
        "/sdapi/v1/options",
        "/sdapi/v1/sd-models",
        "/sdapi/v1/progress",
    ] {
        request(&s.addr, "GET", path, &[("Authorization", &right)], b"").expect(200);
    }
    assert_eq!(
        request(&s.addr, "POST", "/sdapi/v1/txt2img", &[], b"{}").status,
        401
    );
    // CORS for the allowed origin only; the preflight needs no credentials.
    let preflight = request(
        &s.addr,
        "OPTIONS",
        "/sdapi/v1/txt2img",
        &[
            ("Origin", "http://app.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(preflight.status, 200);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    let other = request(
        &s.addr,
        "GET",
        "/sdapi/v1/samplers",
        &[("Origin", "http://evil.example"), ("Authorization", &right)],
        b"",
    );
    assert_eq!(other.header("access-control-allow-origin"), None);
    // Without --cors-allow-origins no CORS header at all.
    let plain = Served::start(&[]);
    let r = request(
        &plain.addr,
        "GET",
        "/sdapi/v1/samplers",
        &[("Origin", "http://app.example")],
        b"",
    );
    assert_eq!(r.expect(200).header("access-control-allow-origin"), None);
}

#[test]
fn listening_beyond_loopback_needs_credentials_or_an_explicit_flag() {
    let o = crate::cli::kiln(&[
        "serve",
        "--model",
        tiny().to_str().unwrap(),
        "--host",
        "0.0.0.0",
        "--port",
        "0",
    ]);
    assert!(!o.status.success());
    let err = crate::cli::stderr(&o);
    assert!(
        err.contains("--api-auth") && err.contains("--insecure-listen"),
        "{err}"
    );
    let o = crate::cli::kiln(&[
        "serve",
        "--model",
        "/nonexistent/model.safetensors",
        "--port",
        "0",
    ]);
    assert!(!o.status.success());
    assert!(
        crate::cli::stderr(&o).contains("cannot serve this model"),
        "{}",
        crate::cli::stderr(&o)
    );
}
