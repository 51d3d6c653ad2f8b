//! Noise schedulers, kept apart from the models as diffusers keeps them: an immutable
//! [`SchedulerConfig`] (diffusers' `scheduler_config.json`), per-run state created by
//! `set_timesteps`, schedule math in f64 on the CPU, and only `step` touching tensors.
//! Randomness (for η > 0 and stochastic samplers) comes from an explicit [`Noise`] source.

pub mod ddim;
pub mod ddpm;
pub mod dpm_solver_multistep;
pub mod dpmpp_2s_ancestral;
pub mod euler;
pub mod euler_ancestral;
pub mod heun;
pub mod lcm;
pub mod lms;
pub mod sampler;
pub mod unipc_multistep;

pub use sampler::{Sampler, SamplerKind};

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::LatentsData;

fn default_train_steps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.00085
}
fn default_beta_end() -> f64 {
    0.012
}
fn default_one() -> f64 {
    1.0
}

/// diffusers' `beta_schedule`: how the training βs run from `beta_start` to `beta_end`. An
/// unknown name in a `scheduler_config.json` is an error naming the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// Evenly spaced βs.
    Linear,
    /// Evenly spaced √β (Stable Diffusion's).
    #[default]
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal (2021), capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// diffusers' `prediction_type`: what the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The noise ε (SD 1.x).
    #[default]
    Epsilon,
    /// v = √ᾱ·ε − √(1 − ᾱ)·x₀ (SD 2.x 768-v models).
    VPrediction,
    /// The clean sample x₀.
    Sample,
}

impl PredictionType {
    /// diffusers' name (`epsilon`, `v_prediction`, `sample`).
    pub fn name(self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
            PredictionType::Sample => "sample",
        }
    }
}

/// diffusers' `timestep_spacing`: how inference timesteps are picked among the training ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `i · (N / steps) + steps_offset` (DDIM's default; SD 1.5's configs with offset 1).
    Leading,
    /// Counting down from N in steps of N / steps.
    Trailing,
    /// Evenly spaced from N − 1 down to 0.
    Linspace,
}

/// Diffusers' scheduler config (`scheduler/scheduler_config.json`), SD 1.5 values by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// Training timesteps (1000).
    #[serde(default = "default_train_steps")]
    pub num_train_timesteps: usize,
    /// First β.
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    /// Last β.
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    /// How the βs run from `beta_start` to `beta_end`.
    #[serde(default)]
    pub beta_schedule: BetaSchedule,
    /// Explicit βs, overriding the schedule.
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    /// What the UNet predicts.
    #[serde(default)]
    pub prediction_type: PredictionType,
    /// Clip the predicted x₀ to ±`clip_sample_range`.
    #[serde(default)]
    pub clip_sample: bool,
    /// Range for `clip_sample`.
    #[serde(default = "default_one")]
    pub clip_sample_range: f64,
    /// DDIM: use ᾱ = 1 for the step after the last.
    #[serde(default)]
    pub set_alpha_to_one: bool,
    /// Added to every inference timestep ("leading" spacing).
    #[serde(default)]
    pub steps_offset: usize,
    /// How inference timesteps are spaced; None = the scheduler class's own default.
    #[serde(default)]
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Rescale βs to zero terminal SNR.
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

impl SchedulerConfig {
    /// SD 1.5's scheduler config (`runwayml/stable-diffusion-v1-5`, PNDM file read as DDIM).
    pub fn sd15() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            clip_sample: false,
            clip_sample_range: 1.0,
            set_alpha_to_one: false,
            steps_offset: 1,
            timestep_spacing: None,
            rescale_betas_zero_snr: false,
        }
    }

    /// The training βs.
    pub fn betas(&self) -> Result<Vec<f64>> {
        let n = self.num_train_timesteps;
        if let Some(b) = &self.trained_betas {
            return Ok(b.clone());
        }
        let lin =
            |a: f64, b: f64| (0..n).map(move |i| a + (b - a) * i as f64 / (n.max(2) - 1) as f64);
        let betas: Vec<f64> = match self.beta_schedule {
            BetaSchedule::Linear => lin(self.beta_start, self.beta_end).collect(),
            BetaSchedule::ScaledLinear => lin(self.beta_start.sqrt(), self.beta_end.sqrt())
                .map(|b| b * b)
                .collect(),
            BetaSchedule::SquaredcosCapV2 => {
                let f = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        (1.0 - f((i + 1) as f64 / n as f64) / f(i as f64 / n as f64)).min(0.999)
                    })
                    .collect()
            }
        };
        Ok(betas)
    }

    /// ᾱ_t = ∏(1 − β) for every training timestep (zero-terminal-SNR rescaled if configured).
    pub fn alphas_cumprod(&self) -> Result<Vec<f64>> {
        let betas = self.betas()?;
        let mut acc = 1.0;
        let mut out: Vec<f64> = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        if self.rescale_betas_zero_snr {
            let sqrt: Vec<f64> = out.iter().map(|a| a.sqrt()).collect();
            let (first, last) = (sqrt[0], sqrt[sqrt.len() - 1]);
            out = sqrt
                .iter()
                .map(|s| {
                    let r = (s - last) * first / (first - last);
                    (r * r).max(if r == 0.0 { 2f64.powi(-24) } else { 0.0 })
                })
                .collect();
        }
        Ok(out)
    }

    /// Checks what the enums cannot: a schedule that has a timestep for every step.
    pub fn validate(&self) -> Result<()> {
        if self.num_train_timesteps == 0 {
            return Err(Error::Config(
                "num_train_timesteps must be at least 1".into(),
            ));
        }
        if let Some(b) = &self.trained_betas
            && b.len() != self.num_train_timesteps
        {
            return Err(Error::Config(format!(
                "trained_betas has {} values for {} training timesteps",
                b.len(),
                self.num_train_timesteps
            )));
        }
        Ok(())
    }
}

