#!/usr/bin/env bash
# Makes what the GPU check carries (tools/gpu-check/carry/, git-ignored), on an x86-64 Linux
# development machine with Rust and a network to the package registries:
#   - kiln.xz: `kiln` built in release with the Vulkan backend, stripped, xz-compressed;
#   - deb/: the Vulkan loader (Debian's libvulkan1) for a machine that has only NVIDIA's ICD;
#   - wheels/: diffusers and importlib_metadata, which the GPU machine's Python lacks (pure Python).
# Then checks that the checkout plus the carry fit in what the device tool takes (64 MiB).
#
#   bash tools/gpu-check/build.sh        # CARGO_TARGET_DIR as for the tests
set -euo pipefail
cd "$(dirname "$0")/../.."
carry=tools/gpu-check/carry
mkdir -p "$carry/deb" "$carry/wheels"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"

cargo build --release --locked -p kiln --features vulkan
cp "$CARGO_TARGET_DIR/release/kiln" "$carry/kiln"
strip "$carry/kiln"
# x86 branch filter + the largest preset: 142 MB → 24.7 MB (`-6`: 26.5 MB); Python's lzma,
# which run.sh falls back on, reads it.
xz --x86 --lzma2=preset=9e,dict=192MiB -T1 -f "$carry/kiln"

(cd "$carry/deb" && apt-get download libvulkan1 >/dev/null)
# diffusers and the one requirement the machine lacks (its list: the device tool's KINDS.md).
python3 -m pip download -q --no-deps --only-binary=:all: -d "$carry/wheels" \
    diffusers==0.42.1 importlib_metadata

tracked="$(git ls-files -z | xargs -0 du -b | awk '{ s += $1 } END { print s + 0 }')"
carried="$(du -sb "$carry" | cut -f1)"
total=$((tracked + carried))
echo "checkout $tracked B + carry $carried B = $total B (limit $((64 * 1024 * 1024)) B)"
[ "$total" -le $((64 * 1024 * 1024)) ] || { echo "too big for the device tool"; exit 1; }
