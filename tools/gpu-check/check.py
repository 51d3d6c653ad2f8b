"""Kiln's GPU check: Kiln against diffusers (+ PEFT) on the same machine, one JSON line per figure.

Run by run.sh (which unpacks what the check carries); by hand:

    python3 tools/gpu-check/check.py --kiln PATH/TO/kiln [--device vulkan|cpu] [--quick]
                                     [--work DIR] [--out FILE.jsonl] [--budget-s 420]

Parts, in order (each prints its figures as it goes; a part that fails prints an "error" line
and the rest go on):

  a. parity — the tiny fixture models (tests/fixtures/tiny-a, tiny-b): Kiln's DDIM txt2img
     latents from the references' initial noise against diffusers' (tests/fixtures/ref), on
     --device at f32 and f16; and 20 LoRA training steps on --device against the CPU's loss
     curve (f32, and over an f16 base).
  b. SD 1.5 at 512×512, 20 DDIM steps, CFG 7.5, random full-size weights (make_sd15.py): Kiln
     on --device (f16 and f32) against diffusers (f16 on CUDA; f32 on the CPU): seconds per
     image (warm, the second of two), UNet calls per second, load seconds, peak device memory.
  c. one SD 1.5 LoRA training step (rank 16, batch 1, 64×64 latents) on --device against
     diffusers + PEFT (frozen base f16 and LoRA f32 on CUDA, as diffusers' LoRA script).

--quick shrinks b and c (256×256, 4 steps; 32×32 latents) for a CPU run. The last lines are
the ratios Kiln / PyTorch (seconds: < 1 means Kiln is faster).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "fixtures"))
sys.path.insert(0, HERE)

FIGURES = []
OUT = None


def emit(**figure):
    """Prints one figure as a JSON line (and keeps it for the ratios and --out)."""
    FIGURES.append(figure)
    line = json.dumps(figure)
    print(line, flush=True)
    if OUT:
        with open(OUT, "a") as f:
            f.write(line + "\n")


def kiln(binary, args, env=None, timeout=900):
    """Runs the kiln binary; returns (stdout lines, stderr, seconds)."""
    t0 = time.perf_counter()
    p = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"kiln {' '.join(args[:2])} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p.stdout.splitlines(), p.stderr, secs


def kiln_events(binary, args, timeout=900):
    """Runs `kiln train … --json`, timing each event as it arrives: [(seconds, event)]."""
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "KILN_LOG": "info"})
    events = []
    for line in p.stdout:
        if line.startswith("{"):
            events.append((time.perf_counter() - t0, json.loads(line)))
    err = p.stderr.read()
    if p.wait(timeout=timeout) != 0:
        raise RuntimeError(f"kiln train failed: {err.strip()[-2000:]}")
    return events, err


def device_peak_mib(log):
    """The last `peak_reserved_mib` Kiln logged (GPU backends), or None."""
    found = None
    for line in log.splitlines():
        if "peak_reserved_mib=" in line:
            found = int(line.split("peak_reserved_mib=")[1].split()[0])
    return found


def rel_max_err(got, want):
    import numpy as np
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def torch_runs(args):
    """PyTorch's side of a comparison: yields (torch device, precision, dtype) — f16 and f32
    on CUDA, f32 on the CPU — with CUDA's peak-memory counter reset before each run and its
    cache emptied after."""
    import torch
    dev = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    for precision in (["f16", "f32"] if dev == "cuda" else ["f32"]):
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        yield dev, precision, torch.float16 if precision == "f16" else torch.float32
        if dev == "cuda":
            torch.cuda.empty_cache()


def torch_peak_mib(dev):
    """CUDA's peak allocated memory since the last reset, in MiB (None on the CPU)."""
    import torch
    return torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None


# ---------------------------------------------------------------------------------------------
# a. parity


