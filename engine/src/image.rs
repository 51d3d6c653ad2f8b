//! Images: decoder output → RGB8 and back, reading PNG/JPEG/WebP, fitting an image to a
//! size (img2img's resize policy), and PNG writing with text chunks.

use std::path::Path;

use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::fs::write_atomic;

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

/// RGB8 images (all the same size) → `[B, 3, H, W]` in \[-1, 1\], as diffusers'
/// `VaeImageProcessor.preprocess` (`x / 255 · 2 − 1`).
pub fn from_rgb8(images: &[&RgbImage], device: &burn::tensor::Device) -> Tensor<4> {
    let (h, w) = images
        .first()
        .map(|i| (i.height, i.width))
        .unwrap_or((0, 0));
    let mut values = Vec::with_capacity(images.len() * 3 * h * w);
    for image in images {
        for ch in 0..3 {
            values.extend(
                image
                    .pixels
                    .iter()
                    .skip(ch)
                    .step_by(3)
                    .map(|p| f32::from(*p) / 255.0 * 2.0 - 1.0),
            );
        }
    }
    Tensor::from_data(
        burn::tensor::TensorData::new(values, [images.len(), 3, h, w]),
        device,
    )
}

/// Reads a PNG, JPEG or WebP file as RGB8 (alpha dropped, 16-bit reduced to 8).
pub fn read_image(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, path)
}

/// `image` resized to exactly `width × height` keeping its aspect ratio: scaled (Lanczos-3) so
/// it covers the target, then the overflow is cropped equally from both sides (A1111's
/// "crop and resize"). An image already of that size is returned unchanged.
pub fn fit(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    if image.width == width && image.height == height {
        return image.clone();
    }
    let Some(src) = image::RgbImage::from_raw(
        image.width as u32,
        image.height as u32,
        image.pixels.clone(),
    ) else {
        return image.clone();
    };
    let scale = (width as f64 / image.width as f64).max(height as f64 / image.height as f64);
    let (sw, sh) = (
        ((image.width as f64 * scale).round() as u32).max(width as u32),
        ((image.height as f64 * scale).round() as u32).max(height as u32),
    );
    let scaled = image::imageops::resize(&src, sw, sh, image::imageops::FilterType::Lanczos3);
    let (x0, y0) = ((sw - width as u32) / 2, (sh - height as u32) / 2);
    let cropped =
        image::imageops::crop_imm(&scaled, x0, y0, width as u32, height as u32).to_image();
    RgbImage {
        width,
        height,
        pixels: cropped.into_raw(),
    }
}

/// `image` as the bytes of an 8-bit RGB PNG with text chunks: `tEXt` when the text is
/// Latin-1, `iTXt` (UTF-8) otherwise, as A1111 does. (What [`write_png`] writes and the HTTP
/// API sends.)
pub fn encode_png(image: &RgbImage, text: &[(&str, &str)]) -> Result<Vec<u8>> {
    let failed = |e: png::EncodingError| Error::format("(PNG being encoded)", e.to_string());
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, image.width as u32, image.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        for (k, v) in text {
            let added = if v.chars().all(|c| u32::from(c) < 256) {
                enc.add_text_chunk((*k).to_owned(), (*v).to_owned())
            } else {
                enc.add_itxt_chunk((*k).to_owned(), (*v).to_owned())
            };
            added.map_err(failed)?;
        }
        let mut writer = enc.write_header().map_err(failed)?;
        writer.write_image_data(&image.pixels).map_err(failed)?;
    }
    Ok(bytes)
}

/// Writes `image` as an 8-bit RGB PNG with text chunks ([`encode_png`]), atomically.
pub fn write_png(path: &Path, image: &RgbImage, text: &[(&str, &str)]) -> Result<()> {
    let bytes = encode_png(image, text).map_err(|e| match e {
        Error::Format { reason, .. } => Error::format(path, reason),
        other => other,
    })?;
    write_atomic(path, &bytes)
}

