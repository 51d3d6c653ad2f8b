//! A procedural, captioned dataset of simple shapes — the data `kiln-tiny` learns from — and a
//! detector that reads colour, shape and position back from an image, to measure how well a
//! model follows a prompt (`kiln eval shapes`).
//!
//! Each image (64×64 by default) holds one or two shapes (circle, square, triangle, star, ring)
//! in a named colour, small or large, at one of nine positions, on a plain, gradient or two-tone
//! background; the caption says exactly that: "a small red star at the top left on a blue
//! background". Everything derives from the seed and the image's index. [`SceneOptions`]
//! narrow it (one shape only, some kinds of background only) for a simpler dataset.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::image::RgbImage;
use crate::pipeline::{GenerationRequest, Sampler};
use crate::schedulers::Schedule;

/// The named colours and their RGB values.
pub const COLOURS: [(&str, [u8; 3]); 8] = [
    ("red", [220, 40, 40]),
    ("green", [40, 170, 60]),
    ("blue", [40, 80, 220]),
    ("yellow", [240, 210, 40]),
    ("purple", [140, 60, 180]),
    ("orange", [245, 140, 30]),
    ("white", [245, 245, 245]),
    ("black", [20, 20, 20]),
];

/// The shapes.
pub const SHAPES: [&str; 5] = ["circle", "square", "triangle", "star", "ring"];

/// The nine positions, row-major, with their caption phrases.
pub const POSITIONS: [&str; 9] = [
    "at the top left",
    "at the top",
    "at the top right",
    "on the left",
    "in the center",
    "on the right",
    "at the bottom left",
    "at the bottom",
    "at the bottom right",
];

/// One shape in a scene.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeSpec {
    /// Index into [`SHAPES`].
    pub shape: usize,
    /// Index into [`COLOURS`].
    pub colour: usize,
    /// Large (true) or small.
    pub large: bool,
    /// Index into [`POSITIONS`].
    pub position: usize,
    /// The caption leaves out the size ("a red circle …"): prompts people type are often
    /// less specific than the dataset's captions.
    #[serde(default)]
    pub omit_size: bool,
    /// The caption leaves out the position.
    #[serde(default)]
    pub omit_position: bool,
    /// The fill.
    #[serde(default)]
    pub style: Style,
}

/// How a shape is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// One colour.
    #[default]
    Solid,
    /// Horizontal bands (an eighth of the image high) of the colour and a dark shade of it
    /// (grey for black): the "new style" a LoRA learns in Kiln's example. Captions say
    /// "striped".
    Striped,
}

impl Style {
    /// Parses `solid` or `striped`.
    pub fn parse(s: &str) -> Option<Style> {
        match s {
            "solid" => Some(Style::Solid),
            "striped" => Some(Style::Striped),
            _ => None,
        }
    }
}

/// The dark band colour of a striped shape of colour `c`.
fn stripe_shade(c: usize) -> [u8; 3] {
    if COLOURS[c].0 == "black" {
        [130, 130, 130]
    } else {
        COLOURS[c].1.map(|v| (f32::from(v) * 0.4).round() as u8)
    }
}

/// A background.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Background {
    /// One colour.
    Plain(usize),
    /// Top colour to bottom colour.
    Gradient(usize, usize),
    /// Left half, right half.
    TwoTone(usize, usize),
}

/// A kind of background, for choosing which a dataset has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackgroundKind {
    /// [`Background::Plain`].
    Plain,
    /// [`Background::Gradient`].
    Gradient,
    /// [`Background::TwoTone`].
    TwoTone,
}

impl BackgroundKind {
    /// "plain", "gradient" or "two-tone".
    pub fn parse(s: &str) -> Option<BackgroundKind> {
        match s {
            "plain" => Some(BackgroundKind::Plain),
            "gradient" => Some(BackgroundKind::Gradient),
            "two-tone" => Some(BackgroundKind::TwoTone),
            _ => None,
        }
    }
}

/// What scenes a dataset draws. The default is the full dataset: one or two shapes, every
/// kind of background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneOptions {
    /// At most this many shapes per image (1 or 2).
    pub max_shapes: usize,
    /// The kinds of background drawn (all of them when empty).
    pub backgrounds: Vec<BackgroundKind>,
    /// How every shape is filled.
    pub style: Style,
}

