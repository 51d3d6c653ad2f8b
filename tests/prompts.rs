//! AUTOMATIC1111 prompt syntax in generation: emphasis, chunking of long prompts.

use kiln_engine::job::CancelToken;

use crate::common::{Layout, model, relative_max_error, values};
use crate::parity::ddim_request;

#[test]
fn emphasis_scales_token_embeddings_and_keeps_the_mean() {
    let sd = model("tiny-a", Layout::Diffusers);
    let plain = values(sd.encode_prompts(&["a photo of a cat".into()], 1).unwrap());
    let same = values(
        sd.encode_prompts(&["a photo of a (cat:1.0)".into()], 1)
            .unwrap(),
    );
    assert_eq!(plain, same, "weight 1.0 changes nothing");
    let weighted = values(
        sd.encode_prompts(&["a photo of a (cat:1.5)".into()], 1)
            .unwrap(),
    );
    let d = plain.len() / 77;
    let mean = |v: &[f32]| v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
    assert!(
        (mean(&weighted) - mean(&plain)).abs() < 1e-5 * mean(&plain).abs().max(1e-3),
        "the chunk mean is restored"
    );
    // Token 5 ("cat") is scaled by 1.5 relative to the others (both by the same restoring factor).
    let ratio = |i: usize, j: usize| weighted[i * d + j] / plain[i * d + j];
    let other = ratio(2, 0);
    assert!(
        (ratio(5, 0) / other - 1.5).abs() < 1e-4,
        "{} vs {}",
        ratio(5, 0),
        other
    );
    assert!((ratio(3, 7) - other).abs() < 1e-5);
}

#[test]
fn long_prompts_are_chunked_and_negatives_padded() {
    let sd = model("tiny-a", Layout::Diffusers);
    let long = "a red circle on a blue background, ".repeat(12);
    let z = sd
        .encode_prompts(&[long.clone(), "blurry".into()], 1)
        .unwrap();
    assert_eq!(
        z.dims(),
        [2, 154, 32],
        "two 77-token chunks each; the short prompt is padded with an empty chunk"
    );
    // The padding chunk is the encoding of an empty prompt (as A1111 pads), and the long
    // prompt's second chunk is its own text, not padding.
    let z = values(z);
    let chunk = 77 * 32;
    let empty = values(sd.encode_prompts(&["".into()], 1).unwrap());
    assert_eq!(&z[3 * chunk..4 * chunk], &empty[..]);
    assert!(relative_max_error(&z[chunk..2 * chunk], &empty) > 1e-2);
    let blurry = values(sd.encode_prompts(&["blurry".into()], 1).unwrap());
    assert_eq!(
        &z[2 * chunk..3 * chunk],
        &blurry[..],
        "chunks are encoded independently"
    );
    let mut req = ddim_request("tiny-a");
    req.prompts = vec![long, "a photo of a cat".into()];
    req.steps = 2;
    let out = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
    assert!(out.latents.values.iter().all(|v| v.is_finite()));
    // Emphasis changes the image.
    let mut plain = ddim_request("tiny-a");
    plain.steps = 2;
    let mut emph = plain.clone();
    emph.prompts[0] = "a (red:1.6) circle on a [blue] background".into();
    let (a, b) = (
        sd.generate(&plain, &CancelToken::new(), &mut |_| {})
            .unwrap(),
        sd.generate(&emph, &CancelToken::new(), &mut |_| {})
            .unwrap(),
    );
    let half = a.latents.values.len() / 2;
    let moved = relative_max_error(&b.latents.values[..half], &a.latents.values[..half]);
    assert!(
        moved > 1e-3,
        "emphasis moves the first image's latents by {moved:.2e} only"
    );
    assert_eq!(
        a.latents.values[a.latents.values.len() / 2..],
        b.latents.values[b.latents.values.len() / 2..],
        "the other prompt's image is untouched"
    );
}
