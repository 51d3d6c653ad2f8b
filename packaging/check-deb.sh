#!/usr/bin/env bash
# Checks a Kiln .deb for real, then installs it, runs it and removes it again:
#
#   packaging/check-deb.sh [--keep] PATH/kiln_VERSION-1_amd64.deb
#
# 1. Contents (dpkg-deb -c): the binary (executable), the desktop entry, the icons, and the
#    shipped model — model_index.json, every component's config and weights — each file the
#    same bytes as assets/models/kiln-tiny in this checkout.
# 2. Control (dpkg-deb -I): name, version (the workspace's), architecture, section, and a
#    Depends line that names a package for every shared library the binary loads — linked or
#    dlopen()ed (eframe's GL/X11/Wayland/xkbcommon, rfd's libdbus) — found by scanning the
#    packaged binary for sonames, so a new dlopen()ed library fails here until it is listed.
# 3. Install with apt (resolves Depends from Debian; --no-install-recommends; a kiln package
#    already installed is purged first), then:
#    /usr/bin/kiln --version; the desktop entry passes desktop-file-validate; the installed
#    binary inspects and generates a 64x64 image from the installed model; the window opens
#    under Xvfb with the WM_CLASS the desktop entry names (StartupWMClass).
# 4. apt-get purge, and nothing is left in /usr/bin or /usr/share/kiln (skip with --keep).
#
# Needs root (CI runs as root; by hand: sudo). Installs xvfb, x11-utils and
# desktop-file-utils for the checks. Writes only to a temporary folder besides what apt does.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
deb=""
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) deb="$arg" ;;
    esac
done
[ -n "$deb" ] || { echo "usage: packaging/check-deb.sh [--keep] FILE.deb" >&2; exit 2; }
[ -f "$deb" ] || { echo "check-deb: no such file: $deb" >&2; exit 2; }
deb="$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"

started=$SECONDS
failures=0
fail() { echo "check-deb: FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "check-deb: ok: $*"; }
die() { echo "check-deb: FAIL: $*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "must run as root (it installs the package)"
    exec sudo --preserve-env=PATH "$0" "$@"
fi

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
[ -n "$version" ] || die "no [workspace.package] version in Cargo.toml"
model_src=assets/models/kiln-tiny
model=usr/share/kiln/models/kiln-tiny

tmp="$(mktemp -d -t kiln-check-deb.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# ---- 1. contents ---------------------------------------------------------------------
listing="$tmp/listing"
dpkg-deb -c "$deb" >"$listing" || die "dpkg-deb -c cannot read $deb"
# path -> "mode size" for regular files.
entry() { awk -v p="./$1" '$6 == p && $1 ~ /^-/ { print $1, $3 }' "$listing"; }
need() {
    local e
    e="$(entry "$1")"
    if [ -z "$e" ]; then fail "not in the package: /$1"; return 1; fi
    if [ "${e#* }" = 0 ]; then fail "empty in the package: /$1"; return 1; fi
}
need usr/bin/kiln && case "$(entry usr/bin/kiln)" in
    -rwxr-xr-x*) ok "/usr/bin/kiln ($(entry usr/bin/kiln | cut -d' ' -f2) bytes, mode 755)" ;;
    *) fail "/usr/bin/kiln is not mode 755: $(entry usr/bin/kiln)" ;;
esac
for f in usr/share/applications/kiln.desktop \
         usr/share/icons/hicolor/256x256/apps/kiln.png \
         usr/share/icons/hicolor/512x512/apps/kiln.png \
         usr/share/icons/hicolor/scalable/apps/kiln.svg \
         usr/share/doc/kiln/copyright \
         "$model/model_index.json" \
         "$model/scheduler/scheduler_config.json" \
         "$model/unet/config.json" "$model/vae/config.json" "$model/text_encoder/config.json"; do
    need "$f" && ok "/$f"
done
for c in unet vae text_encoder; do
    w="$(awk -v d="./$model/$c/" 'index($6, d) == 1 && $6 ~ /\.safetensors$/ && $3 > 0 { print $6 }' "$listing")"
    if [ -n "$w" ]; then ok "weights: ${w//$'\n'/ }"; else fail "no $c weights (*.safetensors) under /$model/$c/"; fi
