"""The PyTorch/diffusers side of Kiln's benchmarks (see benches/sd.rs): the same work, same
shapes, on the same machine. Prints one JSON object per measurement.

    python engine/benches/torch_side.py [--threads N]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import stored  # noqa: E402  (the fixture models as git stores them: tests/fixtures/stored.py)


def timed(fn, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    stored.materialize()
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    impl = f"torch-{torch.__version__.split('+')[0]}-cpu-{args.threads}t"

    pipe = StableDiffusionPipeline.from_pretrained(
        os.path.join(ROOT, "tests/fixtures/tiny-a"), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False, torch_dtype=torch.float32, local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def txt2img():
        with torch.no_grad():
            pipe(["a red circle on a blue background", "a photo of a cat"],
                 negative_prompt=["blurry", "ugly, low quality"], num_inference_steps=25,
                 guidance_scale=7.5, width=64, height=64, output_type="np",
                 generator=torch.Generator().manual_seed(0))

    print(json.dumps({"bench": "tiny_a_txt2img_64x64_b2_25steps", "impl": impl, "seconds": round(timed(txt2img, 5), 4)}))

    # SD 1.5's UNet config (runwayml/stable-diffusion-v1-5), random weights.
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8).eval()
    sample = torch.randn(2, 4, 32, 32)
    context = torch.full((2, 77, 768), 0.1)
    t = torch.tensor([500.0, 500.0])

    def unet_call():
        with torch.no_grad():
            unet(sample, t, encoder_hidden_states=context)

    print(json.dumps({"bench": "unet_sd15_32x32_b2", "impl": impl, "seconds": round(timed(unet_call, 3), 4)}))

    # One LoRA training step: rank 4 on to_q/k/v/out.0 of tiny-a, batch 2, 16×16 latents,
    # AdamW, gradient clipping (Kiln: KILN_BENCH=train).
    import torch.nn.functional as F
    from peft import LoraConfig
    tiny = UNet2DConditionModel.from_pretrained(os.path.join(ROOT, "tests/fixtures/tiny-a"), subfolder="unet", torch_dtype=torch.float32)
    tiny.requires_grad_(False)
    tiny.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in tiny.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    lat, noise = torch.randn((2, 4, 16, 16), generator=g), torch.randn((2, 4, 16, 16), generator=g)
    ctx = torch.full((2, 77, tiny.config.cross_attention_dim), 0.1)
    ts = torch.tensor([100, 700])
    ac = pipe.scheduler.alphas_cumprod

    def train_step():
        a = ac[ts].view(-1, 1, 1, 1)
        loss = F.mse_loss(tiny(a.sqrt() * lat + (1 - a).sqrt() * noise, ts, ctx).sample, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    for _ in range(2):
        train_step()
    print(json.dumps({"bench": "lora_train_step_tiny_a_b2_16x16", "impl": impl, "seconds": round(timed(train_step, 30), 4)}))

    base_steps(impl, ac)
    kiln_tiny(impl)


def base_steps(impl, alphas_cumprod):
    """One `kiln train base` step of each phase on the kiln-tiny architecture, random weights
    (Kiln: KILN_BENCH=base): UNet + text encoder, batch 32, 16x16 latents, min-SNR 5, AdamW,
    clipping, EMA; the VAE, batch 16, 64x64, L1 + KL + edge term."""
    import torch.nn.functional as F
    from diffusers import AutoencoderKL
    from diffusers.training_utils import EMAModel
    from transformers import CLIPTextConfig, CLIPTextModel
    arch = json.load(open(os.path.join(ROOT, "assets/models/kiln-tiny.arch.json")))
    u = dict(arch["unet"], mid_block_type="UNetMidBlock2DCrossAttn")
    unet = UNet2DConditionModel(**u)
    te = CLIPTextModel(CLIPTextConfig(**arch["text_encoder"]))
    n = len(arch["vae"]["block_out_channels"])
    vae = AutoencoderKL(**dict(arch["vae"], down_block_types=["DownEncoderBlock2D"] * n,
                               up_block_types=["UpDecoderBlock2D"] * n))
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    ema = EMAModel(params, decay=0.999)
    g = torch.Generator().manual_seed(0)
    # kiln-tiny's architecture file, as benches/sd.rs reads it: 64x64 images, latents of the
    # VAE's channels at its downsampling factor, captions of the length it gives (77 if none).
    channels, side = arch["vae"]["latent_channels"], 64 // 2 ** (n - 1)
    length = arch.get("tokenizer_max_length", 77)
    lat = torch.randn((32, channels, side, side), generator=g)
    noise = torch.randn((32, channels, side, side), generator=g)
    ids = torch.arange(32 * length).remainder(500).view(32, length)
    ts = torch.arange(32) * 31
    a = alphas_cumprod[ts].view(-1, 1, 1, 1)
    snr = a.view(-1) / (1 - a.view(-1))
    w = torch.minimum(snr, torch.full_like(snr, 5.0)) / snr

    def diffusion_step():
        ctx = te(ids).last_hidden_state
        pred = unet(a.sqrt() * lat + (1 - a).sqrt() * noise, ts, ctx).sample
        loss = (F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3)) * w).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.step(params)

    print(json.dumps({"bench": "base_diffusion_step_kiln_tiny_arch_b32", "impl": impl, "seconds": round(timed(diffusion_step, 3), 4)}))
    vparams = list(vae.parameters())
    vopt = torch.optim.AdamW(vparams, lr=1e-4)
    vema = EMAModel(vparams, decay=0.999)
    x = torch.randn((16, 3, 64, 64), generator=g).clamp(-1, 1)
    eps = torch.randn((16, channels, side, side), generator=g)

    def vae_step():
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.mean + post.std * eps).sample
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar)
        dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
        dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
        edge = (dx(rec) - dx(x)).abs().mean() + (dy(rec) - dy(x)).abs().mean()
        loss = (rec - x).abs().mean() + 1e-6 * kl.mean() + edge
        vopt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vparams, 1.0)
        vopt.step()
        vema.step(vparams)

    print(json.dumps({"bench": "base_vae_step_kiln_tiny_arch_b16_64x64", "impl": impl, "seconds": round(timed(vae_step, 3), 4)}))


def kiln_tiny(impl):
    """The shipped model: one 64x64 image, 20 DPM++ 2M Karras steps with CFG (Kiln: KILN_BENCH=kiln-tiny)."""
    from diffusers import DPMSolverMultistepScheduler
    root = os.path.join(ROOT, "assets/models/kiln-tiny")
    if not os.path.isfile(os.path.join(root, "model_index.json")):
        return
    pipe = StableDiffusionPipeline.from_pretrained(root, safety_checker=None, torch_dtype=torch.float32, local_files_only=True)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)

    def txt2img():
        with torch.no_grad():
            pipe(["a large red circle in the center on a blue background"], negative_prompt=[""], num_inference_steps=20,
                 guidance_scale=7.5, width=64, height=64, output_type="np", generator=torch.Generator().manual_seed(0))

    print(json.dumps({"bench": "kiln_tiny_txt2img_64x64_b1_20steps", "impl": impl, "seconds": round(timed(txt2img, 5), 4)}))


if __name__ == "__main__":
    main()
