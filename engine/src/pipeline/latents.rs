//! Step 2 of the pipeline: the latents the denoising loop starts from, and the UNet call it
//! starts at.

use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::pipeline::{GenerationRequest, StableDiffusion};
use crate::schedulers::{Noise, Scheduler};
use crate::tensors::latents_from_host;

/// The starting latents `shape` = `[B, C, h, w]` and the first UNet call: txt2img — the given
/// latents, or seeded noise, × `init_noise_sigma`, from call 0; img2img — the init image
/// encoded (posterior mean × scaling factor) and noised (with the given latents as the noise,
/// else seeded noise) to the call where the last `⌊steps·strength⌋` steps begin, as diffusers'
/// `get_timesteps`.
pub fn prepare(
    sd: &StableDiffusion,
    req: &GenerationRequest,
    shape: [usize; 4],
    scheduler: &dyn Scheduler,
    noise: &mut Noise,
) -> Result<(Tensor<4>, usize)> {
    let device = sd.device();
    let given = match &req.latents {
        Some(l) if l.shape != shape => {
            return Err(Error::InvalidRequest(format!(
                "--latents has shape {:?}, this request needs {shape:?}",
                l.shape
            )));
        }
        Some(l) => Some(latents_from_host(l, device)?),
        None => None,
    };
    let Some(init) = &req.init_image else {
        let start = given.unwrap_or_else(|| noise.randn(shape, device));
        return Ok((start * scheduler.init_noise_sigma(), 0));
    };
    if !(init.strength > 0.0 && init.strength <= 1.0) {
        return Err(Error::InvalidRequest(format!(
            "strength must be in (0, 1], got {}",
            init.strength
        )));
    }
    let run = ((req.steps as f64 * init.strength) as usize).min(req.steps);
    if run == 0 {
        return Err(Error::InvalidRequest(format!(
            "strength {} × {} steps runs no step; raise the strength or the steps",
            init.strength, req.steps
        )));
    }
    let start = (req.steps - run) * scheduler.order();
    let fitted = crate::image::fit(&init.image, req.width, req.height);
    let pixels = crate::image::from_rgb8(&[&fitted], device);
    let encoded = sd.vae.encode_mean(pixels) * sd.vae.scaling_factor;
    let encoded = encoded.repeat_dim(0, shape[0]);
    let eps = given.unwrap_or_else(|| noise.randn(shape, device));
    Ok((scheduler.add_noise(encoded, eps, start), start))
}
