//! LoRA files: key classification (kohya, diffusers, PEFT, LoHa, LoKr, DoRA), matching against
//! SD 1.5's layers and the shape checks; a PEFT folder's `adapter_config.json` too.
#![no_main]

use std::sync::OnceLock;

use kiln_engine::adapters::lora::LoraAdapter;
use kiln_engine::adapters::lora::targets::{TargetIndex, sd15_names};
use libfuzzer_sys::fuzz_target;

/// A real PEFT adapter, the weights beside a fuzzed `adapter_config.json`.
const PEFT_WEIGHTS: &[u8] =
    include_bytes!("../../tests/fixtures/adapters/peft_qkvo/adapter_model.safetensors");

fn names() -> &'static TargetIndex {
    static NAMES: OnceLock<TargetIndex> = OnceLock::new();
    NAMES.get_or_init(|| sd15_names().expect("SD 1.5's layer names"))
}

fuzz_target!(|data: &[u8]| {
    let (mode, bytes) = kiln_fuzz::select(data, 2);
    let path = if mode == 0 {
        kiln_fuzz::scratch_file("lora.safetensors", bytes)
    } else {
        let dir = kiln_fuzz::scratch_dir().join("peft");
        if !dir.is_dir() {
            std::fs::create_dir(&dir).expect("peft folder");
            std::fs::write(dir.join("adapter_model.safetensors"), PEFT_WEIGHTS).expect("weights");
        }
        std::fs::write(dir.join("adapter_config.json"), bytes).expect("config");
        dir
    };
    for check_shapes in [false, true] {
        let _ = LoraAdapter::read(&path, names(), check_shapes);
    }
});