/// Inference timesteps for `steps` steps with diffusers' `timestep_spacing` rules
/// (descending; fractional only for `linspace` before rounding by the caller).
pub fn spaced_timesteps(
    config: &SchedulerConfig,
    spacing: TimestepSpacing,
    steps: usize,
) -> Result<Vec<i64>> {
    let n = config.num_train_timesteps;
    if steps == 0 || steps > n {
        return Err(Error::InvalidRequest(format!(
            "steps must be between 1 and {n}, got {steps}"
        )));
    }
    let t: Vec<i64> = match spacing {
        TimestepSpacing::Leading => {
            let ratio = n / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio) as i64 + config.steps_offset as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = n as f64 / steps as f64;
            let mut v: Vec<i64> = Vec::with_capacity(steps);
            let mut x = n as f64;
            while x > 0.0 && v.len() < steps {
                v.push(x.round() as i64 - 1);
                x -= ratio;
            }
            v
        }
        TimestepSpacing::Linspace => (0..steps)
            .rev()
            .map(|i| (i as f64 * (n - 1) as f64 / (steps.max(2) - 1) as f64).round() as i64)
            .collect(),
    };
    Ok(t)
}

/// The Gaussian noise of a run: one independent seeded stream per image, so an image's noise
/// does not depend on which batch it is generated in — or, to reproduce another tool's run
/// exactly, noise recorded there, replayed draw by draw ([`Noise::replay`]).
#[derive(Debug, Clone)]
pub struct Noise {
    streams: Vec<ChaCha8Rng>,
    replay: Option<Replay>,
}

/// Recorded draws and what went wrong replaying them.
#[derive(Debug, Clone)]
struct Replay {
    draws: std::collections::VecDeque<LatentsData>,
    taken: usize,
    problem: Option<String>,
}

impl Noise {
    /// One stream per seed.
    pub fn new(seeds: &[u64]) -> Self {
        Noise {
            streams: seeds
                .iter()
                .map(|s| ChaCha8Rng::seed_from_u64(*s))
                .collect(),
            replay: None,
        }
    }

    /// Noise that hands out `draws` in order, each `[B, C, H, W]` for the whole batch (B =
    /// the number of seeds), as another implementation drew them. A draw of another shape, one
    /// too many or one left over is reported by [`Noise::finish`] (the seeded streams stand in
    /// meanwhile, so the run ends).
    pub fn replay(seeds: &[u64], draws: Vec<LatentsData>) -> Self {
        Noise {
            replay: Some(Replay {
                draws: draws.into(),
                taken: 0,
                problem: None,
            }),
            ..Noise::new(seeds)
        }
    }

