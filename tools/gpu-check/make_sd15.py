"""A Stable Diffusion 1.5 diffusers folder with random full-size weights, stored in fp16.

SD 1.5's architecture exactly (runwayml/stable-diffusion-v1-5's configs: UNet 860 M, VAE 84 M,
CLIP ViT-L/14 text encoder 123 M parameters), PyTorch's default initialisation from a fixed
seed, the CLIP tokenizer Kiln ships, DDIM's scheduler. The pictures are noise; the work —
shapes, sizes, memory, speed — is SD 1.5's. About 2 GB; made where it is used, never
committed.

    python tools/gpu-check/make_sd15.py OUT_DIR [--seed 0]
"""
import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))


def make(out, seed=0):
    """Writes the folder to `out` (skipped when a complete one is there already)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    done = os.path.join(out, ".complete")
    if os.path.exists(done):
        return out
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
        projection_dim=768))
    os.makedirs(out, exist_ok=True)
    unet.half().save_pretrained(os.path.join(out, "unet"), safe_serialization=True)
    vae.half().save_pretrained(os.path.join(out, "vae"), safe_serialization=True)
    text_encoder.half().save_pretrained(os.path.join(out, "text_encoder"), safe_serialization=True)
    DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1).save_pretrained(os.path.join(out, "scheduler"))
    tok = os.path.join(out, "tokenizer")
    os.makedirs(tok, exist_ok=True)
    shutil.copy(os.path.join(REPO, "assets", "models", "kiln-tiny", "tokenizer", "tokenizer.json"), tok)
    with open(os.path.join(REPO, "tests", "fixtures", "tiny-a", "tokenizer", "tokenizer_config.json")) as f:
        config = json.load(f)
    with open(os.path.join(tok, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(REPO, "tests", "fixtures", "tiny-a", "model_index.json")) as f:
        index = json.load(f)
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    open(done, "w").close()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(make(a.out, a.seed), file=sys.stderr)
