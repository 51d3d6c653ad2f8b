#!/usr/bin/env bash
# Kiln's GPU check, on a Linux machine with an NVIDIA GPU and PyTorch but no Rust and no
# network (the device tool's machine). Everything it needs beyond the checkout is in
# tools/gpu-check/carry/, made here by build.sh: the kiln binary (release, stripped, xz), the
# Vulkan loader's .debs, and Python wheels the machine lacks (diffusers).
#
#   bash tools/gpu-check/run.sh [--device vulkan|cpu] [--quick] [--parts abc]
#
# Prints one JSON line per figure (check.py says which) and writes them to $OUT/gpu-check.jsonl
# when $OUT is set. On this development machine, `--device cpu --quick` runs the same script
# end to end against PyTorch on the CPU (PYTHON=/path/to/venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."
carry=tools/gpu-check/carry
python="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

# The Vulkan loader (libvulkan1) where the machine has none; NVIDIA's driver provides the ICD.
if [ -d "$carry/deb" ] && ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
    for f in "$carry"/deb/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

# Python packages the machine lacks, from the carried wheels.
if [ -d "$carry/wheels" ] && ! "$python" -c "import diffusers" 2>/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target /tmp/kiln-site "$carry"/wheels/*.whl
    export PYTHONPATH="/tmp/kiln-site${PYTHONPATH:+:$PYTHONPATH}"
fi

# The binary: carried compressed (xz; Python's lzma where xz is missing).
kiln="${KILN:-}"
if [ -z "$kiln" ]; then
    kiln=/tmp/kiln-gpu-check/kiln
    mkdir -p "$(dirname "$kiln")"
    if [ ! -x "$kiln" ]; then
        "$python" -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
            "$carry/kiln.xz" "$kiln"
        chmod +x "$kiln"
    fi
fi
"$kiln" --version

out=()
[ -n "${OUT:-}" ] && out=(--out "$OUT/gpu-check.jsonl")
exec "$python" tools/gpu-check/check.py --kiln "$kiln" "${out[@]}" "$@"