    /// Number of streams (images).
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether there are no streams.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Standard normal noise `[B, C, H, W]`; item b comes from stream b (B = number of
    /// streams), or the next recorded draw when replaying.
    pub fn randn(&mut self, shape: [usize; 4], device: &Device) -> Tensor<4> {
        let shape = [self.streams.len(), shape[1], shape[2], shape[3]];
        if let Some(r) = &mut self.replay {
            let k = r.taken;
            r.taken += 1;
            match r.draws.pop_front() {
                Some(d) if d.shape == shape => {
                    return Tensor::from_data(TensorData::new(d.values, shape), device);
                }
                Some(d) => {
                    r.problem.get_or_insert(format!(
                        "recorded noise draw {k} has shape {:?}; the sampler drew {shape:?}",
                        d.shape
                    ));
                }
                None => {
                    r.problem.get_or_insert(format!(
                        "the sampler drew noise {} times; {k} draws were recorded",
                        k + 1
                    ));
                }
            }
        }
        let per: usize = shape[1..].iter().product();
        let mut values = Vec::with_capacity(per * self.streams.len());
        for rng in &mut self.streams {
            values.extend((0..per).map(|_| -> f32 { StandardNormal.sample(rng) }));
        }
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// After a run: whether replayed noise fitted it exactly (every draw taken, each of the
    /// shape the sampler drew). Always Ok for seeded noise.
    pub fn finish(&self) -> Result<()> {
        let Some(r) = &self.replay else {
            return Ok(());
        };
        if let Some(p) = &r.problem {
            return Err(Error::InvalidRequest(format!("replayed noise: {p}")));
        }
        if !r.draws.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "replayed noise: the sampler drew {} times; {} draws were recorded",
                r.taken,
                r.taken + r.draws.len()
            )));
        }
        Ok(())
    }
}

/// x̂₀ from the UNet output for diffusers' `prediction_type` at cumulative alpha
/// `alpha_cumprod`.
pub fn predict_x0(
    prediction_type: PredictionType,
    sample: &Tensor<4>,
    model_output: Tensor<4>,
    alpha_cumprod: f64,
) -> Tensor<4> {
    let (a, b) = (alpha_cumprod, 1.0 - alpha_cumprod);
    match prediction_type {
        PredictionType::VPrediction => sample.clone() * a.sqrt() - model_output * b.sqrt(),
        PredictionType::Sample => model_output,
        PredictionType::Epsilon => (sample.clone() - model_output * b.sqrt()) / a.sqrt(),
    }
}

/// `√ᾱ·original + √(1 − ᾱ)·noise`: clean latents noised to cumulative alpha `alpha_cumprod`
/// (diffusers' `add_noise` of the ᾱ-parameterised schedulers).
pub fn add_noise_vp(original: Tensor<4>, noise: Tensor<4>, alpha_cumprod: f64) -> Tensor<4> {
    original * alpha_cumprod.sqrt() + noise * (1.0 - alpha_cumprod).sqrt()
}

/// A sampler driving the denoising loop.
pub trait Scheduler {
    /// The timesteps passed to the UNet, one per step (may be fractional).
    fn timesteps(&self) -> &[f64];
    /// Factor applied to the initial noise (diffusers' `init_noise_sigma`): 1 for the
    /// variance-preserving samplers, σ_max-ish for the σ-space ones.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// Scales the UNet input at call `i` (identity unless the sampler works in σ-space).
    fn scale_model_input(&self, sample: Tensor<4>, _i: usize) -> Tensor<4> {
        sample
    }
    /// UNet calls per step (2 for Heun and DPM++ 2S a): img2img starting at step k starts at
    /// call `k · order()`, as diffusers' `get_timesteps`.
    fn order(&self) -> usize {
        1
    }
    /// Noises clean latents `original` to the noise level of call `i` (diffusers'
    /// `add_noise`, for img2img); `noise` is standard normal, same shape.
    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, i: usize) -> Tensor<4>;
    /// One denoising step: `model_output` and `sample` are `[B, C, h, w]`; returns the
    /// sample for the next step.
    fn step(
        &mut self,
        model_output: Tensor<4>,
        i: usize,
        sample: Tensor<4>,
        noise: &mut Noise,
    ) -> Tensor<4>;
}

impl std::str::FromStr for Schedule {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> crate::error::Result<Self> {
        Schedule::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                crate::error::Error::InvalidRequest(format!(
                    "unknown schedule '{s}' (available: default, karras, exponential)"
                ))
            })
    }
}

/// How the inference sigmas are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// The config's `timestep_spacing` (the scheduler class's default when unset).
    #[default]
    Default,
    /// Karras et al. (2022) sigmas, ρ = 7.
    Karras,
    /// Sigmas evenly spaced in log σ.
    Exponential,
}

impl Schedule {
    /// Every schedule, in the order the CLI lists them.
    pub const ALL: [Schedule; 3] = [Schedule::Default, Schedule::Karras, Schedule::Exponential];

    /// The name the CLI and recipes use (`default`, `karras`, `exponential`).
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Default => "default",
            Schedule::Karras => "karras",
            Schedule::Exponential => "exponential",
        }
    }

    /// `steps` sigmas from `sigma_max` down to `sigma_min`; None for [`Schedule::Default`].
    pub fn sigmas(self, sigma_min: f64, sigma_max: f64, steps: usize) -> Option<Vec<f64>> {
        match self {
            Schedule::Default => None,
            Schedule::Karras => Some(karras_sigmas(sigma_min, sigma_max, steps)),
            Schedule::Exponential => Some(exponential_sigmas(sigma_min, sigma_max, steps)),
        }
    }
}

