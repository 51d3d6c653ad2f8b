"""Seconds per kiln-tiny UNet training step in PyTorch, to compare with `kiln train base`.

Batch 32 of 8×16×16 latents, a 32-token context of width 64, forward + backward + global-norm
clipping + AdamW, 2 threads, on the UNet of a diffusers folder. `kiln train base --train unet`
does the same work per step (its text encoder outputs are cached when it is frozen) and
prints its speed in its log.

Run by hand (never by CI):
    /root/.cache/kiln-py/bin/python tools/torch_unet_train_step.py assets/models/kiln-tiny
"""

import sys
import time

import torch
from diffusers import UNet2DConditionModel


def main(model):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=torch.float32)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.01)
    x, ctx = torch.randn(32, 8, 16, 16), torch.randn(32, 32, 64)
    t = torch.randint(0, 1000, (32,))
    times = []
    for _ in range(12):
        start = time.perf_counter()
        loss = ((unet(x, t, encoder_hidden_states=ctx).sample - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - start)
    times = sorted(times[2:])
    print(f"torch {torch.__version__}: {times[len(times) // 2]:.3f} s/step (median of 10)")


if __name__ == "__main__":
    main(sys.argv[1])
