#!/usr/bin/env bash
# The long SIGKILL run of issue 25 (not in CI, which runs 2 kills per kind): `kiln train
# lora`, `ti` and `base` each killed KILN_KILLS times (17 by default: 51 kills in all) at
# seeded random moments — model load, training steps, checkpoint writes — then resumed with
# `--resume latest`; every checkpoint must load after every kill and each resumed run must
# end bit-identical to an uninterrupted one. Prints one line per kind.
#   tools/kill-resume.sh [KILLS_PER_KIND]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
KILN_KILLS="${1:-17}" cargo test --workspace --locked --test tests -- \
    --exact faults::sigkill_of_every_training_kind_then_resume_ends_bit_identical --nocapture
