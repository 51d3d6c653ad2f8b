//! The "Serve API" switch: `kiln serve`'s API inside the window, on the window's engine,
//! model and folders; what the API makes shows on the canvas and in the gallery.

use serde_json::{Value, json};

use super::{harness, settings, wait};
use crate::serve::{images, info, pixels, request};
use egui_kittest::kittest::Queryable;
use kiln::gui::studio::ModelStatus;

/// One request from another thread, answered while the window draws (it routes the API's
/// commands to its engine as it does).
fn call(
    h: &mut egui_kittest::Harness<'static, kiln::gui::KilnApp>,
    addr: &str,
    method: &'static str,
    path: &'static str,
    body: Vec<u8>,
) -> crate::serve::Reply {
    let addr = addr.to_owned();
    let call = std::thread::spawn(move || request(&addr, method, path, &[], &body));
    while !call.is_finished() {
        h.step();
    }
    call.join().unwrap()
}

#[test]
fn the_window_serves_the_api_with_its_model_and_shows_what_the_api_makes() {
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(out.path());
    s.api_port = 0; // any free port
    let mut h = harness(s);
    wait(&mut h, "the model", |a| {
        matches!(a.studio.model, ModelStatus::Loaded { .. })
    });
    h.get_by_label("Serve API").click();
    wait(&mut h, "the API", |a| a.studio.api.is_some());
    let addr = h.state().studio.api.unwrap().to_string();

    // A client asks; the window routes the job to its engine while it draws.
    let body = json!({"prompt": "a red square", "seed": 7, "steps": 3, "width": 48, "height": 32});
    let reply = call(
        &mut h,
        &addr,
        "POST",
        "/sdapi/v1/txt2img",
        body.to_string().into_bytes(),
    )
    .expect(200)
    .json();
    wait(&mut h, "the API's image in the gallery", |a| {
        a.views.gallery.items.len() == 1
    });
    let made = images(&reply);
    assert_eq!(made.len(), 1);
    assert_eq!(info(&reply)["seed"], 7);
    assert_eq!(
        info(&reply)["sd_model_name"],
        "tiny-b",
        "the window's model"
    );
    // The canvas shows it and the gallery holds it: the same pixels the client got.
    let shown = h.state().views.canvas.shown.as_ref().unwrap();
    assert_eq!(shown.image, pixels(&made[0]));
    assert_eq!(shown.recipe.as_ref().unwrap().seed, 7);
    let saved = kiln_engine::image::read_image(&h.state().views.gallery.items[0].path).unwrap();
    assert_eq!(saved, pixels(&made[0]));
    // The window's own job is untouched: no progress bar, no "cancelled" notice.
    assert!(h.state().studio.job.is_none());

    // `options` and `sd-models` name the window's model.
    let options: Value = call(&mut h, &addr, "GET", "/sdapi/v1/options", Vec::new())
        .expect(200)
        .json();
    assert!(
        options["sd_model_checkpoint"]
            .as_str()
            .unwrap()
            .starts_with("tiny-b"),
        "{options}"
    );

    // A model switch through `options` loads the model in the window, as Open model… does.
    crate::common::copy_dir(
        &crate::common::fixture("tiny-a"),
        &out.path().join("models/tiny-a"),
    );
    call(
        &mut h,
        &addr,
        "POST",
        "/sdapi/v1/options",
        br#"{"sd_model_checkpoint": "tiny-a"}"#.to_vec(),
    )
    .expect(200);
    let info_now = h.state().studio.info().unwrap();
    assert!(
        info_now.path.ends_with("models/tiny-a"),
        "{:?}",
        info_now.path
    );
    assert!(
        h.state()
            .settings
            .recent_models
            .iter()
            .any(|p| p.ends_with("models/tiny-a"))
    );

    // Off: the port is closed.
    h.get_by_label("Serve API").click();
    wait(&mut h, "the API to stop", |a| a.studio.api.is_none());
    assert!(std::net::TcpStream::connect(&addr).is_err());
    assert!(!h.state().settings.serve_api);
}