/// Decodes PNG, JPEG or WebP bytes as RGB8 (alpha dropped, 16-bit reduced to 8); `name` says
/// where they came from in the error.
pub fn decode_image(bytes: &[u8], name: &Path) -> Result<RgbImage> {
    let decoded = image::load_from_memory(bytes)
        .map_err(|e| Error::format(name, format!("not a readable PNG, JPEG or WebP image: {e}")))?;
    let rgb = decoded.into_rgb8();
    Ok(RgbImage {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        pixels: rgb.into_raw(),
    })
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
    text_chunks(std::io::BufReader::new(file), path)
}

/// [`read_png_text`] on a PNG's bytes; `name` says where they came from in the error.
pub fn png_text(bytes: &[u8], name: &Path) -> Result<Vec<(String, String)>> {
    text_chunks(std::io::Cursor::new(bytes), name)
}

fn text_chunks(
    source: impl std::io::BufRead + std::io::Seek,
    path: &Path,
) -> Result<Vec<(String, String)>> {
    let decoder = png::Decoder::new(source);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: usize, h: usize) -> RgbImage {
        let pixels = (0..h)
            .flat_map(|y| {
                (0..w).flat_map(move |x| {
                    [
                        (x * 255 / w.max(2).saturating_sub(1).max(1)) as u8,
                        (y * 255 / h.max(2).saturating_sub(1).max(1)) as u8,
                        128,
                    ]
                })
            })
            .collect();
        RgbImage {
            width: w,
            height: h,
            pixels,
        }
    }

    #[test]
    fn non_finite_decoder_output_is_an_error() {
        let device = burn::tensor::Device::flex();
        let t: Tensor<4> = Tensor::from_data(
            burn::tensor::TensorData::new(vec![0.0, f32::NAN, 0.5, -0.5], [1, 1, 2, 2]),
            &device,
        );
        let err = to_rgb8(t).expect_err("NaN");
        assert!(
            err.to_string()
                .contains("the VAE decoder produced NaN or infinite values"),
            "{err}"
        );
    }

    #[test]
    fn fit_covers_then_crops_the_centre() {
        // 40×20 → 16×16: scaled to 32×16, 8 columns cropped from each side.
        let img = gradient(40, 20);
        let out = fit(&img, 16, 16);
        assert_eq!((out.width, out.height), (16, 16));
        let red = |im: &RgbImage, x: usize, y: usize| im.pixels[(y * im.width + x) * 3];
        // The centre column keeps the centre's red; the left edge is no longer the source's 0.
        assert!((i32::from(red(&out, 8, 8)) - i32::from(red(&img, 20, 10))).abs() <= 8);
        assert!(
            red(&out, 0, 8) > 40,
            "left columns were cropped, not squeezed"
        );
        // The vertical gradient spans the whole height (nothing cropped vertically).
        assert!(out.pixels[1] < 20 && out.pixels[(15 * 16) * 3 + 1] > 235);
        assert_eq!(fit(&img, 40, 20), img, "same size → unchanged");
    }

    #[test]
    fn text_chunks_round_trip_in_latin1_and_utf8() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.png");
        let img = gradient(4, 4);
        write_png(
            &path,
            &img,
            &[("parameters", "café, (x:1.2)"), ("kiln", "{\"p\": \"猫\"}")],
        )
        .expect("write");
        let text = read_png_text(&path).expect("read");
        assert!(text.contains(&("parameters".into(), "café, (x:1.2)".into())));
        assert!(text.contains(&("kiln".into(), "{\"p\": \"猫\"}".into())));
        assert_eq!(read_image(&path).expect("decode"), img);
        let bytes = std::fs::read(&path).expect("bytes");
        assert_eq!(png_text(&bytes, &path).expect("from bytes"), text);
        assert_eq!(
            encode_png(
                &img,
                &[("parameters", "café, (x:1.2)"), ("kiln", "{\"p\": \"猫\"}")]
            )
            .expect("encode"),
            bytes
        );
        assert!(bytes.windows(4).any(|w| w == b"tEXt") && bytes.windows(4).any(|w| w == b"iTXt"));
    }
}
