#!/usr/bin/env bash
# Issue 17's device session in one prepared run (at most 8.5 minutes on one GPU): the CUDA tests,
# benchmarks/gpu_speed.py (MFU, attention at 4K-64K, torch.compile) and the default search on
# --device cuda. Each part has its own time cap, so one slow part cannot eat the rest, and every
# log lands in $OUT (default gpu_out/) as it is written.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_session.sh                 # every part
#   OUT=/tmp/gpu bash benchmarks/gpu_session.sh tests speed     # only these parts
#
# Parts: tests, speed (train MFU + attention), search (1 worker), compile, sweep (MFU at a large
# batch), search4 (4 workers sharing the GPU), profile (torch.profiler: window attention at 16K,
# where its fixed ~3 ms per call goes).
#
# Missing packages (a GPU image without optuna or fvcore) can come as wheels in .whl/: they are
# installed into /tmp/site first. The search part runs the README's headline command with
# --timeout 600 (so its plan is the 10-minute plan) and is interrupted with Ctrl-C (SIGINT) after
# SEARCH_S seconds: the plan's top-rung tokens and the candidates trained per minute come from it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
part() {  # part NAME SECONDS COMMAND...: run with a cap, log to $OUT/NAME.log, print its tail
    local name=$1 cap=$2
    shift 2
    echo "=== $name (cap ${cap}s) $(date +%T)"
    local t0=$SECONDS
    timeout -s INT -k 20 "$cap" "$@" > "$OUT/$name.log" 2>&1
    echo "--- $name: rc $? in $((SECONDS - t0))s"
    tail -n "${TAIL:-40}" "$OUT/$name.log"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, optuna, fvcore; print('torch', torch.__version__, 'optuna', optuna.__version__)"
} > "$OUT/env.log" 2>&1
cat "$OUT/env.log"
want() { [[ $# -eq 0 ]] || [[ " ${PARTS[*]} " == *" $1 "* ]]; }
PARTS=("$@")
want tests && TAIL=15 part tests "${TESTS_S:-80}" $PY -m pytest -q -p no:cacheprovider \
    -o addopts="" -rs tests/spaces_tests/test_flex.py tests/spaces_tests/test_attention.py \
    tests/trainers_tests/test_step.py -k "cuda or flash or recompile"
want speed && part speed "${SPEED_S:-150}" $PY -m benchmarks.gpu_speed --device cuda \
    --parts train,attention --json "$OUT/speed.json"
want search && part search "${SEARCH_S:-130}" $PY -m search.run --budget 2GFLOPs --device cuda \
    --timeout 600 --study gpu-session --storage "sqlite:///$OUT/search.db" \
    --checkpoint-dir /tmp/ckpt --quiet
want compile && part compile "${COMPILE_S:-90}" $PY -m benchmarks.gpu_speed --device cuda \
    --parts compile --json "$OUT/compile.json"
want sweep && part sweep "${SWEEP_S:-60}" $PY -m benchmarks.gpu_speed --device cuda \
    --parts train --budgets 2e9,8e9 --batch 128 --json "$OUT/sweep.json"
want search4 && part search4 "${SEARCH4_S:-110}" $PY -m search.run --budget 2GFLOPs \
    --device cuda --workers 4 --timeout 600 --study gpu-session4 \
    --storage "sqlite:///$OUT/search4.db" --checkpoint-dir /tmp/ckpt4 --quiet
want profile && part profile "${PROFILE_S:-60}" $PY -m benchmarks.gpu_speed --device cuda \
    --parts profile
true