done

# Unpack once: the files themselves are compared and scanned below.
root="$tmp/root"
dpkg-deb -x "$deb" "$root"
if [ -d "$model_src" ]; then
    n=0
    while IFS= read -r -d '' f; do
        rel="${f#"$model_src"/}"
        if [ ! -f "$root/$model/$rel" ]; then fail "model file missing from the package: $rel"
        elif ! cmp -s "$f" "$root/$model/$rel"; then fail "model file differs from $model_src: $rel"
        else n=$((n + 1)); fi
    done < <(find "$model_src" -type f -print0)
    while IFS= read -r rel; do
        [ -f "$model_src/$rel" ] || fail "a file in the package's model that $model_src lacks: $rel"
    done < <(cd "$root/$model" && find . -type f | sed 's|^\./||')
    if [ "$n" -gt 0 ]; then ok "the packaged model is $model_src, byte for byte ($n files)"
    else fail "$model_src has no files"; fi
else
    echo "check-deb: note: no $model_src in this checkout; model compared by listing only"
fi

# ---- 2. control fields ---------------------------------------------------------------
dpkg-deb -I "$deb" >"$tmp/info" || die "dpkg-deb -I cannot read $deb"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = kiln ] && ok "Package: kiln" || fail "Package: '$(field Package)', expected kiln"
[ "$(field Version)" = "$version-1" ] && ok "Version: $version-1" \
    || fail "Version: '$(field Version)', expected $version-1 (Cargo.toml)"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] && ok "Architecture: $(field Architecture)" \
    || fail "Architecture: '$(field Architecture)'"
[ "$(field Section)" = graphics ] && ok "Section: graphics" || fail "Section: '$(field Section)'"
depends="$(field Depends)"
[ -n "$depends" ] || fail "no Depends line"
grep -q '^ Depends: ' "$tmp/info" || fail "dpkg-deb -I shows no Depends line"
# Every soname the binary names -> the Debian package that ships it (Debian 12/13 names).
declare -A pkg_of=(
    [libc.so.6]=libc6 [libm.so.6]=libc6 [ld-linux-x86-64.so.2]=libc6 [libgcc_s.so.1]=libgcc-s1
    [libGL.so.1]=libgl1 [libEGL.so.1]=libegl1
    [libX11.so.6]=libx11-6 [libX11-xcb.so.1]=libx11-xcb1 [libxcb.so.1]=libxcb1
    [libXcursor.so.1]=libxcursor1 [libXi.so.6]=libxi6 [libXrender.so.1]=libxrender1
    [libXrandr.so.2]=libxrandr2
    [libxkbcommon.so.0]=libxkbcommon0 [libxkbcommon-x11.so.0]=libxkbcommon-x11-0
    [libwayland-client.so.0]=libwayland-client0 [libwayland-egl.so.1]=libwayland-egl1
    [libwayland-cursor.so.0]=libwayland-cursor0
    [libdbus-1.so.3]=libdbus-1-3 [libfontconfig.so.1]=libfontconfig1
    [libvulkan.so.1]=libvulkan1
)
dep_names=" $(echo "$depends" | tr ',|' '\n\n' | sed 's/(.*)//; s/[[:space:]]//g' | tr '\n' ' ') "
# (A soname can follow other symbol text without a separator: keep from its last "lib".)
sonames="$(grep -aoE 'lib[A-Za-z0-9_+-]+\.so\.[0-9]+' "$root/usr/bin/kiln" | sed 's/.*lib/lib/' | sort -u || true)"
[ -n "$sonames" ] || fail "found no library names in the packaged binary"
for so in $sonames; do
    p="${pkg_of[$so]:-}"
    if [ -z "$p" ]; then
        fail "the binary loads $so, which this check cannot map to a package: add it here and to depends"
    elif [[ "$dep_names" != *" $p "* ]]; then
        fail "the binary loads $so but Depends lacks $p"
    fi