impl Default for SceneOptions {
    fn default() -> Self {
        SceneOptions {
            max_shapes: 2,
            backgrounds: vec![
                BackgroundKind::Plain,
                BackgroundKind::Gradient,
                BackgroundKind::TwoTone,
            ],
            style: Style::Solid,
        }
    }
}

/// A scene: shapes on a background.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scene {
    /// One or two shapes.
    pub shapes: Vec<ShapeSpec>,
    /// The background.
    pub background: Background,
}

impl ShapeSpec {
    fn phrase(&self) -> String {
        let mut words = Vec::new();
        if !self.omit_size {
            words.push(if self.large { "large" } else { "small" });
        }
        if self.style == Style::Striped {
            words.push("striped");
        }
        words.extend([COLOURS[self.colour].0, SHAPES[self.shape]]);
        if !self.omit_position {
            words.push(POSITIONS[self.position]);
        }
        with_article(&words.join(" "))
    }
}

/// "a" or "an" in front of `phrase`, by its first letter ("an orange circle").
fn with_article(phrase: &str) -> String {
    let article = if phrase.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {phrase}")
}

impl Scene {
    /// The caption: "a small red star at the top left on a blue background".
    pub fn caption(&self) -> String {
        let shapes: Vec<String> = self.shapes.iter().map(ShapeSpec::phrase).collect();
        let bg = match self.background {
            Background::Plain(c) => format!(
                "on {}",
                with_article(&format!("{} background", COLOURS[c].0))
            ),
            Background::Gradient(a, b) => format!(
                "on {}",
                with_article(&format!("{} to {} gradient", COLOURS[a].0, COLOURS[b].0))
            ),
            Background::TwoTone(a, b) => format!(
                "on a half {} half {} background",
                COLOURS[a].0, COLOURS[b].0
            ),
        };
        format!("{} {bg}", shapes.join(" and "))
    }

    /// A random scene: 1–2 shapes at distinct positions (at most `options.max_shapes`),
    /// colours distinct from the background's, on one of `options.backgrounds`. A single
    /// shape's caption leaves out its size or its position a quarter of the time each.
    pub fn random(rng: &mut ChaCha8Rng, options: &SceneOptions) -> Scene {
        // Plain backgrounds are half of all; a kind not allowed is drawn again (with every
        // kind allowed nothing is redrawn, so the full dataset is what it always was).
        let bg_kind = loop {
            let k = rng.random_range(0..4);
            let kind = match k {
                0 | 1 => BackgroundKind::Plain,
                2 => BackgroundKind::Gradient,
                _ => BackgroundKind::TwoTone,
            };
            if options.backgrounds.contains(&kind) || options.backgrounds.is_empty() {
                break k;
            }
        };
        let c1 = rng.random_range(0..COLOURS.len());
        let mut c2 = rng.random_range(0..COLOURS.len() - 1);
        if c2 >= c1 {
            c2 += 1;
        }
        let background = match bg_kind {
            0 | 1 => Background::Plain(c1),
            2 => Background::Gradient(c1, c2),
            _ => Background::TwoTone(c1, c2),
        };
        let bg_colours: Vec<usize> = match background {
            Background::Plain(a) => vec![a],
            Background::Gradient(a, b) | Background::TwoTone(a, b) => vec![a, b],
        };
        let n = if options.max_shapes >= 2 && rng.random_bool(0.3) {
            2
        } else {
            1
        };
        let mut shapes: Vec<ShapeSpec> = Vec::new();
        while shapes.len() < n {
            let colour = rng.random_range(0..COLOURS.len());
            let position = rng.random_range(0..POSITIONS.len());
            let shape = rng.random_range(0..SHAPES.len());
            if bg_colours.contains(&colour)
                || shapes.iter().any(|s| s.position == position)
                || is_held_out(shape, colour)
            {
                continue;
            }
            shapes.push(ShapeSpec {
                shape,
                colour,
                large: n == 1 && rng.random_bool(0.5),
                position,
                omit_size: false,
                omit_position: false,
                style: Style::Solid,
            });
        }
        if let [only] = shapes.as_mut_slice() {
            only.omit_size = rng.random_bool(0.25);
            only.omit_position = rng.random_bool(0.25);
        }
        Scene { shapes, background }
    }

