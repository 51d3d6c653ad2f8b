//! Job control and plain job data, shared by every layer of the engine (a leaf module: it
//! uses nothing of the engine but [`crate::device`]): the tokens a front end sets to cancel or
//! pause a running job, the numeric [`Precision`] a model runs at, latents as host data, and
//! the one place a random seed is drawn.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Device, FloatDType};
use serde::{Deserialize, Serialize};

/// A flag the UI or CLI sets to stop a running job; checked before every step.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, unset token.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Pauses a training run between steps while set.
#[derive(Debug, Clone, Default)]
pub struct PauseToken(Arc<AtomicBool>);

impl PauseToken {
    /// Pauses or resumes.
    pub fn set(&self, paused: bool) {
        self.0.store(paused, Ordering::SeqCst);
    }
    /// Whether paused.
    pub fn is_paused(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Numeric precision of the UNet and the text encoder (the frozen base, when training an
/// adapter). The VAE always runs in f32 (its decoder overflows f16 on SD 1.x), as do the
/// scheduler math, prompt weighting, and the tensors a training run learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats everywhere.
    #[default]
    F32,
    /// 16-bit weights and activations in the UNet and text encoder (half the memory and,
    /// on GPUs, about twice the speed).
    F16,
    /// bfloat16: f32's range with 8 bits of mantissa (no overflow where f16 has one), on
    /// devices that compute in it (CUDA, the CPU backend; not wgpu).
    Bf16,
}

impl Precision {
    /// f16 on GPU backends, f32 on the CPU (where f16 is not faster).
    pub fn default_for(device: &Device) -> Self {
        if crate::device::is_cpu(device) {
            Precision::F32
        } else {
            Precision::F16
        }
    }

    /// Burn's dtype for it.
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    /// `f32`, `f16` or `bf16`, as the CLI and the recipe write it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// Whether `device` computes in this precision (every backend does f32; wgpu has no
    /// bf16 arithmetic); [`crate::error::Error::InvalidRequest`] naming what to use if not.
    pub fn check_on(self, device: &Device) -> crate::error::Result<Self> {
        if self == Precision::F32 || device.supports_dtype(self.dtype()) {
            return Ok(self);
        }
        Err(crate::error::Error::InvalidRequest(format!(
            "the {} device cannot compute in {}; use --precision f32{}",
            crate::device::backend_name(device),
            self.name(),
            if device.supports_dtype(FloatDType::F16) {
                " or f16"
            } else {
                ""
            }
        )))
    }
}

/// The precision a user asks for: `auto` (the device decides, [`Precision::default_for`]),
/// `f32`, `f16` or `bf16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    /// f16 on GPUs, f32 on the CPU.
    #[default]
    Auto,
    /// Always f32.
    F32,
    /// Always f16.
    F16,
    /// Always bf16.
    Bf16,
}

impl PrecisionChoice {
    /// The precision this choice means on `device` for generation.
    pub fn on(self, device: &Device) -> Precision {
        match self {
            PrecisionChoice::Auto => Precision::default_for(device),
            PrecisionChoice::F32 => Precision::F32,
            PrecisionChoice::F16 => Precision::F16,
            PrecisionChoice::Bf16 => Precision::Bf16,
        }
    }

    /// The precision of a training run's frozen base on `device`: `auto` is f32 on the CPU
    /// and, on a GPU, bf16 where the device computes in it (f16's narrow range can overflow
    /// in a backward pass), else f16. A precision the device lacks is an error.
    pub fn for_training(self, device: &Device) -> crate::error::Result<Precision> {
        match self {
            PrecisionChoice::Auto if crate::device::is_cpu(device) => Ok(Precision::F32),
            PrecisionChoice::Auto if device.supports_dtype(FloatDType::BF16) => Ok(Precision::Bf16),
            PrecisionChoice::Auto => Ok(Precision::F16),
            other => other.on(device).check_on(device),
        }
    }

    /// `auto`, `f32`, `f16` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            PrecisionChoice::Auto => "auto",
            PrecisionChoice::F32 => "f32",
            PrecisionChoice::F16 => "f16",
            PrecisionChoice::Bf16 => "bf16",
        }
    }
}

impl From<Precision> for PrecisionChoice {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F32 => PrecisionChoice::F32,
            Precision::F16 => PrecisionChoice::F16,
            Precision::Bf16 => PrecisionChoice::Bf16,
        }
    }
}

impl std::str::FromStr for PrecisionChoice {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(PrecisionChoice::Auto),
            "f32" => Ok(PrecisionChoice::F32),
            "f16" => Ok(PrecisionChoice::F16),
            "bf16" => Ok(PrecisionChoice::Bf16),
            other => Err(crate::error::Error::InvalidRequest(format!(
                "unknown precision '{other}' (available: auto, f32, f16, bf16)"
            ))),
        }
    }
}

/// Latents as plain host data.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentsData {
    /// `[B, C, h, w]`.
    pub shape: [usize; 4],
    /// Row-major values.
    pub values: Vec<f32>,
}

/// A random seed in AUTOMATIC1111's range (32 bits), for a job whose seed was left open.
pub fn random_seed() -> u64 {
    u64::from(rand::random::<u32>())
}
