#!/usr/bin/env bash
# The compound-scaling evidence of docs/results.md: the outcome studies' picks (made by
# benchmarks/outcome_runs.sh, text 20MFLOPs and recall 10MFLOPs at 128 tokens) scaled to 2x, 4x
# and 8x their budget by search.scale, against width-only and depth-only scaling to the same
# targets, all trained for the same tokens with search.train's trainer (text 1M, recall 3M). Logs
# go to docs/measurements/scaling/. About 8 (text) and 12 (recall) minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/measurements/scaling
db=${DB_DIR:-/tmp/outcome}
mkdir -p "$out"
for spec in "text-20MFLOPs 1M" "recall-10MFLOPs 3M"; do  # recall: 1M tokens stays near chance
    read -r name tokens <<< "$spec"
    [[ -z "${ONLY:-}" || "$name" == "$ONLY"* ]] || continue  # ONLY=text runs one task
    name="$name${SUFFIX:-}"  # SUFFIX=-warmup: the study outcome_runs.sh made with that SUFFIX
    # shellcheck disable=SC2086  # GRID_ARGS="--grid-seeds 2" passes search.scale's grid flags
    { time python -m benchmarks.scaling_outcome --study "$name" --storage "sqlite:///$db/$name.db" \
        --factors 2,4,8 --tokens "$tokens" --jobs 2 --json "$out/$name-scaling.json" \
        ${GRID_ARGS:-}; } > "$out/$name-scaling.log" 2>&1
done