    /// Renders the scene at `size`×`size` (4×4 supersampling for smooth edges).
    pub fn render(&self, size: usize) -> RgbImage {
        let mut pixels = Vec::with_capacity(size * size * 3);
        for y in 0..size {
            for x in 0..size {
                let mut acc = [0f32; 3];
                for sy in 0..4 {
                    for sx in 0..4 {
                        let (u, v) = (
                            (x as f32 + (sx as f32 + 0.5) / 4.0) / size as f32,
                            (y as f32 + (sy as f32 + 0.5) / 4.0) / size as f32,
                        );
                        let c = self.colour_at(u, v);
                        for k in 0..3 {
                            acc[k] += f32::from(c[k]);
                        }
                    }
                }
                pixels.extend(acc.map(|v| (v / 16.0).round() as u8));
            }
        }
        RgbImage {
            width: size,
            height: size,
            pixels,
        }
    }

    fn colour_at(&self, u: f32, v: f32) -> [u8; 3] {
        for s in self.shapes.iter().rev() {
            if inside(s, u, v) {
                return match s.style {
                    Style::Striped if (v * 8.0).floor() as i64 % 2 == 1 => stripe_shade(s.colour),
                    _ => COLOURS[s.colour].1,
                };
            }
        }
        match self.background {
            Background::Plain(c) => COLOURS[c].1,
            Background::TwoTone(a, b) => COLOURS[if u < 0.5 { a } else { b }].1,
            Background::Gradient(a, b) => {
                let (ca, cb) = (COLOURS[a].1, COLOURS[b].1);
                [0, 1, 2]
                    .map(|k| (f32::from(ca[k]) * (1.0 - v) + f32::from(cb[k]) * v).round() as u8)
            }
        }
    }
}

/// Centre of position `p` in 0–1 coordinates.
pub fn position_centre(p: usize) -> (f32, f32) {
    let (col, row) = (p % 3, p / 3);
    (0.2 + 0.3 * col as f32, 0.2 + 0.3 * row as f32)
}

/// A five-pointed star (outer radius 1, inner 0.4, a point up) as 10 vertices.
static STAR: std::sync::LazyLock<[(f32, f32); 10]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|i| {
        let r = if i % 2 == 0 { 1.0 } else { 0.4 };
        let a = -std::f32::consts::FRAC_PI_2 + i as f32 * std::f32::consts::PI / 5.0;
        (r * a.cos(), r * a.sin())
    })
});

/// Even-odd point-in-polygon test.
fn in_polygon(poly: &[(f32, f32)], x: f32, y: f32) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let ((xi, yi), (xj, yj)) = (poly[i], poly[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Whether (u, v) lies inside shape `s`.
fn inside(s: &ShapeSpec, u: f32, v: f32) -> bool {
    let (cx, cy) = position_centre(s.position);
    let r = if s.large { 0.17 } else { 0.11 };
    let (dx, dy) = ((u - cx) / r, (v - cy) / r);
    match SHAPES[s.shape] {
        "circle" => dx * dx + dy * dy <= 1.0,
        "square" => dx.abs() <= 0.85 && dy.abs() <= 0.85,
        "triangle" => dy <= 0.8 && dy >= 2.0 * dx.abs() - 1.0,
        "ring" => {
            let d = dx * dx + dy * dy;
            (0.36..=1.0).contains(&d)
        }
        _ => in_polygon(&*STAR, dx, dy),
    }
}

/// Whether a (shape, colour) pair is held out of the training set, for evaluating how a model
/// generalises to combinations it never saw: 5 of the 40 pairs (green circle, white square,
/// yellow triangle, red star, orange ring), every shape and colour still seen in other pairs.
/// The red circle of the studio's first prompt is a trained pair.
pub fn is_held_out(shape: usize, colour: usize) -> bool {
    (shape * 3 + colour) % 8 == 1
}

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

/// The `i`-th scene of a dataset with `seed` (training scenes may have two shapes; held-out
/// (shape, colour) pairs never appear).
pub fn scene(seed: u64, i: u64) -> Scene {
    scene_in_style(seed, i, Style::Solid)
}

/// [`scene`] with every shape filled in `style` (the same layout and colours for a seed).
pub fn scene_in_style(seed: u64, i: u64, style: Style) -> Scene {
    scene_with(
        seed,
        i,
        &SceneOptions {
            style,
            ..SceneOptions::default()
        },
    )
}

/// The `i`-th scene of a dataset with `seed` drawn with `options` (the default options give
/// [`scene`]; a style changes only the fill).
pub fn scene_with(seed: u64, i: u64, options: &SceneOptions) -> Scene {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(i);
    let mut scene = Scene::random(&mut rng, options);
    for s in &mut scene.shapes {
        s.style = options.style;
    }
    scene
}

/// What the detector reads from an image with one shape on a plain background.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detection {
    /// Index into [`COLOURS`].
    pub colour: usize,
    /// Index into [`SHAPES`].
    pub shape: usize,
    /// Index into [`POSITIONS`].
    pub position: usize,
}

fn nearest_colour(c: [f32; 3]) -> usize {
    let d = |k: &[u8; 3]| {
        (0..3)
            .map(|i| (c[i] - f32::from(k[i])).powi(2))
            .sum::<f32>()
    };
    (0..COLOURS.len())
        .min_by(|a, b| d(&COLOURS[*a].1).total_cmp(&d(&COLOURS[*b].1)))
        .unwrap_or(0)
}

/// The pixels of an image as f32 RGB, with the background estimate the detectors share.
struct Pixels<'a> {
    image: &'a RgbImage,
    /// The border's per-channel median: the background colour.
    bg: [f32; 3],
}

