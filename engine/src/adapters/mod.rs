//! Adapters that change what a loaded model does: LoRA stacks and textual-inversion tokens.

pub mod lora;
pub mod textual_inversion;

use serde::{Deserialize, Serialize};

/// Names one adapter (a LoRA in the stack, a loaded embedding) across the engine's protocol:
/// chosen by the front end, so a command about an adapter never depends on positions that
/// change while commands are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AdapterId(pub u64);

impl std::fmt::Display for AdapterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}
