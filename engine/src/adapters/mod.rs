//! Adapters that change what a loaded model does: LoRA stacks and textual-inversion tokens.

pub mod lora;
pub mod textual_inversion;
