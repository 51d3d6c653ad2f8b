//! PNG metadata: the text chunks of an image file, then each reader on them — Kiln's recipe,
//! A1111 `parameters`, ComfyUI `prompt`/`workflow`, InvokeAI — and each reader on the raw
//! input as text; the image decoder the window uses for dropped images too.
#![no_main]

use std::path::Path;

use kiln_engine::metadata::{self, Recipe, a1111, comfyui, invokeai};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = Path::new("fuzz.png");
    if let Ok(chunks) = kiln_engine::image::png_text(data, name) {
        if let Some(info) = metadata::image_info(&chunks) {
            let _ = a1111::write(&info.parameters);
            let _ = info.parameters.kiln_sampler();
        }
    }
    let _ = kiln_engine::image::decode_image(data, name);
    if let Some(text) = kiln_fuzz::text(data) {
        if let Some(p) = a1111::parse(text) {
            let _ = a1111::write(&p);
        }
        let _ = comfyui::parse(text);
        let _ = invokeai::parse(text);
        if let Ok(recipe) = serde_json::from_str::<Recipe>(text) {
            let _ = recipe.a1111_parameters();
        }
    }
});
