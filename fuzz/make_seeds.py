#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/seeds/ (standard library only; run from anywhere).

The test fixtures seed the file readers (fuzz/run.sh copies them); these cover what no
fixture has: PNGs carrying A1111, ComfyUI and InvokeAI metadata in tEXt, zTXt and iTXt
chunks, prompts, captions, configs, API bodies and hostile sizes. kiln-recipe.png is an
image `kiln generate` wrote (a real Kiln recipe), kept as it is.
"""
import base64
import json
import pathlib
import struct
import zlib

HERE = pathlib.Path(__file__).resolve().parent / "seeds"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(texts, width=4, height=4) -> bytes:
    raw = b"".join(b"\x00" + bytes([90, 120, 200] * width) for _ in range(height))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    for kind, key, value in texts:
        if kind == "tEXt":
            out += chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace"))
        elif kind == "zTXt":
            out += chunk(b"zTXt", key.encode("latin-1") + b"\x00\x00" + zlib.compress(value.encode("latin-1", "replace")))
        else:
            out += chunk(b"iTXt", key.encode("latin-1") + b"\x00\x01\x00\x00\x00" + zlib.compress(value.encode()))
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


A1111 = (
    "a watercolor (fox:1.2), [forest], <lora:ink:0.7>\n"
    "Negative prompt: text, watermark\n"
    'Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x640, '
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.6, Clip skip: 2, '
    'Lora hashes: "ink: 0123456789ab", TI hashes: "cat: 89abcdef0123", Version: v1.10.1'
)
COMFY = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8.0,
          "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0, "model": ["10", 0],
          "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15/v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 640, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a watercolor fox", "clip": ["10", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["10", 1]}},
    "10": {"class_type": "LoraLoader", "inputs": {"lora_name": "styles/ink.safetensors",
           "strength_model": 0.7, "strength_clip": 1.0, "model": ["4", 0], "clip": ["4", 1]}},
}
INVOKE = {
    "positive_prompt": "a watercolor fox", "negative_prompt": "text", "seed": 42, "steps": 30,
    "cfg_scale": 7.5, "width": 512, "height": 512, "scheduler": "dpmpp_2m_k",
    "model": {"name": "stable-diffusion-v1-5", "base": "sd-1"},
    "loras": [{"model": {"name": "ink"}, "weight": 0.75}], "generation_mode": "txt2img",
}


def write(target: str, name: str, data) -> None:
    d = HERE / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def main() -> None:
    write("png_metadata", "a1111.png", png([("tEXt", "parameters", A1111)]))
    write("png_metadata", "a1111-itxt.png", png([("iTXt", "parameters", A1111 + " ünïcode")]))
    write("png_metadata", "comfyui.png", png([("tEXt", "prompt", json.dumps(COMFY)), ("zTXt", "workflow", "{}")]))
    write("png_metadata", "invokeai.png", png([("tEXt", "invokeai_metadata", json.dumps(INVOKE))]))
    write("png_metadata", "a1111.txt", A1111)
    write("png_metadata", "comfyui.json", json.dumps(COMFY))
    write("png_metadata", "invokeai.json", json.dumps(INVOKE))

    for i, p in enumerate([
        "a (red:1.2) circle, [blue] square BREAK on a ((green)) field",
        "<lora:ink:0.7> <lora:style:-1> portrait \\(detail\\), (((deep))) [[[shallow]]] (a:b:1.1)",
        "masterpiece, " * 40 + "end",
        "(unclosed [brackets (and:2.5 BREAK",
        "emoji 🦊 and 日本語 and \\ trailing",
    ]):
        write("prompt", f"{i}.txt", p)

    for i, c in enumerate([
        "sks person, smiling, outdoors",
        "sks person\nsks person, hat\n",
        "  padded caption with a very long tail " + "word " * 100,
        "",
    ]):
        write("caption", f"{i}.txt", c)

    yaml = (
        "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n"
        "    linear_start: 0.00085\n    linear_end: 0.0120\n    timesteps: 1000\n"
        "    scale_factor: 0.18215\n    parameterization: v\n    unet_config:\n      params:\n"
        "        num_heads: 8\n        num_head_channels: -1\n"
    )
    write("model_config", "00-v1-inference.yaml", b"\x00" + yaml.encode())
    write("model_config", "00-anchors.yaml", b"\x00" + b"a: &x [*x, *x]\nmodel: {params: {timesteps: 1e400}}\n")

    txt2img = {"prompt": "a fox", "negative_prompt": "text", "steps": 4, "cfg_scale": 7, "width": 64,
               "height": 64, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "seed": -1,
               "batch_size": 2, "n_iter": 1, "enable_hr": False, "restore_faces": False,
               "override_settings": {"CLIP_stop_at_last_layers": 2}, "alwayson_scripts": {},
               "styles": [], "send_images": True, "save_images": False}
    write("api_request", "txt2img.json", b"\x00" + json.dumps(txt2img).encode())
    img2img = dict(txt2img, init_images=["data:image/png;base64," + base64.b64encode(png([])).decode()],
                   denoising_strength=0.6, resize_mode=1)
    write("api_request", "img2img.json", b"\x01" + json.dumps(img2img).encode())
    write("api_request", "options.json", b"\x02" + json.dumps(
        {"sd_model_checkpoint": "kiln-tiny", "CLIP_stop_at_last_layers": 2, "samples_save": True,
         "outdir_txt2img_samples": "txt"}).encode())
    write("api_request", "huge-numbers.json", b"\x00" + b'{"steps": 1e999, "width": -9223372036854775809, "seed": 18446744073709551616}')

    # Hostile sizes: a header announcing 2^60 bytes; a shape whose product overflows.
    write("safetensors", "header-2p60.safetensors", struct.pack("<Q", 1 << 60) + b"{}")
    header = json.dumps({"x": {"dtype": "F32", "shape": [1 << 32, 1 << 32, 16], "data_offsets": [0, 0]}}).encode()
    write("safetensors", "shape-overflow.safetensors", struct.pack("<Q", len(header)) + header)
    # (A pickle nesting 10^6 lists deep is 2 MB: engine/src/adapters/textual_inversion.rs
    # builds it in a test instead.)


if __name__ == "__main__":
    main()
