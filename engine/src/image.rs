//! Images: decoder output → RGB8, and PNG writing.

use std::path::Path;

use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::weights::safetensors::write_atomic;

/// An 8-bit RGB image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height × width × 3` bytes, row-major.
    pub pixels: Vec<u8>,
}

/// Decoder output `[B, 3, H, W]` in about \[-1, 1\] → RGB8 images, exactly as diffusers'
/// `VaeImageProcessor`: `(x / 2 + 0.5).clamp(0, 1)`, then `round(x × 255)`.
/// NaN or infinite values are an error, never a black image.
pub fn to_rgb8(decoded: Tensor<4>) -> Result<Vec<RgbImage>> {
    let [b, c, h, w] = decoded.dims();
    let values = decoded
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::InvalidRequest(format!("reading image: {e:?}")))?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("the VAE decoder".into()));
    }
    Ok((0..b)
        .map(|i| {
            let mut pixels = vec![0u8; h * w * 3];
            for ch in 0..c.min(3) {
                for y in 0..h {
                    for x in 0..w {
                        let v = values[((i * c + ch) * h + y) * w + x];
                        let v = (v / 2.0 + 0.5).clamp(0.0, 1.0);
                        pixels[(y * w + x) * 3 + ch] = (v * 255.0).round() as u8;
                    }
                }
            }
            RgbImage {
                width: w,
                height: h,
                pixels,
            }
        })
        .collect())
}

/// Writes `image` as an 8-bit RGB PNG with optional `tEXt` chunks, atomically.
pub fn write_png(path: &Path, image: &RgbImage, text: &[(&str, &str)]) -> Result<()> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, image.width as u32, image.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        for (k, v) in text {
            enc.add_itxt_chunk((*k).to_owned(), (*v).to_owned())
                .map_err(|e| Error::format(path, e.to_string()))?;
        }
        let mut writer = enc
            .write_header()
            .map_err(|e| Error::format(path, e.to_string()))?;
        writer
            .write_image_data(&image.pixels)
            .map_err(|e| Error::format(path, e.to_string()))?;
    }
    write_atomic(path, &bytes)
}

/// Reads an 8-bit RGB or RGBA PNG (alpha dropped).
pub fn read_png(path: &Path) -> Result<RgbImage> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| Error::format(path, e.to_string()))?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| Error::format(path, e.to_string()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let mut pixels = Vec::with_capacity(w * h * 3);
    for px in buf[..w * h * channels].chunks_exact(channels) {
        match channels {
            1 | 2 => pixels.extend([px[0]; 3]),
            _ => pixels.extend(&px[..3]),
        }
    }
    Ok(RgbImage {
        width: w,
        height: h,
        pixels,
    })
}

/// The text chunks (`tEXt`, `zTXt`, `iTXt`) of a PNG, as (keyword, text) pairs.
pub fn read_png_text(path: &Path) -> Result<Vec<(String, String)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let reader = decoder
        .read_info()
        .map_err(|e| Error::format(path, e.to_string()))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    out.extend(
        info.compressed_latin1_text
            .iter()
            .filter_map(|t| Some((t.keyword.clone(), t.get_text().ok()?))),
    );
    out.extend(
        info.utf8_text
            .iter()
            .filter_map(|t| Some((t.keyword.clone(), t.get_text().ok()?))),
    );
    Ok(out)
}
