//! Step 3 of the pipeline: the denoising loop with classifier-free guidance.

use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::job::CancelToken;
use crate::pipeline::{StableDiffusion, StepProgress};
use crate::schedulers::{Noise, Scheduler, interp, predict_x0};

/// What one denoising loop runs.
pub struct Denoise<'a> {
    /// The sampler, set up for the request's steps.
    pub scheduler: &'a mut dyn Scheduler,
    /// The starting latents `[B, C, h, w]`.
    pub latents: Tensor<4>,
    /// The first UNet call (0 for txt2img).
    pub start: usize,
    /// Text conditioning: `[2B, L, D]` (negatives first) with guidance, else `[B, L, D]`.
    pub context: &'a Tensor<3>,
    /// The guidance scale, or None for a single unguided pass.
    pub cfg: Option<f64>,
    /// Whether to compute a preview after every call.
    pub preview: bool,
}

/// Runs the loop from call `start`: before each call `cancel` is checked ([`Error::Cancelled`]),
/// the UNet runs on `[uncond; cond]` and the prediction is `uncond + cfg·(cond − uncond)`,
/// the scheduler steps (drawing from `noise` if it is stochastic), and `on_step` hears of it
/// (with x̂₀ as a preview when asked). Returns the final latents `[B, C, h, w]`.
pub fn denoise(
    sd: &StableDiffusion,
    job: Denoise<'_>,
    noise: &mut Noise,
    cancel: &CancelToken,
    on_step: &mut dyn FnMut(StepProgress),
) -> Result<Tensor<4>> {
    let Denoise {
        scheduler,
        mut latents,
        start,
        context,
        cfg,
        preview,
    } = job;
    let timesteps = scheduler.timesteps().to_vec();
    let calls = timesteps.len() - start;
    // The preview shows x̂₀ from the (scaled) UNet input and the guided prediction.
    let preview_alphas = if preview {
        Some(sd.info.scheduler.alphas_cumprod()?)
    } else {
        None
    };
    for (i, &t) in timesteps.iter().enumerate().skip(start) {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let input = scheduler.scale_model_input(latents.clone(), i);
        let pred = match cfg {
            Some(cfg) => {
                let doubled = Tensor::cat(vec![input.clone(), input.clone()], 0);
                let out = sd.unet_forward(doubled, t, context);
                let mut halves = out.chunk(2, 0);
                let (Some(text), Some(uncond)) = (halves.pop(), halves.pop()) else {
                    return Err(Error::InvalidRequest("the UNet returned no batch".into()));
                };
                uncond.clone() + (text - uncond) * cfg
            }
            None => sd.unet_forward(input.clone(), t, context),
        };
        let preview = match &preview_alphas {
            Some(alphas) => {
                let x0 = predict_x0(
                    sd.info.scheduler.prediction_type,
                    &input,
                    pred.clone(),
                    interp(t, alphas),
                );
                Some(sd.preview(x0)?)
            }
            None => None,
        };
        latents = scheduler.step(pred, i, latents, noise);
        // On a GPU the step is queued: wait for it, so progress (and it/s) is real.
        crate::device::sync(sd.device())?;
        on_step(StepProgress {
            step: i + 1 - start,
            total: calls,
            preview,
        });
    }
    Ok(latents)
}