done
ok "Depends covers the $(echo $sonames | wc -w) libraries the binary loads: $depends"

[ "$failures" = 0 ] || die "$failures problem(s) in the package itself; not installing it"

# ---- 3. install and run --------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
if dpkg-query -W kiln >/dev/null 2>&1; then
    apt-get purge -y -qq kiln >/dev/null
fi
t=$SECONDS
apt-get update -qq
# The helpers for the checks below come with it; the package's Recommends do not.
apt-get install -y -qq --no-install-recommends "$deb" desktop-file-utils xvfb x11-utils \
    >"$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log" >&2; die "apt-get install failed"; }
ok "apt-get install $(basename "$deb") ($((SECONDS - t)) s)"
[ "$(dpkg-query -W -f='${Status} ${Version}' kiln)" = "install ok installed $version-1" ] \
    || fail "dpkg says: $(dpkg-query -W -f='${Status} ${Version}' kiln)"

[ "$(command -v kiln)" = /usr/bin/kiln ] || fail "kiln on PATH is '$(command -v kiln)', not /usr/bin/kiln"
out="$(/usr/bin/kiln --version 2>&1)" || fail "/usr/bin/kiln --version failed: $out"
[ "$out" = "kiln $version" ] && ok "/usr/bin/kiln --version: $out" || fail "--version printed '$out'"

desktop-file-validate /usr/share/applications/kiln.desktop && ok "desktop-file-validate kiln.desktop" \
    || fail "desktop-file-validate kiln.desktop"
# PNG signature, then the IHDR width and height (big-endian) — 256 x 256.
png_size() { od -An -tx1 -j16 -N8 "$1" | tr -d ' \n'; }
[ "$(od -An -tx1 -N8 /usr/share/icons/hicolor/256x256/apps/kiln.png | tr -d ' \n')" = 89504e470d0a1a0a ] \
    && [ "$(png_size /usr/share/icons/hicolor/256x256/apps/kiln.png)" = 0000010000000100 ] \
    && ok "hicolor 256x256 icon is a 256x256 PNG" || fail "the 256x256 icon is not a 256x256 PNG"

# The installed binary with the installed model, away from this checkout and from $HOME.
home="$tmp/home"
mkdir -p "$home"
run() { (cd "$tmp" && env -u KILN_BUNDLED_MODEL HOME="$home" XDG_CACHE_HOME="$home/.cache" \
    XDG_CONFIG_HOME="$home/.config" XDG_DATA_HOME="$home/.local/share" "$@"); }
if run /usr/bin/kiln inspect "/$model" >"$tmp/inspect.json" 2>"$tmp/inspect.err" \
        && grep -q '"kind": "checkpoint"' "$tmp/inspect.json" \
        && grep -q '"layout": "diffusers"' "$tmp/inspect.json"; then
    ok "kiln inspect /$model: $(sed -n 's/^  "family": "\(.*\)",$/\1/p' "$tmp/inspect.json"), diffusers"
else
    fail "kiln inspect /$model: $(cat "$tmp/inspect.err" "$tmp/inspect.json" | head -5)"
fi
# The example LoRA ships beside the model (hub/src/install.rs: loras_beside), where the Models
# tab lists it.
lora="usr/share/kiln/loras/kiln-tiny-striped.safetensors"
if run /usr/bin/kiln inspect "/$lora" >"$tmp/lora.json" 2>"$tmp/lora.err" \
        && grep -q '"kind": "lora"' "$tmp/lora.json"; then
    ok "kiln inspect /$lora: a LoRA"
else
    fail "kiln inspect /$lora: $(cat "$tmp/lora.err" "$tmp/lora.json" | head -5)"