fn dist(c: [f32; 3], d: [f32; 3]) -> f32 {
    (0..3).map(|k| (c[k] - d[k]).powi(2)).sum::<f32>().sqrt()
}

impl<'a> Pixels<'a> {
    fn new(image: &'a RgbImage) -> Self {
        let mut p = Pixels {
            image,
            bg: [0.0; 3],
        };
        let (w, h) = (image.width, image.height);
        let mut border: Vec<[f32; 3]> = (0..w)
            .flat_map(|x| [p.at(x, 0), p.at(x, h - 1)])
            .chain((0..h).flat_map(|y| [p.at(0, y), p.at(w - 1, y)]))
            .collect();
        p.bg = [0, 1, 2].map(|k| {
            border.sort_by(|a, b| a[k].total_cmp(&b[k]));
            border[border.len() / 2][k]
        });
        p
    }

    fn at(&self, x: usize, y: usize) -> [f32; 3] {
        let i = (y * self.image.width + x) * 3;
        [0, 1, 2].map(|k| f32::from(self.image.pixels[i + k]))
    }

    fn coords(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        let (w, h) = (self.image.width, self.image.height);
        (0..h).flat_map(move |y| (0..w).map(move |x| (x, y)))
    }

    /// Whether a pixel stands out from the background.
    fn far(&self, c: [f32; 3]) -> bool {
        dist(c, self.bg) > 60.0
    }

