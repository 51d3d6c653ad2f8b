//! What `kiln eval shapes` asks a model for: the shape–colour pairs the dataset never
//! shows, every one at every position, and the request that generates them.

use kiln_engine::pipeline::GenerationRequest;
use kiln_engine::schedulers::{Sampler, Schedule};

use crate::scene::{Background, Scene, ShapeSpec, Style};
use crate::{COLOURS, POSITIONS, SHAPES, is_held_out};

/// How `kiln eval shapes` draws: `prompts` (one image each) at the dataset's 64×64 with DPM++
/// 2M Karras, `steps` steps, CFG `cfg`, seed `seed`.
pub fn eval_request(prompts: Vec<String>, seed: u64, steps: usize, cfg: f64) -> GenerationRequest {
    GenerationRequest {
        prompts,
        negatives: vec![],
        sampler: Sampler::DpmPp2m {
            schedule: Schedule::Karras,
        },
        steps,
        cfg,
        seed,
        width: 64,
        height: 64,
        batch: 1,
        latents: None,
        clip_skip: 1,
        init_image: None,
        preview: false,
        step_noise: None,
    }
}

/// The held-out evaluation scenes: every held-out (shape, colour) pair, large, at each of the
/// nine positions, on a plain background (white, or blue for white shapes), filled in `style`.
pub fn eval_scenes(style: Style) -> Vec<Scene> {
    let mut out = Vec::new();
    for shape in 0..SHAPES.len() {
        for colour in 0..COLOURS.len() {
            if !is_held_out(shape, colour) {
                continue;
            }
            for position in 0..POSITIONS.len() {
                let bg = if colour == 6 { 2 } else { 6 };
                out.push(Scene {
                    shapes: vec![ShapeSpec {
                        shape,
                        colour,
                        large: true,
                        position,
                        omit_size: false,
                        omit_position: false,
                        style,
                    }],
                    background: Background::Plain(bg),
                });
            }
        }
    }
    out
}