fi
# generates_64 NAME MODEL ARGS…: `kiln generate ARGS…` (2 steps) writes a 64x64 PNG whose
# recipe (`kiln info`) names MODEL; the output and logs are $tmp/NAME.*.
generates_64() {
    local name=$1 want=$2
    shift 2
    run /usr/bin/kiln generate "$@" --steps 2 --seed 1 --out "$tmp/$name.png" >"$tmp/$name.log" 2>&1 \
        && [ "$(png_size "$tmp/$name.png")" = 0000004000000040 ] \
        && run /usr/bin/kiln info --json "$tmp/$name.png" >"$tmp/$name.json" 2>&1 \
        && grep -q "$want" "$tmp/$name.json"
}
t=$SECONDS
if generates_64 x "/$model" --model "/$model" --prompt "a red circle" --width 64 --height 64; then
    ok "kiln generate with /$model: a 64x64 PNG whose recipe names the model ($((SECONDS - t)) s)"
else
    fail "kiln generate with /$model: $(tail -5 "$tmp/x.log")"
fi
# Without --model the installed binary uses the installed model (found beside the executable,
# before any source-tree fallback), at its native size.
if generates_64 default /usr/share/kiln/models/kiln-tiny --prompt "a red circle on a blue background"; then
    ok "kiln generate without --model: the installed kiln-tiny, at its native 64x64"
else
    fail "kiln generate without --model: $(tail -5 "$tmp/default.log") $(head -c 400 "$tmp/default.json" 2>/dev/null)"
fi

# The window: the desktop entry's Exec under a virtual X server.
display=""
for n in $(seq 91 120); do
    [ -e "/tmp/.X11-unix/X$n" ] || [ -e "/tmp/.X$n-lock" ] || { display=":$n"; break; }
done
[ -n "$display" ] || die "no free X display number for Xvfb"
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >"$tmp/xvfb.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do DISPLAY=$display xwininfo -root >/dev/null 2>&1 && break; sleep 0.1; done
exec_line="$(sed -n 's/^Exec=//p' /usr/share/applications/kiln.desktop | sed 's/ %[fFuU]//')"
wm_class="$(sed -n 's/^StartupWMClass=//p' /usr/share/applications/kiln.desktop)"
# shellcheck disable=SC2086 # Exec= is a command line: split it as a launcher would.
env -C "$tmp" -u WAYLAND_DISPLAY -u KILN_BUNDLED_MODEL DISPLAY="$display" HOME="$home" \
    XDG_CONFIG_HOME="$home/.config" XDG_DATA_HOME="$home/.local/share" \
    XDG_CACHE_HOME="$home/.cache" $exec_line >"$tmp/gui.log" 2>&1 &
gui=$!
pids+=($gui)
win=""
for _ in $(seq 60); do
    DISPLAY=$display xwininfo -root -tree >"$tmp/tree" 2>/dev/null || true
    win="$(awk '/"Kiln"/ { print $1; exit }' "$tmp/tree")"
    [ -n "$win" ] && break
    kill -0 "$gui" 2>/dev/null || break
    sleep 0.5
done
if [ -z "$win" ]; then
    fail "the window did not open ($exec_line): $(tail -5 "$tmp/gui.log")"
else
    sleep 3
    if ! kill -0 "$gui" 2>/dev/null; then
        fail "the window opened, then kiln exited: $(tail -5 "$tmp/gui.log")"
    else
        class="$(DISPLAY=$display xprop -id "$win" WM_CLASS 2>&1 | sed 's/^[^=]*= *//')" || true
        case "$class" in
            *"\"$wm_class\""*) ok "the window opens under Xvfb ($exec_line), WM_CLASS $class" ;;
            *) fail "the window's WM_CLASS ($class) lacks the desktop entry's StartupWMClass=$wm_class" ;;
        esac
    fi
fi
kill "$gui" 2>/dev/null || true
wait "$gui" 2>/dev/null || true

# ---- 4. remove -----------------------------------------------------------------------
if [ "$keep" = 1 ]; then
    echo "check-deb: --keep: kiln stays installed"
else
    apt-get purge -y -qq kiln >/dev/null
    if [ -e /usr/bin/kiln ] || [ -e /usr/share/kiln ] || [ -e /usr/share/applications/kiln.desktop ]; then
        fail "apt-get purge kiln left files behind"
    else
        ok "apt-get purge kiln removes it all"
    fi
fi

[ "$failures" = 0 ] || die "$failures check(s) failed"
echo "check-deb: all checks passed ($((SECONDS - started)) s)"
