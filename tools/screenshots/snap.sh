#!/bin/bash
# snap.sh WxH OUT.png — resizes the window run.sh started to WxH, waits $SETTLE seconds
# (default 2) and saves it as a PNG.
set -eu
export DISPLAY=:78
wid=$(xdotool search --pid $(cat ${SHOTS:-/tmp/kiln-shots}/pid) --onlyvisible 2>/dev/null | head -1)
w=${1%x*}; h=${1#*x}
xdotool windowsize $wid $w $h; sleep ${SETTLE:-2}
xwd -silent -id $wid | /usr/bin/convert xwd:- $2
echo $wid