/// `n` sigmas evenly spaced in log σ from `sigma_max` to `sigma_min` (diffusers'
/// `use_exponential_sigmas`).
pub fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let (a, b) = (sigma_max.ln(), sigma_min.ln());
    (0..n)
        .map(|i| {
            (a + (b - a)
                * if n > 1 {
                    i as f64 / (n - 1) as f64
                } else {
                    0.0
                })
            .exp()
        })
        .collect()
}

/// σ_t = √((1 − ᾱ_t) / ᾱ_t) for every training timestep.
pub fn train_sigmas(alphas_cumprod: &[f64]) -> Vec<f64> {
    alphas_cumprod
        .iter()
        .map(|a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// Linear interpolation of `values` (indexed 0..n) at the fractional index `t` (numpy `interp`).
pub fn interp(t: f64, values: &[f64]) -> f64 {
    let last = values.len() - 1;
    if t <= 0.0 {
        return values[0];
    }
    if t >= last as f64 {
        return values[last];
    }
    let i = t.floor() as usize;
    let w = t - i as f64;
    values[i] * (1.0 - w) + values[i + 1] * w
}

/// Karras sigmas from `sigma_max` down to `sigma_min` in `n` steps (ρ = 7).
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    (0..n)
        .map(|i| {
            let ramp = if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.0
            };
            (max_inv + ramp * (min_inv - max_inv)).powf(rho)
        })
        .collect()
}

/// The fractional training timestep of `sigma` (diffusers' `_sigma_to_t`: interpolation in
/// log σ between the two neighbouring training sigmas).
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    let low = log_sigmas
        .iter()
        .rposition(|l| log_sigma - l >= 0.0)
        .unwrap_or(0)
        .min(n - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(shape: [usize; 4], start: f32) -> LatentsData {
        let n = shape.iter().product();
        LatentsData {
            shape,
            values: (0..n).map(|i| start + i as f32).collect(),
        }
    }

    #[test]
    fn replayed_noise_hands_out_the_recorded_draws_and_checks_they_fit() {
        let device = crate::device::device("cpu").expect("cpu");
        let shape = [2, 1, 1, 2];
        let mut noise = Noise::replay(&[7, 8], vec![draw(shape, 0.0), draw(shape, 10.0)]);
        let got = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().expect("f32");
        assert_eq!(got(noise.randn(shape, &device)), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(
            got(noise.randn(shape, &device)),
            vec![10.0, 11.0, 12.0, 13.0]
        );
        assert!(noise.finish().is_ok());
        // One draw too many: the seeded stream stands in, and the run is refused.
        let seeded = got(Noise::new(&[7, 8]).randn(shape, &device));
        assert_eq!(got(noise.randn(shape, &device)), seeded);
        let err = noise.finish().expect_err("one too many").to_string();
        assert!(
            err.contains("drew noise 3 times; 2 draws were recorded"),
            "{err}"
        );
        // A draw of another shape, and draws left over.
        let mut noise = Noise::replay(&[7, 8], vec![draw([2, 1, 2, 2], 0.0)]);
        noise.randn(shape, &device);
        let err = noise.finish().expect_err("shape").to_string();
        assert!(err.contains("draw 0 has shape [2, 1, 2, 2]"), "{err}");
        let noise = Noise::replay(&[7], vec![draw([1, 1, 1, 1], 0.0)]);
        let err = noise.finish().expect_err("left over").to_string();
        assert!(err.contains("drew 0 times; 1 draws were recorded"), "{err}");
    }

    #[test]
    fn unknown_names_in_a_scheduler_config_are_refused() {
        let parse = |json: &str| serde_json::from_str::<SchedulerConfig>(json);
        let ok = parse(r#"{"prediction_type": "v_prediction", "timestep_spacing": "trailing"}"#)
            .expect("known names");
        assert_eq!(ok.prediction_type, PredictionType::VPrediction);
        assert_eq!(ok.timestep_spacing, Some(TimestepSpacing::Trailing));
        assert_eq!(ok.beta_schedule, BetaSchedule::ScaledLinear);
        for bad in [
            r#"{"prediction_type": "flow"}"#,
            r#"{"beta_schedule": "sigmoid"}"#,
            r#"{"timestep_spacing": "karras"}"#,
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.contains("unknown variant"), "{bad}: {err}");
        }
    }
}
