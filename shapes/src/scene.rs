//! The scenes of the dataset: one or two shapes in named colours and sizes at named
//! positions on a background, each with the caption that says exactly that, drawn at any
//! size. Everything derives from the seed and the image's index.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use kiln_engine::image::RgbImage;

use crate::{COLOURS, POSITIONS, SHAPES, is_held_out};

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
