#!/usr/bin/env bash
# Builds Kiln's .deb with cargo-deb and prints its path (the only line on stdout).
#
#   packaging/build-deb.sh              build the kiln binary (dev profile), then package it
#   packaging/build-deb.sh --no-build   package the binary already in $CARGO_TARGET_DIR/debug
#                                       (what .ci/run does right after `cargo test --workspace`,
#                                       which builds that binary for the integration tests)
#   --fast                              lighter compression: ~9 s instead of ~35 s, 13 MB
#                                       instead of 11 MB (CI; not for a package you publish)
#
# The package is made from the dev-profile binary on purpose: the dev profile is tuned to
# near-release speed (Cargo.toml), and a separate release build of Burn + eframe would cost
# CI 15-30 minutes. cargo-deb 3.8 warns that the dev profile "is not supported and will be a
# hard error in the future"; it is pinned below, so that warning is all it does.
#
# cargo-deb is installed once into $KILN_TOOLS (default ~/.cache/kiln-tools) at the pinned
# version. The .deb goes to $CARGO_TARGET_DIR/debian/ (./target/debian/ without it).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
tools="${KILN_TOOLS:-$HOME/.cache/kiln-tools}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
model=assets/models/kiln-tiny

build=1
fast=()
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        --fast) fast=(--fast) ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "build-deb: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done

log() { echo "build-deb: $*" >&2; }

# The shipped model must be there: a package without it is broken (hub/src/install.rs).
for f in model_index.json unet/config.json vae/config.json text_encoder/config.json; do
    [ -f "$model/$f" ] || { log "the shipped model is missing: $model/$f not found"; exit 1; }
done

cargo_deb="$tools/bin/cargo-deb"
if [ "$("$cargo_deb" --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    log "installing cargo-deb $CARGO_DEB_VERSION into $tools"
    start=$SECONDS
    # Its own target dir (removed afterwards), so the install never touches the project's cache.
    nice -n 10 cargo install --locked --force cargo-deb --version "=$CARGO_DEB_VERSION" \
        --root "$tools" --target-dir "$tools/build" >&2
    rm -rf "$tools/build"
    log "cargo-deb installed in $((SECONDS - start)) s"
fi

if [ "$build" = 1 ]; then
    log "building the kiln binary (dev profile)"
    nice -n 10 cargo build -p kiln --locked >&2
fi
bin="$target_dir/debug/kiln"
[ -x "$bin" ] || { log "no binary at $bin (build it, or run without --no-build)"; exit 1; }
log "packaging $bin ($(date -r "$bin" '+%F %T'), $("$bin" --version))"

start=$SECONDS
mkdir -p "$target_dir/debian"
# cargo-deb prints the .deb's path on stdout; --no-build: never let it start a build.
deb="$(nice -n 10 "$cargo_deb" --package kiln --profile dev --no-build --locked "${fast[@]}" \
    --output "$target_dir/debian/")"
deb="$(printf '%s\n' "$deb" | tail -n 1)"
[ -f "$deb" ] || { log "cargo-deb did not produce a .deb"; exit 1; }
log "built $deb ($(du -h "$deb" | cut -f1)) in $((SECONDS - start)) s"
echo "$deb"
