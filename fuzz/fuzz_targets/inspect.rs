//! `kiln inspect` on bytes: checkpoint classification, single-file shape inference (UNet,
//! VAE, text encoder), LoRA and embedding detection, under each extension a file can have.
#![no_main]

use libfuzzer_sys::fuzz_target;

const EXTENSIONS: [&str; 4] = ["safetensors", "ckpt", "pt", "bin"];

fuzz_target!(|data: &[u8]| {
    let (ext, bytes) = kiln_fuzz::select(data, EXTENSIONS.len());
    let path = kiln_fuzz::scratch_file(&format!("model.{}", EXTENSIONS[ext]), bytes);
    if let Ok(found) = kiln_engine::inspect::inspect(&path) {
        let _ = serde_json::to_string(&found);
    }
});
