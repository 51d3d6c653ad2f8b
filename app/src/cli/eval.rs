//! `kiln eval shapes`: how well a model follows the prompt, measured. It generates the
//! held-out prompts of the shapes dataset (shape–colour pairs never trained on) and reads each
//! image back with `kiln_shapes::detect` (`detect_striped` for `--style striped`) —
//! computed from the pixels, not the model — then prints the accuracy for colour, shape and
//! position, and for the background colour (`kiln_shapes::detect_background`; the
//! held-out scenes are on white, or blue for white shapes), and, for striped prompts, how many
//! came out striped. Prompt `i` of the full list is always generated with seed `i`, so runs
//! with different `--limit`s agree on the prompts they share. Images are 64×64, the dataset's
//! size, which the detector reads (`kiln_shapes::eval_request`).

use std::path::PathBuf;

use anyhow::Result;
use kiln_engine::adapters::AdapterId;
use kiln_engine::device::DeviceSpec;
use kiln_engine::job::{CancelToken, PrecisionChoice};
use kiln_engine::resolve::ModelChoice;
use kiln_engine::session::Session;
use kiln_shapes::{
    Background, COLOURS, Detection, POSITIONS, SHAPES, Style, detect, detect_background,
    detect_striped, eval_request, eval_scenes,
};
use serde::Serialize;

/// What to evaluate.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Held-out shapes prompts, scored by the detector.
    Shapes {
        /// The model (diffusers folder or .safetensors) [default: the built-in kiln-tiny].
        #[arg(long)]
        model: Option<PathBuf>,
        /// A LoRA to apply: FILE or FILE:WEIGHT.
        #[arg(long)]
        lora: Option<String>,
        /// Evaluate N of the 45 prompts, spread evenly over the held-out pairs.
        #[arg(long)]
        limit: Option<usize>,
        /// Sampling steps (DPM++ 2M Karras).
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// CFG scale.
        #[arg(long, default_value_t = 7.0)]
        cfg: f64,
        /// Print JSON (every prompt and what was read back).
        #[arg(long)]
        json: bool,
        /// The fill the prompts ask for: solid, or striped (a style LoRA's; also scores
        /// whether the shapes come out striped).
        #[arg(long, default_value = "solid")]
        style: String,
        /// Compute device: auto, cpu, cuda[:N], metal, vulkan or wgpu (what this build has;
        /// the model runs in f32 on any device, so the scores do not depend on it).
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
    },
}

#[derive(Debug, Serialize)]
struct Item {
    prompt: String,
    colour: bool,
    shape: bool,
    position: bool,
    /// Whether the background came out in the colour the prompt names.
    background: bool,
    /// With `--style striped`: whether the shape came out striped.
    #[serde(skip_serializing_if = "Option::is_none")]
    striped: Option<bool>,
    read: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    prompts: usize,
    colour_accuracy: f64,
    shape_accuracy: f64,
    position_accuracy: f64,
    background_accuracy: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    striped_accuracy: Option<f64>,
    items: Vec<Item>,
}

/// Runs `kiln eval …`.
pub fn eval(command: EvalCommand) -> Result<()> {
    let EvalCommand::Shapes {
        model,
        lora,
        limit,
        steps,
        cfg,
        json,
        style,
        device,
    } = command;
    let style = Style::parse(&style)
        .ok_or_else(|| anyhow::anyhow!("unknown --style '{style}' (solid, striped)"))?;
    let model = ModelChoice {
        path: match model {
            Some(m) => m,
            None => crate::paths::bundled_or_error()?,
        },
        config: None,
        device,
        precision: PrecisionChoice::F32,
    };
    let mut session = Session::load(&model, None)?;
    if let Some(spec) = lora {
        let (file, weight) = super::generate::split_suffix(&spec, |w| w.parse::<f32>().ok())?;
        let adapter = session.open_lora(std::path::Path::new(&file))?;
        session.add_lora(AdapterId(0), adapter, weight.unwrap_or(1.0), true);
    }
    let scenes = eval_scenes(style);
    // N prompts spread evenly over the list (it is ordered pair by pair, position by position),
    // so a short run still covers every held-out pair.
    let n = limit.unwrap_or(scenes.len()).clamp(1, scenes.len());
    let scenes: Vec<_> = (0..n)
        .map(|i| {
            let at = i * scenes.len() / n;
            (at, scenes[at].clone())
        })
        .collect();
    let mut items = Vec::with_capacity(scenes.len());
    for (at, scene) in &scenes {
        let prompt = scene.caption();
        let req = eval_request(vec![prompt.clone()], *at as u64, steps, cfg);
        let out = session
            .model()
            .generate(&req, &CancelToken::new(), &mut |_| {})?;
        let want = &scene.shapes[0];
        let image = out.images.first();
        let (got, striped): (Option<Detection>, Option<bool>) = match style {
            Style::Solid => (image.and_then(detect), None),
            Style::Striped => match image.and_then(detect_striped) {
                Some(d) => (Some(d.shape), Some(d.striped)),
                None => (None, Some(false)),
            },
        };
        items.push(Item {
            colour: got.as_ref().is_some_and(|d| d.colour == want.colour),
            shape: got.as_ref().is_some_and(|d| d.shape == want.shape),
            position: got.as_ref().is_some_and(|d| d.position == want.position),
            background: image
                .is_some_and(|i| Background::Plain(detect_background(i)) == scene.background),
            striped,
            read: got.map(|d| {
                format!(
                    "{} {} {}",
                    COLOURS[d.colour].0, SHAPES[d.shape], POSITIONS[d.position]
                )
            }),
            prompt,
        });
    }
    let n = items.len().max(1) as f64;
    let acc = |f: &dyn Fn(&Item) -> bool| items.iter().filter(|i| f(i)).count() as f64 / n;
    let report = Report {
        prompts: items.len(),
        colour_accuracy: acc(&|i| i.colour),
        shape_accuracy: acc(&|i| i.shape),
        position_accuracy: acc(&|i| i.position),
        background_accuracy: acc(&|i| i.background),
        striped_accuracy: (style == Style::Striped).then(|| acc(&|i| i.striped == Some(true))),
        items,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} held-out prompts: colour {:.1}%, shape {:.1}%, position {:.1}%, background {:.1}%{}",
            report.prompts,
            report.colour_accuracy * 100.0,
            report.shape_accuracy * 100.0,
            report.position_accuracy * 100.0,
            report.background_accuracy * 100.0,
            report
                .striped_accuracy
                .map(|a| format!(", striped {:.1}%", a * 100.0))
                .unwrap_or_default()
        );
    }
    Ok(())
}
