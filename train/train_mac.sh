#!/usr/bin/env bash
# One command on an Apple Silicon Mac: set up, make a dataset (unless the run has one), train LoRA, fuse,
# and print how to serve the student.
#
#   train/train_mac.sh [RUN]            RUN defaults to mac_<date>; an existing output/RUN/data is reused
#
# Settings come from mlx_config.yaml; these environment variables override:
#   N=2000           examples to generate when the run has no data yet
#   TEACHER=builtin  or an OpenAI-compatible URL, e.g. http://127.0.0.1:8080/v1 (mlx_lm.server)
#   MODEL=...        student base model (default: mlx_config.yaml's `model`)
#   ITERS=...        training iterations (default: mlx_config.yaml's `iters`)
#   CONFIG=...       training config (default: mlx_config.yaml)
#   VENV=.venv       the virtual environment to create or reuse
#   OVERWRITE=1      retrain a RUN that already has adapters (otherwise the script stops there)
set -euo pipefail
cd "$(dirname "$0")/.."

RUN="${1:-mac_$(date +%Y%m%d_%H%M)}"
VENV="${VENV:-.venv}"
if [ "$(uname -s)" != "Darwin" ] || [ "$(uname -m)" != "arm64" ]; then
  echo "note: not an Apple Silicon Mac; MLX will run on the CPU (slow; see README 'Training on Linux')" >&2
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -e '.[train]'

if [ ! -f "output/$RUN/data/train.jsonl" ]; then
  "$VENV/bin/factory" generate --run "$RUN" --n "${N:-2000}" --teacher "${TEACHER:-builtin}"
fi
"$VENV/bin/factory" train --run "$RUN" --name "$RUN" ${CONFIG:+--config "$CONFIG"} ${MODEL:+--model "$MODEL"} ${ITERS:+--iters "$ITERS"} ${OVERWRITE:+--overwrite}
"$VENV/bin/factory" fuse --adapter-path "train/$RUN"

echo
echo "student ready: train/$RUN/ (adapters) and train/$RUN/fused/ (fused model)"
echo "serve it for eval:  $VENV/bin/mlx_lm.server --model train/$RUN/fused --port 8081"
