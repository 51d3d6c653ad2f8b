//! Images over HTTP: base64 in and out, img2img sources made ready for the resolver (resized
//! as `resize_mode` says and kept, by hash, in the outputs folder so the recipe names a real
//! file), and `save_images` with A1111's file names (`00012-SEED.png`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kiln_engine::image::RgbImage;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Bytes from base64 (standard alphabet, padding optional, whitespace and a `data:…;base64,`
/// prefix allowed); None when it is not base64.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let body = match text.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => text,
    };
    let clean: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let padded = match clean.len() % 4 {
        0 => clean,
        n => format!("{clean}{}", "=".repeat(4 - n)),
    };
    STANDARD.decode(padded).ok()
}

/// Base64 of `bytes` (standard alphabet, padded), as A1111 sends images.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// img2img's `resize_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// 0 (and 3): stretched to the size.
    JustResize,
    /// 1: scaled to cover, centre cropped (Kiln's own policy).
    CropAndResize,
    /// 2: scaled to fit inside, the bands filled with the stretched edges.
    ResizeAndFill,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes an img2img source, applies `resize_mode` for `size` (`None`: the image sets the
/// size, as the resolver does), and keeps it as `DIR/init-images/<sha256>.png` (or the
/// original bytes under their own extension when nothing was resized). Returns the file.
pub fn prepare_init_image(
    bytes: &[u8],
    mode: ResizeMode,
    size: Option<(usize, usize)>,
    dir: &Path,
) -> Result<PathBuf, ApiError> {
    let not_image = |e: kiln_engine::error::Error| {
        ApiError::field("init_images", format!("not an image: {e}"), "image_decode")
    };
    let image =
        kiln_engine::image::decode_image(bytes, Path::new("init_images[0]")).map_err(not_image)?;
    let resized = match (mode, size) {
        (ResizeMode::JustResize, Some((w, h))) if (image.width, image.height) != (w, h) => {
            Some(stretch(&image, w, h))
        }
        (ResizeMode::ResizeAndFill, Some((w, h))) if (image.width, image.height) != (w, h) => {
            Some(resize_and_fill(&image, w, h))
        }
        _ => None,
    };
    let (file_bytes, ext) = match &resized {
        Some(img) => (
            kiln_engine::image::encode_png(img, &[]).map_err(|e| ApiError::Engine {
                kind: Some(e.kind()),
                message: e.to_string(),
            })?,
            "png",
        ),
        None => (
            bytes.to_vec(),
            match image::guess_format(bytes) {
                Ok(image::ImageFormat::Jpeg) => "jpg",
                Ok(image::ImageFormat::WebP) => "webp",
                _ => "png",
            },
        ),
    };
    let folder = dir.join("init-images");
    let io = |e: std::io::Error| ApiError::Engine {
        kind: Some(kiln_engine::error::ErrorKind::Io),
        message: format!("{}: {e}", folder.display()),
    };
    std::fs::create_dir_all(&folder).map_err(io)?;
    let path = folder.join(format!("{}.{ext}", hex(&Sha256::digest(&file_bytes))));
    if !path.is_file() {
        kiln_engine::fs::write_atomic(&path, &file_bytes).map_err(|e| ApiError::Engine {
            kind: Some(e.kind()),
            message: e.to_string(),
        })?;
    }
    Ok(path)
}

fn to_image(img: &RgbImage) -> image::RgbImage {
    image::RgbImage::from_raw(img.width as u32, img.height as u32, img.pixels.clone())
        .unwrap_or_else(|| image::RgbImage::new(1, 1))
}

fn from_image(img: image::RgbImage) -> RgbImage {
    RgbImage {
        width: img.width() as usize,
        height: img.height() as usize,
        pixels: img.into_raw(),
    }
}

/// Resize mode 0: stretched to exactly `w × h` (Lanczos-3).
fn stretch(img: &RgbImage, w: usize, h: usize) -> RgbImage {
    from_image(image::imageops::resize(
        &to_image(img),
        w as u32,
        h as u32,
        image::imageops::FilterType::Lanczos3,
    ))
}

/// Resize mode 2: scaled to fit inside `w × h`, centred; the bands on either side repeat the
/// image's edge rows or columns (A1111 fills them with the stretched edges).
fn resize_and_fill(img: &RgbImage, w: usize, h: usize) -> RgbImage {
    let scale = (w as f64 / img.width as f64).min(h as f64 / img.height as f64);
    let sw = ((img.width as f64 * scale).round() as usize).clamp(1, w);
    let sh = ((img.height as f64 * scale).round() as usize).clamp(1, h);
    let inner = stretch(img, sw, sh);
    let (x0, y0) = ((w - sw) / 2, (h - sh) / 2);
    let mut pixels = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let sy = y.saturating_sub(y0).min(sh - 1);
        for x in 0..w {
            let sx = x.saturating_sub(x0).min(sw - 1);
            let i = (sy * sw + sx) * 3;
            pixels.extend_from_slice(&inner.pixels[i..i + 3]);
        }
    }
    RgbImage {
        width: w,
        height: h,
        pixels,
    }
}

/// The next free A1111-style file name in `dir` for `seed`: `NNNNN-SEED.png`, NNNNN one past
/// the highest number there.
pub fn next_output_path(dir: &Path, seed: u64) -> PathBuf {
    let next = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.split('-').next()?.parse::<u64>().ok()
        })
        .max()
        .map_or(0, |n| n + 1);
    dir.join(format!("{next:05}-{seed}.png"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_with_prefix_whitespace_or_no_padding_decodes() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(
            decode_base64("data:image/png;base64,aGVs\nbG8=").as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(decode_base64("not base64!"), None);
        assert_eq!(encode_base64(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn resize_modes_stretch_or_fill_and_the_file_is_kept_by_hash() {
        let img = RgbImage {
            width: 4,
            height: 2,
            pixels: (0..24).map(|i| (i * 10) as u8).collect(),
        };
        let png = kiln_engine::image::encode_png(&img, &[]).expect("png");
        let dir = tempfile::tempdir().expect("dir");
        let kept = prepare_init_image(&png, ResizeMode::CropAndResize, Some((8, 8)), dir.path())
            .expect("kept");
        assert_eq!(
            std::fs::read(&kept).expect("read"),
            png,
            "crop mode keeps the file as sent"
        );
        let again =
            prepare_init_image(&png, ResizeMode::CropAndResize, None, dir.path()).expect("again");
        assert_eq!(kept, again, "one file per content");
        let stretched = prepare_init_image(&png, ResizeMode::JustResize, Some((8, 8)), dir.path())
            .expect("stretched");
        let s = kiln_engine::image::read_image(&stretched).expect("decode");
        assert_eq!((s.width, s.height), (8, 8));
        let filled = resize_and_fill(&img, 8, 8);
        // 4×2 fits as 8×4 in the middle rows 2..6; the bands repeat the first and last rows.
        assert_eq!(filled.pixels[..24], filled.pixels[2 * 24..3 * 24]);
        assert_eq!(filled.pixels[7 * 24..], filled.pixels[5 * 24..6 * 24]);
        let junk = prepare_init_image(b"GIF89a....", ResizeMode::JustResize, None, dir.path());
        assert!(matches!(junk, Err(ApiError::Invalid(_))));
    }

    #[test]
    fn output_names_count_up_from_what_is_there() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(
            next_output_path(dir.path(), 7),
            dir.path().join("00000-7.png")
        );
        std::fs::write(dir.path().join("00041-3.png"), b"").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"").expect("write");
        assert_eq!(
            next_output_path(dir.path(), 9),
            dir.path().join("00042-9.png")
        );
    }
}
