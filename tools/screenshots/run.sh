#!/bin/bash
# run.sh [kiln args] — starts the studio ($CARGO_TARGET_DIR/debug/kiln) under Xvfb :78 with
# HOME=$SHOTS/home (default /tmp/kiln-shots) and Kiln's own file picker, and leaves it running
# for xdotool and snap.sh. Needs xvfb, xdotool, x11-apps (xwd) and imagemagick.
set -u
export DISPLAY=:78
mkdir -p "${SHOTS:-/tmp/kiln-shots}"
pgrep -f "Xvfb :78" >/dev/null || (Xvfb :78 -screen 0 1600x1200x24 -nolisten tcp >${SHOTS:-/tmp/kiln-shots}/xvfb.log 2>&1 &)
sleep 1
export HOME=${SHOTS:-/tmp/kiln-shots}/home KILN_FILE_DIALOG=builtin
mkdir -p $HOME
old="$(cat "${SHOTS:-/tmp/kiln-shots}/pid" 2>/dev/null || true)"
[ -n "$old" ] && kill "$old" 2>/dev/null; sleep 0.5
"$CARGO_TARGET_DIR/debug/kiln" "$@" >${SHOTS:-/tmp/kiln-shots}/kiln.log 2>&1 &
echo $! > ${SHOTS:-/tmp/kiln-shots}/pid