def part_a(args, work):
    import stored
    from safetensors.numpy import load_file, save_file

    stored.materialize()
    for m in ("tiny-a", "tiny-b"):
        ref = load_file(os.path.join(REPO, "tests", "fixtures", "ref", f"{m}.safetensors"))
        with open(os.path.join(REPO, "tests", "fixtures", "ref", f"{m}.json")) as f:
            d = json.load(f)["ddim"]
        noise = os.path.join(work, f"{m}-noise.safetensors")
        save_file({"latents": ref["ddim.latents_in"]}, noise)
        for precision, tol in (("f32", 1e-4), ("f16", 1e-2)):
            out = os.path.join(work, f"{m}-{precision}.png")
            lat = os.path.join(work, f"{m}-{precision}-latents.safetensors")
            cmd = ["generate", "--model", os.path.join(REPO, "tests", "fixtures", m),
                   "--sampler", "ddim", "--eta", str(d["eta"]), "--steps", str(d["num_inference_steps"]),
                   "--cfg", str(d["guidance_scale"]), "--width", str(d["width"]), "--height", str(d["height"]),
                   "--seed", "0", "--clip-skip", "1", "--latents", noise, "--save-latents", lat,
                   "--device", args.device, "--precision", precision, "--out", out, "--json"]
            for p in d["prompts"]:
                cmd += ["--prompt", p]
            for n in d["negative_prompts"]:
                cmd += ["--negative", n]
            kiln(args.kiln, cmd)
            err = rel_max_err(load_file(lat)["latents"], ref["ddim.latents_out"])
            emit(part="a", figure="ddim_latents_rel_err", model=m, device=args.device,
                 precision=precision, value=err, tolerance=tol, ok=err <= tol)

    # 20 LoRA steps on the device against the CPU (the CI test on lavapipe, on this GPU).
    data = os.path.join(work, "lora-data")
    os.makedirs(data, exist_ok=True)
    write_dataset(data)
    curves = {}
    for device, precision in (("cpu", "f32"), (args.device, "f32"), (args.device, "f16")):
        key = f"{device}-{precision}"
        if key in curves:
            continue
        out = os.path.join(work, f"lora-{key}")
        events, _ = kiln_events(args.kiln, [
            "train", "lora", "--model", os.path.join(REPO, "tests", "fixtures", "tiny-a"),
            "--data", data, "--out", out, "--resolution", "32", "--steps", "20", "--batch", "2",
            "--lr", "1e-3", "--seed", "7", "--checkpoint-every", "0", "--default-caption", "a shape",
            "--device", device, "--precision", precision, "--json"])
        curves[key] = [e["loss"] for _, e in events if e.get("event") == "step"]
    base = curves["cpu-f32"]
    for key, losses in curves.items():
        if key == "cpu-f32":
            continue
        worst = max(abs(a - b) / abs(b) for a, b in zip(losses, base))
        tol = 1e-3 if key.endswith("f32") else 1e-2
        emit(part="a", figure="lora_20_steps_loss_rel_diff_vs_cpu", run=key, value=worst,
             tolerance=tol, ok=worst <= tol and len(losses) == 20)


def write_dataset(d):
    """Three 40×48 images, one captioned (the tests' training dataset)."""
    from PIL import Image
    for i, rgb in enumerate([(220, 30, 30), (30, 30, 220), (30, 200, 60)]):
        img = Image.new("RGB", (40, 48), rgb)
        px = img.load()
        for y in range(48):
            for x in range(40):
                if x // 10 == y // 12:
                    px[x, y] = (255, 255, 255)
        img.save(os.path.join(d, f"img{i}.png"))
    with open(os.path.join(d, "img0.txt"), "w") as f:
        f.write("a red square with a white diagonal")


# ---------------------------------------------------------------------------------------------
# b. SD 1.5 txt2img


