//! Reading a picture back: the background's colour, the shape's colour, kind and position,
//! and whether it is striped — from pixels alone, so any model's output can be scored.

use serde::{Deserialize, Serialize};

use kiln_engine::image::RgbImage;

use crate::COLOURS;

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
