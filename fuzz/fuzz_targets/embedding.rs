//! Textual-inversion readers: A1111 `.pt` (the pickle reader and its allowlist), diffusers
//! `.bin`, A1111 and diffusers safetensors.
#![no_main]

use libfuzzer_sys::fuzz_target;

const EXTENSIONS: [&str; 3] = ["pt", "bin", "safetensors"];

fuzz_target!(|data: &[u8]| {
    let (ext, bytes) = kiln_fuzz::select(data, EXTENSIONS.len());
    let path = kiln_fuzz::scratch_file(&format!("token.{}", EXTENSIONS[ext]), bytes);
    if let Ok(ti) = kiln_engine::adapters::textual_inversion::load(&path, None) {
        let _ = (ti.n_vectors(), ti.token_names());
    }
});
