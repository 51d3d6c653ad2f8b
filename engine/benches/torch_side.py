"""The PyTorch/diffusers side of Kiln's benchmarks (see benches/sd.rs): the same work, same
shapes, on the same machine. Prints one JSON object per measurement.

    python engine/benches/torch_side.py [--threads N]
"""
import argparse
import json
import os
import statistics
import time

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def timed(fn, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
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


if __name__ == "__main__":
    main()