def part_b(args, work, model):
    size, steps = (256, 4) if args.quick else (512, 20)
    prompt, negative = "a photograph of an astronaut riding a horse", "blurry, low quality"
    precisions = ["f16", "f32"] if args.device != "cpu" else ["f32"]
    for precision in precisions:
        out = os.path.join(work, f"sd15-{precision}.png")
        lines, log, wall = kiln(args.kiln, [
            "generate", "--model", model, "--prompt", prompt, "--negative", negative,
            "--steps", str(steps), "--cfg", "7.5", "--width", str(size), "--height", str(size),
            "--seed", "1", "--batch-count", "2", "--device", args.device, "--precision", precision,
            "--out", out, "--json"], env={"KILN_LOG": "info"})
        s = json.loads(lines[-1])
        emit(part="b", figure="sd15_txt2img", impl="kiln", device=args.device, precision=precision,
             size=size, steps=steps, seconds_per_image=s["batch_seconds"][-1],
             first_image_seconds=s["batch_seconds"][0], unet_calls_per_second=s["unet_calls_per_second"],
             load_seconds=s["load_seconds"], process_seconds=wall,
             device_memory_peak_mib=(s["device_memory_peak_bytes"] or 0) / 2**20 or device_peak_mib(log),
             peak_rss_mib=(s["peak_rss_bytes"] or 0) / 2**20)

    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    for dev, precision, dtype in torch_runs(args):
        cuda = dev == "cuda"
        t0 = time.perf_counter()
        pipe = StableDiffusionPipeline.from_pretrained(
            model, torch_dtype=dtype, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False, local_files_only=True).to(dev)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        load = time.perf_counter() - t0
        marks = []

        def on_step(p, i, t, kw):
            if cuda:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())
            return kw

        per_image = []
        for _ in range(2):
            marks.clear()
            t0 = time.perf_counter()
            with torch.no_grad():
                pipe(prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=7.5,
                     width=size, height=size, generator=torch.Generator(dev).manual_seed(1),
                     callback_on_step_end=on_step, output_type="np")
            if cuda:
                torch.cuda.synchronize()
            per_image.append(time.perf_counter() - t0)
        rate = (len(marks) - 1) / (marks[-1] - marks[0]) if len(marks) > 1 else steps / per_image[-1]
        emit(part="b", figure="sd15_txt2img", impl=f"diffusers-{torch.__version__.split('+')[0]}",
             device=dev, precision=precision, size=size, steps=steps, seconds_per_image=per_image[-1],
             first_image_seconds=per_image[0], unet_calls_per_second=rate, load_seconds=load,
             device_memory_peak_mib=torch_peak_mib(dev))
        del pipe


# ---------------------------------------------------------------------------------------------
# c. SD 1.5 LoRA training step


def part_c(args, work, model):
    res = 256 if args.quick else 512
    steps = 3 if args.quick else 8
    data = os.path.join(work, "sd15-data")
    os.makedirs(data, exist_ok=True)
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (res, res, 3), dtype=np.uint8)).save(os.path.join(data, "a.png"))
    with open(os.path.join(data, "a.txt"), "w") as f:
        f.write("a photograph of noise")
    precisions = ["auto", "f32"] if args.device != "cpu" else ["f32"]
    for precision in precisions:
        events, log = kiln_events(args.kiln, [
            "train", "lora", "--model", model, "--data", data, "--out", os.path.join(work, f"sd15-lora-{precision}"),
            "--resolution", str(res), "--rank", "16", "--batch", "1", "--steps", str(steps),
            "--checkpoint-every", "0", "--device", args.device, "--precision", precision, "--json"])
        started = next(e for _, e in events if e.get("event") == "started")
        times = [t for t, e in events if e.get("event") == "step"]
        per_step = statistics.median([b - a for a, b in zip(times[1:], times[2:])] or [times[-1] - times[0]])
        emit(part="c", figure="sd15_lora_step", impl="kiln", device=args.device,
             precision=started.get("precision"), latents=res // 8, rank=16, seconds_per_step=per_step,
             device_memory_peak_mib=device_peak_mib(log))

    import torch
    import torch.nn.functional as F
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel
    for dev, precision, dtype in torch_runs(args):
        cuda = dev == "cuda"
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=dtype).to(dev)
        te = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", torch_dtype=dtype).to(dev)
        unet.requires_grad_(False)
        te.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian",
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        params = [p for p in unet.parameters() if p.requires_grad]
        for p in params:  # diffusers' cast_training_params: the LoRA trains in f32
            p.data = p.data.float()
        opt = torch.optim.AdamW(params, lr=1e-4)
        sched = DDIMScheduler.from_pretrained(model, subfolder="scheduler")
        ac = sched.alphas_cumprod.to(dev)
        g = torch.Generator(dev).manual_seed(0)
        h = res // 8
        with torch.no_grad():
            ctx = te(torch.randint(0, 49407, (1, 77), device=dev, generator=g))[0]

        def step():
            lat = torch.randn((1, 4, h, h), device=dev, generator=g)
            noise = torch.randn((1, 4, h, h), device=dev, generator=g)
            ts = torch.randint(0, 1000, (1,), device=dev, generator=g)
            a = ac[ts].view(-1, 1, 1, 1)
            with torch.autocast(dev, dtype=dtype, enabled=cuda and precision == "f16"):
                pred = unet((a.sqrt() * lat + (1 - a).sqrt() * noise).to(dtype), ts, ctx).sample
            loss = F.mse_loss(pred.float(), noise)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if cuda:
                torch.cuda.synchronize()

        step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        emit(part="c", figure="sd15_lora_step", impl=f"diffusers+peft-{torch.__version__.split('+')[0]}",
             device=dev, precision=precision, latents=h, rank=16, seconds_per_step=statistics.median(times),
             device_memory_peak_mib=torch_peak_mib(dev))
        del unet, te, opt


