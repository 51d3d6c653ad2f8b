"""How far apart a randomly initialised CLIP text encoder keeps words, by embedding scale.

kiln-tiny's text encoder (width 64, 3 layers, 4 heads) is built at random and then frozen or
trained with the UNet. This draws such encoders with the token and position embeddings at
several standard deviations (CLIP's is 0.02; `kiln train base --text-embedding-std`) and
prints, for captions that differ in one attribute, the largest and mean per-token distance
between the encoder's outputs (norm 8), and for the same colour word as the shape's and as
the background's ("role") against two colour words in one place ("word").

Run by hand (never by CI):
    /root/.cache/kiln-py/bin/python tools/text_encoder_scale.py
"""

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

torch.set_num_threads(2)
TOKENIZER = "assets/models/kiln-tiny/tokenizer"
CAPTION = "a large {c} {s} at the {p} on a {b} background"
REFERENCE = dict(c="green", s="circle", p="top left", b="white")
CHANGES = {
    "shape": dict(s="square"),
    "colour": dict(c="red"),
    "position": dict(p="bottom right"),
    "background": dict(b="black"),
}
SCALES = [(0.02, 0.02), (0.3, 0.1), (0.5, 0.5), (1.0, 0.3), (1.0, 1.0)]


def main():
    tok = CLIPTokenizer.from_pretrained(TOKENIZER)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=256,
                         num_hidden_layers=3, num_attention_heads=4,
                         max_position_embeddings=77, hidden_act="quick_gelu")

    def encode(model, text):
        ids = tok(text, padding="max_length", max_length=32, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            return model(ids).last_hidden_state[0]

    for token_std, position_std in SCALES:
        torch.manual_seed(0)
        model = CLIPTextModel(cfg).eval()
        embeddings = getattr(model, "text_model", model).embeddings
        with torch.no_grad():
            embeddings.token_embedding.weight.normal_(0, token_std)
            embeddings.position_embedding.weight.normal_(0, position_std)
        ref = encode(model, CAPTION.format(**REFERENCE))
        parts = []
        for name, change in CHANGES.items():
            d = (encode(model, CAPTION.format(**{**REFERENCE, **change})) - ref).norm(dim=-1)
            parts.append(f"{name} {d.max():.2f}/{d.mean():.2f}")
        a = "a large white circle at the top left on a green background"
        b = "a large green circle at the top left on a white background"
        white = tok.convert_tokens_to_ids("white</w>")
        ia, ib = tok(a).input_ids.index(white), tok(b).input_ids.index(white)
        ha, hb = encode(model, a), encode(model, b)
        parts.append(f"role {(ha[ia] - hb[ib]).norm():.2f}, word {(ha[ia] - hb[ia]).norm():.2f}")
        print(f"embeddings {token_std} / positions {position_std}: " + " | ".join(parts))


if __name__ == "__main__":
    main()
