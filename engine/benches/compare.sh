#!/usr/bin/env bash
# Runs Kiln's benchmarks and the PyTorch/diffusers side on this machine, one after the
# other (never in parallel), and prints time ratios (kiln / torch; < 1 means Kiln is faster).
#   PYTHON=/path/to/venv/bin/python engine/benches/compare.sh [DEVICE] [CARGO FLAGS…]
set -euo pipefail
cd "$(dirname "$0")/../.."
device="${1:-cpu}"; shift || true
python="${PYTHON:-python3}"
out="$(mktemp)"
cargo bench -p kiln-engine --bench sd --profile dev "$@" -- "$device" | tee -a "$out"
"$python" engine/benches/torch_side.py | tee -a "$out"
"$python" - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for bench in sorted({r["bench"] for r in rows}):
    k = [r for r in rows if r["bench"] == bench and r["impl"].startswith("kiln")]
    t = [r for r in rows if r["bench"] == bench and r["impl"].startswith("torch")]
    for a in k:
        for b in t:
            print(f"{bench}: {a['impl']} {a['seconds']:.3f}s vs {b['impl']} {b['seconds']:.3f}s -> ratio {a['seconds']/b['seconds']:.2f}x")
PY
