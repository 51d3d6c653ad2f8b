"""How much of the caption reaches a model's UNet: a diagnostic for retraining kiln-tiny.

1. Text encoder: for prompts that differ from a reference in one attribute (the shape's
   position, colour or kind, or the background), how far apart the encoder's outputs are —
   the largest per-token distance, against the outputs' norm. An attribute whose distance has
   collapsed cannot reach the UNet however it is trained.
2. UNet cross-attention: the share of attention each layer gives the caption's word tokens
   (against the padding tokens after them), at three noise levels. With uniform attention the
   words get (their count)/(the tokenizer's length, 77 for SD 1.x).

Run by hand on a diffusers folder (never by CI):
    /root/.cache/kiln-py/bin/python tools/probe_conditioning.py assets/models/kiln-tiny
"""
import sys

import torch
from diffusers import StableDiffusionPipeline

torch.set_num_threads(2)
REFERENCE = "a large red circle at the top left on a white background"
VARIANTS = {
    "position": "a large red circle at the bottom right on a white background",
    "colour": "a large blue circle at the top left on a white background",
    "shape": "a large red square at the top left on a white background",
    "background": "a large red circle at the top left on a black background",
}


def main(model):
    pipe = StableDiffusionPipeline.from_pretrained(
        model, dtype=torch.float32, safety_checker=None, local_files_only=True
    )
    prompts = [REFERENCE, *VARIANTS.values()]
    length = pipe.tokenizer.model_max_length
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=length, return_tensors="pt").input_ids
    eos = pipe.tokenizer.eos_token_id
    words = int((ids[0] != eos).sum()) - 1  # without BOS
    with torch.no_grad():
        h = pipe.text_encoder(ids)[0]
    print(f"text encoder: outputs of norm {h.norm(dim=-1).mean():.2f}; per-token distance to the reference")
    for i, what in enumerate(VARIANTS, 1):
        d = (h[0] - h[i]).norm(dim=-1)
        print(f"  {what:<10} max {d.max():.2f}   mean over the padding {d[words + 3:].mean():.2f}")
    shares = {}

    class Recorder:
        """diffusers' attention, recording the share of attention on the word tokens."""

        def __init__(self, name):
            self.name = name

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
            q, k, v = (attn.head_to_batch_dim(x) for x in (
                attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)))
            p = attn.get_attention_scores(q, k, None)
            shares.setdefault(self.name, []).append(p[..., 1:1 + words].sum(-1).mean().item())
            return attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(p, v))))

    unet = pipe.unet
    unet.set_attn_processor({
        n: Recorder(n.replace(".processor", "")) if "attn2" in n else p for n, p in unet.attn_processors.items()
    })
    steps = [999, 500, 100]
    c, s = unet.config.in_channels, unet.config.sample_size
    with torch.no_grad():
        for t in steps:
            unet(torch.randn(1, c, s, s, generator=torch.Generator().manual_seed(0)), t, encoder_hidden_states=h[:1])
    print(f"cross-attention on the {words} word tokens of {length} (uniform: {words / length:.1%}), at t = {steps}")
    for name, v in shares.items():
        print(f"  {name:<55} " + "  ".join(f"{x:.1%}" for x in v))


if __name__ == "__main__":
    main(sys.argv[1])