# ---------------------------------------------------------------------------------------------


def ratios():
    """Kiln / PyTorch for each figure both sides measured at the same precision."""
    keys = {"sd15_txt2img": "seconds_per_image", "sd15_lora_step": "seconds_per_step"}
    for fig, key in keys.items():
        kilns = [f for f in FIGURES if f.get("figure") == fig and f.get("impl") == "kiln"]
        torches = [f for f in FIGURES if f.get("figure") == fig and f.get("impl", "").startswith("diffusers")]
        for k in kilns:
            kp = {"auto": "f16", "bf16": "f16"}.get(k["precision"], k["precision"])
            for t in torches:
                if t["precision"] == kp:
                    emit(figure="ratio", of=fig, measure=key, kiln=f"{k['device']}-{k['precision']}",
                         torch=f"{t['device']}-{t['precision']}", ratio=k[key] / t[key])


def main():
    global OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--device", default="vulkan")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="parts not started by then are skipped (the device time is limited)")
    ap.add_argument("--parts", default="abc")
    args = ap.parse_args()
    OUT = args.out
    work = args.work or tempfile.mkdtemp(prefix="kiln-gpu-check-")
    os.makedirs(work, exist_ok=True)
    started = time.perf_counter()
    emit(figure="machine", device=args.device, quick=args.quick, **machine())
    model = None
    for part in args.parts:
        if time.perf_counter() - started > args.budget_s:
            emit(part=part, figure="skipped", reason=f"past the {args.budget_s:.0f} s budget")
            continue
        t0 = time.perf_counter()
        try:
            if part in "bc" and model is None:
                import make_sd15
                model = make_sd15.make(os.path.join(work, "sd15"))
                emit(figure="sd15_made", seconds=time.perf_counter() - t0)
            {"a": lambda: part_a(args, work), "b": lambda: part_b(args, work, model),
             "c": lambda: part_c(args, work, model)}[part]()
        except Exception as e:  # noqa: BLE001 — one broken part must not hide the others
            traceback.print_exc()
            emit(part=part, figure="error", error=f"{type(e).__name__}: {e}"[-1500:])
        emit(part=part, figure="part_seconds", value=time.perf_counter() - t0)
    ratios()
    failed = [f for f in FIGURES if f.get("ok") is False or f.get("figure") == "error"]
    emit(figure="summary", seconds=time.perf_counter() - started, failed=len(failed))
    return 1 if failed else 0


def machine():
    info = {}
    try:
        import torch
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    return info


if __name__ == "__main__":
    sys.exit(main())