    /// Position and shape of the pixels `in_shape` accepts (see [`detect`]); None when there
    /// are none.
    fn geometry(&self, in_shape: &dyn Fn([f32; 3]) -> bool) -> Option<(usize, usize)> {
        let (w, h) = (self.image.width, self.image.height);
        let (mut n, mut sx, mut sy) = (0usize, 0f32, 0f32);
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        for (x, y) in self.coords() {
            if in_shape(self.at(x, y)) {
                n += 1;
                sx += x as f32;
                sy += y as f32;
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
        if n == 0 {
            return None;
        }
        let (cx, cy) = (sx / n as f32 / w as f32, sy / n as f32 / h as f32);
        let cell = |t: f32| {
            if t < 0.35 {
                0
            } else if t < 0.65 {
                1
            } else {
                2
            }
        };
        let position = cell(cy) * 3 + cell(cx);
        let (bw, bh) = ((x1 - x0 + 1) as f32, (y1 - y0 + 1) as f32);
        let fill = n as f32 / (bw * bh);
        let centre = self.at((x0 + x1) / 2, (y0 + y1) / 2);
        // Corners of the bounding box the shape reaches: a patch an eighth of its side wide at
        // each corner, a third of it covered or more. A square reaches all four, even with its
        // sides bowed in (as a model draws it: the fill then drops to a circle's); a circle,
        // ring or star none (a circle stays ≥ 0.146 of the side away along the diagonal), a
        // triangle its two at the base.
        let k = ((bw.min(bh) / 8.0).round() as usize).max(1);
        let reaches = |cx: usize, cy: usize| {
            let covered = (cy..cy + k)
                .flat_map(|y| (cx..cx + k).map(move |x| (x, y)))
                .filter(|&(x, y)| in_shape(self.at(x, y)))
                .count();
            3 * covered >= k * k
        };
        let corners = [
            (x0, y0),
            (x1 + 1 - k, y0),
            (x0, y1 + 1 - k),
            (x1 + 1 - k, y1 + 1 - k),
        ]
        .into_iter()
        .filter(|&(cx, cy)| reaches(cx, cy))
        .count();
        let shape = if !in_shape(centre) && fill < 0.75 {
            4 // ring: a hole in the middle
        } else if fill > 0.88 || (fill > 0.66 && corners >= 3) {
            1 // square
        } else if fill > 0.66 {
            0 // circle (π/4 ≈ 0.785)
        } else {
            // Triangle (fill ≈ 0.5) or star (≈ 0.33): a triangle is widest at its base, a star
            // across its upper arms.
            let width = |y: usize| (x0..=x1).filter(|x| in_shape(self.at(*x, y))).count();
            let widest = (y0..=y1).max_by_key(|y| (width(*y), *y)).unwrap_or(y1);
            if (widest - y0) as f32 / bh > 0.6 {
                2
            } else {
                3
            }
        };
        Some((shape, position))
    }
}

/// The named colour (index into [`COLOURS`]) nearest to the background of `image`: the
/// per-channel median of its border, as [`detect`] takes it.
pub fn detect_background(image: &RgbImage) -> usize {
    nearest_colour(Pixels::new(image).bg)
}

/// Reads the colour, shape and position of the one shape in `image` (plain background): the
/// background is the border's median colour, the shape every pixel far from it; the colour is
/// the nearest named colour to the shape's mean, the position the cell of its centroid, and the
/// shape comes from its fill of the bounding box, a hole at the centre, how many of the box's
/// corners it reaches (a square with bowed-in sides fills its box no more than a circle, but
/// reaches all four), and which of its rows is widest.
/// None when nothing stands out from the background.
pub fn detect(image: &RgbImage) -> Option<Detection> {
    let p = Pixels::new(image);
    // Pass 1: the shape's colour from its most distinct pixels (anti-aliased edges are blends
    // with the background and would pull the mean towards it).
    let max = p
        .coords()
        .map(|(x, y)| dist(p.at(x, y), p.bg))
        .fold(0.0, f32::max);
    let (mut n, mut sum) = (0usize, [0f32; 3]);
    for (x, y) in p.coords() {
        let c = p.at(x, y);
        if p.far(c) && dist(c, p.bg) >= 0.8 * max {
            n += 1;
            for k in 0..3 {
                sum[k] += c[k];
            }
        }
    }
    if n < 6 {
        return None;
    }
    let colour = nearest_colour(sum.map(|v| v / n as f32));
    let ink = COLOURS[colour].1.map(f32::from);
    // Pass 2: the shape is every pixel closer to its colour than to the background (at least
    // half covered), so anti-aliased edges count as they should.
    let (shape, position) = p.geometry(&|c| dist(c, ink) < dist(c, p.bg))?;
    Some(Detection {
        colour,
        shape,
        position,
    })
}

/// What [`detect_striped`] reads: the shape, and whether its fill is striped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripedDetection {
    /// Colour, shape and position (the colour of the stripes that are a named colour).
    pub shape: Detection,
    /// Whether the fill alternates between two tones in horizontal bands.
    pub striped: bool,
}

/// Reads a shape that may be striped ([`Style::Striped`]) in `image` (plain background): the
/// shape is every pixel far from the background (its outline gives shape and position as in
/// [`detect`]); the pixels of its core split into a light and a dark tone halfway between
/// their 10th and 90th percentile luminance; the fill is striped when the tones differ
/// clearly, each covers a tenth of the core or more, and the tone that holds most of each
/// row changes from the top of the shape to its bottom (in bands of two rows or more). The
/// colour is the named colour nearest to one of the tones' medians (whichever is nearer).
/// None when nothing stands out.
pub fn detect_striped(image: &RgbImage) -> Option<StripedDetection> {
    let p = Pixels::new(image);
    let luma = |c: [f32; 3]| 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    // The shape's core: pixels far from the background whose four neighbours are too (its
    // anti-aliased rim is a blend with the background, not a tone of the fill).
    let (w, h) = (image.width, image.height);
    let far_at = |x: usize, y: usize| p.far(p.at(x, y));
    let shape: Vec<(usize, usize, [f32; 3])> = p
        .coords()
        .filter(|&(x, y)| {
            x > 0
                && y > 0
                && x + 1 < w
                && y + 1 < h
                && far_at(x, y)
                && far_at(x - 1, y)
                && far_at(x + 1, y)
                && far_at(x, y - 1)
                && far_at(x, y + 1)
        })
        .map(|(x, y)| (x, y, p.at(x, y)))
        .collect();
    if shape.len() < 6 {
        return None;
    }
    // Split the tones halfway between the 10th and 90th percentile luminance.
    let mut lumas: Vec<f32> = shape.iter().map(|(_, _, c)| luma(*c)).collect();
    lumas.sort_by(f32::total_cmp);
    let threshold = (lumas[lumas.len() / 10] + lumas[lumas.len() * 9 / 10]) / 2.0;
    // Each tone's per-channel median (anti-aliased edges would pull a mean off the colour).
    let median_of = |light: bool| {
        let mut group: Vec<[f32; 3]> = shape
            .iter()
            .filter(|(_, _, c)| (luma(*c) >= threshold) == light)
            .map(|(_, _, c)| *c)
            .collect();
        let n = group.len();
        let median = [0, 1, 2].map(|k| {
            group.sort_by(|a, b| a[k].total_cmp(&b[k]));
            group.get(n / 2).map(|c| c[k]).unwrap_or(0.0)
        });
        (n, median)
    };
    let ((n_light, light), (n_dark, dark)) = (median_of(true), median_of(false));
    let named = |c: [f32; 3]| {
        let k = nearest_colour(c);
        (k, dist(c, COLOURS[k].1.map(f32::from)))
    };
    let ((cl, dl), (cd, dd)) = (named(light), named(dark));
    let colour = if dl <= dd { cl } else { cd };
    let (shape_kind, position) = p.geometry(&|c| p.far(c))?;
    // Row by row, which tone holds most of the row.
    let mut counts = vec![(0usize, 0usize); h];
    for (_, y, c) in &shape {
        if luma(*c) >= threshold {
            counts[*y].0 += 1;
        } else {
            counts[*y].1 += 1;
        }
    }
    let rows: Vec<Option<bool>> = counts
        .into_iter()
        .map(|(l, d)| (l + d >= 2).then_some(l >= d))
        .collect();
    // Runs of rows of one tone; a single row is a blurred boundary, not a band.
    let mut runs: Vec<(bool, usize)> = Vec::new();
    for tone in rows.into_iter().flatten() {
        match runs.last_mut() {
            Some((t, n)) if *t == tone => *n += 1,
            _ => runs.push((tone, 1)),
        }
    }
    let mut bands: Vec<bool> = Vec::new();
    for (tone, _) in runs.into_iter().filter(|(_, n)| *n >= 2) {
        if bands.last() != Some(&tone) {
            bands.push(tone);
        }
    }
    let changes = bands.len().saturating_sub(1);
    let tenth = shape.len() / 10;
    let striped =
        changes >= 1 && n_light >= tenth && n_dark >= tenth && luma(light) - luma(dark) > 40.0;
    Some(StripedDetection {
        shape: Detection {
            colour,
            shape: shape_kind,
            position,
        },
        striped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_pairs_never_train_and_are_what_the_eval_uses() {
        let held: Vec<(usize, usize)> = (0..5)
            .flat_map(|s| (0..8).map(move |c| (s, c)))
            .filter(|(s, c)| is_held_out(*s, *c))
            .collect();
        assert_eq!(held.len(), 5);
        assert!(
            !is_held_out(0, 0),
            "the first-run prompt's red circle is trained"
        );
        for s in 0..SHAPES.len() {
            assert!(
                (0..COLOURS.len()).any(|c| !is_held_out(s, c)),
                "every shape still trains"
            );
        }
        for i in 0..2000 {
            assert!(
                scene(1, i)
                    .shapes
                    .iter()
                    .all(|s| !is_held_out(s.shape, s.colour))
            );
        }
        let eval = eval_scenes(Style::Solid);
        assert_eq!(eval.len(), 5 * 9);
        assert!(eval.iter().all(|e| detect(&e.render(64)).is_some_and(|d| (
            d.shape, d.colour, d.position
        ) == (
            e.shapes[0].shape,
            e.shapes[0].colour,
            e.shapes[0].position
        ))));
    }

    #[test]
    fn scenes_are_deterministic_and_captions_say_what_is_drawn() {
        assert_eq!(scene(7, 3), scene(7, 3));
        assert_ne!(scene(7, 3), scene(7, 4));
        let s = Scene {
            shapes: vec![ShapeSpec {
                shape: 3,
                colour: 0,
                large: false,
                position: 0,
                omit_size: false,
                omit_position: false,
                style: Style::Solid,
            }],
            background: Background::Plain(2),
        };
        assert_eq!(
            s.caption(),
            "a small red star at the top left on a blue background"
        );
        let mut terse = s.clone();
        terse.shapes[0].omit_size = true;
        terse.shapes[0].omit_position = true;
        assert_eq!(terse.caption(), "a red star on a blue background");
        assert_eq!(
            terse.render(64),
            s.render(64),
            "the caption does not change the image"
        );
        let mut orange = terse.clone();
        orange.shapes[0].colour = 5;
        orange.background = Background::Gradient(5, 6);
        assert_eq!(
            orange.caption(),
            "an orange star on an orange to white gradient"
        );
        // Some single-shape captions are terse, two-shape ones never.
        let scenes: Vec<Scene> = (0..400).map(|i| scene(7, i)).collect();
        let terse_count = scenes
            .iter()
            .filter(|s| s.shapes.iter().any(|x| x.omit_size || x.omit_position))
            .count();
        assert!((100..300).contains(&terse_count), "{terse_count} of 400");
        assert!(
            scenes.iter().all(|s| s.shapes.len() == 1
                || s.shapes.iter().all(|x| !x.omit_size && !x.omit_position))
        );
        let img = s.render(64);
        let at = |x: usize, y: usize| &img.pixels[(y * 64 + x) * 3..(y * 64 + x) * 3 + 3];
        assert_eq!(at(13, 13), &COLOURS[0].1[..], "the star's centre is red");
        assert_eq!(at(50, 50), &COLOURS[2].1[..], "the background is blue");
    }

    #[test]
    fn scene_options_narrow_the_dataset() {
        let simple = SceneOptions {
            max_shapes: 1,
            backgrounds: vec![BackgroundKind::Plain],
            ..SceneOptions::default()
        };
        let scenes: Vec<Scene> = (0..300).map(|i| scene_with(5, i, &simple)).collect();
        assert!(
            scenes
                .iter()
                .all(|s| s.shapes.len() == 1 && matches!(s.background, Background::Plain(_)))
        );
        let full: Vec<Scene> = (0..300).map(|i| scene(5, i)).collect();
        assert!(full.iter().any(|s| s.shapes.len() == 2));
        assert!(
            full.iter()
                .any(|s| matches!(s.background, Background::Gradient(..)))
        );
        assert!(
            full.iter()
                .any(|s| matches!(s.background, Background::TwoTone(..)))
        );
        // Every colour, shape and position still comes up, and held-out pairs never do.
        for (n, of) in [(COLOURS.len(), 0), (SHAPES.len(), 1), (POSITIONS.len(), 2)] {
            let seen: std::collections::BTreeSet<usize> = scenes
                .iter()
                .map(|s| [s.shapes[0].colour, s.shapes[0].shape, s.shapes[0].position][of])
                .collect();
            assert_eq!(seen.len(), n);
        }
        assert!(
            scenes
                .iter()
                .all(|s| !is_held_out(s.shapes[0].shape, s.shapes[0].colour))
        );
        let gradients = SceneOptions {
            backgrounds: vec![BackgroundKind::Gradient],
            ..SceneOptions::default()
        };
        assert!((0..50).all(|i| matches!(
            scene_with(5, i, &gradients).background,
            Background::Gradient(..)
        )));
    }

    #[test]
    fn the_detector_reads_back_every_single_shape_scene() {
        let mut wrong = Vec::new();
        for shape in 0..SHAPES.len() {
            for colour in 0..COLOURS.len() {
                for position in 0..9 {
                    for large in [false, true] {
                        let bg = if colour == 6 { 2 } else { 6 };
                        let s = Scene {
                            shapes: vec![ShapeSpec {
                                shape,
                                colour,
                                large,
                                position,
                                omit_size: false,
                                omit_position: false,
                                style: Style::Solid,
                            }],
                            background: Background::Plain(bg),
                        };
                        let img = s.render(64);
                        assert_eq!(detect_background(&img), bg, "{}", s.caption());
                        let got = detect(&img);
                        let want = Detection {
                            colour,
                            shape,
                            position,
                        };
                        if got.as_ref() != Some(&want) {
                            wrong.push((s.caption(), got));
                        }
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of 720 misread, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }

    /// A 64×64 white image with a blue shape of side 24 at its centre: every pixel whose
    /// offset (dx, dy) in \[-1, 1\]² from the centre `inside` accepts.
    fn drawn(inside: impl Fn(f32, f32) -> bool) -> RgbImage {
        let size = 64;
        let mut pixels = Vec::with_capacity(size * size * 3);
        for y in 0..size {
            for x in 0..size {
                let (dx, dy) = ((x as f32 - 31.5) / 12.0, (y as f32 - 31.5) / 12.0);
                let on = dx.abs() <= 1.0 && dy.abs() <= 1.0 && inside(dx, dy);
                pixels.extend(if on { COLOURS[2].1 } else { COLOURS[6].1 });
            }
        }
        RgbImage {
            width: size,
            height: size,
            pixels,
        }
    }

    #[test]
    fn a_square_with_bowed_in_sides_is_a_square_and_a_lumpy_circle_a_circle() {
        // Sides bowed in by a fifth at their middles, as the tiny model draws squares: the fill
        // of the bounding box (≈ 0.73) is a circle's, the four corners are a square's.
        let bow = |t: f32| 1.0 - 0.2 * (1.0 - t * t);
        let bowed = drawn(|dx, dy| dx.abs() <= bow(dy) && dy.abs() <= bow(dx));
        let filled = bowed.pixels.chunks(3).filter(|c| c[0] < 100).count() as f32;
        let fill = filled / (24.0 * 24.0);
        assert!((0.66..0.88).contains(&fill), "fill {fill}");
        assert_eq!(detect(&bowed).map(|d| SHAPES[d.shape]), Some("square"));
        // A circle with a bump on its rim still reaches no corner.
        let lumpy = drawn(|dx, dy| {
            let r = 1.0 + 0.08 * (5.0 * dy.atan2(dx)).sin();
            dx * dx + dy * dy <= (r * r).min(1.0)
        });
        assert_eq!(detect(&lumpy).map(|d| SHAPES[d.shape]), Some("circle"));
    }

    #[test]
    fn the_striped_detector_reads_stripes_and_never_sees_them_in_solid_fills() {
        let mut wrong = Vec::new();
        for shape in 0..SHAPES.len() {
            for colour in 0..COLOURS.len() {
                for position in 0..9 {
                    for (large, style) in [
                        (true, Style::Striped),
                        (true, Style::Solid),
                        (false, Style::Solid),
                    ] {
                        let bg = if colour == 6 { 2 } else { 6 };
                        let s = Scene {
                            shapes: vec![ShapeSpec {
                                shape,
                                colour,
                                large,
                                position,
                                omit_size: false,
                                omit_position: false,
                                style,
                            }],
                            background: Background::Plain(bg),
                        };
                        let got = detect_striped(&s.render(64));
                        let want = StripedDetection {
                            shape: Detection {
                                colour,
                                shape,
                                position,
                            },
                            striped: style == Style::Striped,
                        };
                        let ok = got.as_ref() == Some(&want);
                        if !ok {
                            wrong.push((s.caption(), got));
                        }
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of 1080 misread, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        let striped = scene_in_style(1, 3, Style::Striped);
        assert!(
            striped.caption().contains("striped"),
            "{}",
            striped.caption()
        );
        assert_eq!(striped.shapes.len(), scene(1, 3).shapes.len());
    }
}
