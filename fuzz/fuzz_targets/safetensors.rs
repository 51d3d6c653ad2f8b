//! The safetensors reader: header length, JSON header, tensor table, and every tensor read
//! back — in memory (LoRAs, embeddings) and lazily from a file (checkpoints).
#![no_main]

use std::path::Path;

use kiln_engine::burn::tensor::DType;
use kiln_engine::weights::safetensors::SafeTensors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = SafeTensors::from_bytes(Path::new("fuzz.safetensors"), data.to_vec()) {
        let _ = file.main_dtype();
        for name in file.tensors().keys() {
            let _ = file.f32(name);
            let _ = file.tensor_data(name, DType::F16);
        }
    }
    let path = kiln_fuzz::scratch_file("lazy.safetensors", data);
    if let Ok(file) = SafeTensors::open_lazy(&path) {
        for name in file.tensors().keys() {
            let _ = file.tensor_data(name, DType::F32);
        }
    }
});
