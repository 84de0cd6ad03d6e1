#!/usr/bin/env bash
# The compound-scaling evidence of docs/results.md: the outcome studies' picks (made by
# benchmarks/outcome_runs.sh, text 20MFLOPs and recall 10MFLOPs at 128 tokens) scaled to 2x, 4x
# and 8x their budget by search.scale, against width-only and depth-only scaling to the same
# targets, all trained for the same tokens with search.train's trainer. Logs go to
# docs/measurements/scaling/. About 15 minutes per task on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/measurements/scaling
db=${DB_DIR:-/tmp/outcome}
tokens=${TOKENS:-1M}
mkdir -p "$out"
for name in text-20MFLOPs recall-10MFLOPs; do
    [[ -z "${ONLY:-}" || "$name" == "$ONLY"* ]] || continue  # ONLY=text runs one task
    { time python -m benchmarks.scaling_outcome --study "$name" --storage "sqlite:///$db/$name.db" \
        --factors 2,4,8 --tokens "$tokens" --jobs 2 --json "$out/$name-scaling.json"; } \
        > "$out/$name-scaling.log" 2>&1
done
