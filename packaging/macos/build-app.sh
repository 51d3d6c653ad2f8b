#!/usr/bin/env bash
# Assembles Kiln.app (macOS) and prints its path (the only line on stdout):
#
#   packaging/macos/build-app.sh [--binary PATH] [-- CARGO BUILD ARGS]
#
# Without --binary it runs `cargo build --release -p kiln --locked ARGS` (e.g.
# `-- --features metal` for the GPU) and bundles target/release/kiln. The bundle:
#
#   Kiln.app/Contents/Info.plist                      packaging/macos/Info.plist, version filled in
#   Kiln.app/Contents/MacOS/kiln                      the binary
#   Kiln.app/Contents/Resources/kiln.icns             packaging/icons/kiln.icns
#   Kiln.app/Contents/Resources/models/kiln-tiny/     assets/models/kiln-tiny (the shipped model;
#                                                     hub/src/install.rs: <exe>/../Resources/models)
#
# It goes to $CARGO_TARGET_DIR/macos/ (./target/macos/ without it). On macOS the bundle is
# signed ad hoc (codesign -s -) and the plist checked with plutil; elsewhere --binary lets
# you check the layout with any binary.
set -euo pipefail
cd "$(dirname "$0")/../.."

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
model=assets/models/kiln-tiny
bin=""
cargo_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) bin="$2"; shift 2 ;;
        --) shift; cargo_args=("$@"); break ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "build-app: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
log() { echo "build-app: $*" >&2; }

[ -f "$model/model_index.json" ] || { log "the shipped model is missing: $model/model_index.json"; exit 1; }
if [ -z "$bin" ]; then
    cargo build --release -p kiln --locked "${cargo_args[@]}" >&2
    bin="$target_dir/release/kiln"
fi
[ -x "$bin" ] || { log "no binary at $bin"; exit 1; }

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
app="$target_dir/macos/Kiln.app"
rm -rf "$app"
mkdir -p "$app/Contents/MacOS" "$app/Contents/Resources/models"
sed "s/@VERSION@/$version/g" packaging/macos/Info.plist >"$app/Contents/Info.plist"
cp "$bin" "$app/Contents/MacOS/kiln"
cp packaging/icons/kiln.icns "$app/Contents/Resources/kiln.icns"
cp -R "$model" "$app/Contents/Resources/models/kiln-tiny"
printf 'APPL????' >"$app/Contents/PkgInfo"

if command -v plutil >/dev/null; then plutil -lint "$app/Contents/Info.plist" >&2; fi
if [ "$(uname -s)" = Darwin ] && command -v codesign >/dev/null; then
    codesign --force --deep --sign - "$app" >&2
fi
log "built $app (version $version, $(du -sh "$app" | cut -f1))"
echo "$app"
