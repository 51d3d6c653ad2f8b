//! The tiny-model parity on the wgpu backend (`cargo test --features wgpu`): what most users
//! run. On a machine without a GPU it runs through Mesa's software Vulkan (lavapipe, Debian
//! `mesa-vulkan-drivers`). Not part of the default CI run (Burn's wgpu build adds ~30 min).

use kiln_engine::job::CancelToken;
use kiln_engine::pipeline::StableDiffusion;

use crate::common::{assert_close, fixture, reference, tensor_on, values};
use crate::parity::{ddim_request, image_mean_abs_diff};

#[test]
fn wgpu_matches_diffusers() {
    let device = kiln_engine::device::device("wgpu").unwrap();
    let m = "tiny-b";
    let sd = StableDiffusion::load(&fixture(m), None, &device).unwrap();
    let (s_shape, sample) = reference(m, "unet.sample");
    let (c_shape, context) = reference(m, "unet.encoder_hidden_states");
    let (_, want) = reference(m, "unet.out");
    let got = sd.unet.forward(
        tensor_on::<4>(&s_shape, sample, &device),
        &[537.0, 537.0],
        &tensor_on::<3>(&c_shape, context, &device),
    );
    assert_close("wgpu UNet", &values(got), &want, 1e-4);
    let req = ddim_request(m);
    let out = sd.generate(&req, &CancelToken::new(), &mut |_| {}).unwrap();
    let (_, want_latents) = reference(m, "ddim.latents_out");
    assert_close(
        "wgpu DDIM latents",
        &out.latents.values,
        &want_latents,
        1e-4,
    );
    let (_, want_image) = reference(m, "ddim.image");
    let diff = image_mean_abs_diff(&out.images, &want_image);
    assert!(diff <= 0.3, "wgpu image mean |Δ| {diff}");
}
