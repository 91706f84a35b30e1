#!/bin/sh
# Build the demo bundle into $DUET_BUNDLE unless a complete one is already there.
# A bundle is complete when manifest.json exists: models/ writes it atomically (temp dir, rename).
# Optional: DUET_TRAIN_DATASET (default ml-latest-small), DUET_TRAIN_DATA_DIR, DUET_TRAIN_ARGS
# (extra `models build` flags, e.g. "--epochs 5"), PYTHON (default python).
set -eu

out="${DUET_BUNDLE:?DUET_BUNDLE must name the bundle directory to build}"
dataset="${DUET_TRAIN_DATASET:-ml-latest-small}"
python="${PYTHON:-python}"

if [ -f "$out/manifest.json" ]; then
    echo "duet-trainer: bundle already at $out, nothing to build"
    exit 0
fi
if [ -e "$out" ]; then
    echo "duet-trainer: $out exists but holds no manifest.json; remove it to rebuild" >&2
    exit 1
fi

mkdir -p "$(dirname "$out")"
echo "duet-trainer: building $dataset into $out"
# DUET_TRAIN_ARGS is split on spaces on purpose: it carries several flags.
# shellcheck disable=SC2086
exec "$python" -m models build --dataset "$dataset" \
    ${DUET_TRAIN_DATA_DIR:+--data-dir "$DUET_TRAIN_DATA_DIR"} \
    --out "$out" ${DUET_TRAIN_ARGS:-}
