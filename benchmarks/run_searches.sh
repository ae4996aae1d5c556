#!/usr/bin/env bash
# Start or continue the equal-budget searches of citeulike-t, LightGCN 256 -> BPR 20 (RESULTS §28) and
# their test runs (§32): train the teacher in WORK when it holds none (about 25 min, one thread), check
# that its weights are those the committed searches were run with, then start one single-thread job in
# the background per argument:
#   ARM              `freqd tune` in its committed folder benchmarks/results/tune/citeulike-t-lightgcn-bpr-<arm>/
#                    (commit those folders to keep the trials); log WORK/tune-<arm>.log
#   test:ARMS[:SEEDS] `freqd compare configs/compare/citeulike-t-lightgcn-bpr-equal-budget.yaml` for those
#                    arms (comma-separated) and seeds (default: the config's) in WORK/eb, where a finished
#                    run is reused and a cut one continues; log WORK/test-<arms>[-<seeds>].log
#
#   benchmarks/run_searches.sh WORK ARG...   e.g. benchmarks/run_searches.sh ../runs rrd test:freqd-kd,kd test:fd:3
#
# Needs FREQD_DATA_ROOT (the folder that holds citeulike-t). Three single-thread jobs fill two cores.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,14p' "$0" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mkdir -p "$1" && cd "$1" && pwd)
shift
# The digest of the teacher of RESULTS §19b / §28b (freqd.checkpoints.weights_digest).
expected=680571f564dd1a1e493ec04be45501a4ac711bca
export OMP_NUM_THREADS=1
teacher=$(ls "$work"/teacher/saved/LightGCN-*.pth 2>/dev/null | grep -v -- '-last\.pth$' | head -n 1 || true)
if [ -z "$teacher" ]; then
    echo "training the teacher in $work/teacher (log: $work/teacher.log)"
    mkdir -p "$work/teacher"
    (cd "$work/teacher" && freqd train --model LightGCN --dataset citeulike-t \
        --config "$repo/configs/dataset/citeulike-t.yaml" \
        --config "$repo/configs/model/lightgcn-teacher-citeulike-cpu.yaml" \
        --seed 0 --threads 1 --show_progress=False) > "$work/teacher.log" 2>&1
    teacher=$(ls "$work"/teacher/saved/LightGCN-*.pth | grep -v -- '-last\.pth$' | head -n 1)
fi
digest=$(python -c "import sys; from freqd.checkpoints import weights_digest; print(weights_digest(sys.argv[1]))" "$teacher")
if [ "$digest" != "$expected" ]; then
    echo "$teacher has weights digest $digest, not $expected: the committed searches would refuse it" >&2
    exit 1
fi
echo "teacher $teacher (weights digest $digest)"
for arg in "$@"; do
    if [[ "$arg" == test:* ]]; then
        IFS=: read -r _ arms seeds <<< "$arg"
        [ -n "$arms" ] || { echo "no arms in $arg (test:ARMS[:SEEDS])" >&2; exit 2; }
        log="$work/test-${arms//,/-}${seeds:+-${seeds//,/-}}.log"
        (cd "$repo" && nohup setsid freqd compare configs/compare/citeulike-t-lightgcn-bpr-equal-budget.yaml \
            --teacher-checkpoint "$teacher" --arms "$arms" ${seeds:+--seeds "$seeds"} --jobs 1 --threads 1 \
            --no-progress --out "$work/eb" > "$log" 2>&1 < /dev/null &)
        echo "started test runs of $arms${seeds:+ (seeds $seeds)} (log: $log)"
        continue
    fi
    config="$repo/configs/tune/citeulike-t-lightgcn-bpr-$arg.yaml"
    [ -f "$config" ] || { echo "no search config $config" >&2; exit 2; }
    (cd "$repo" && nohup setsid freqd tune "configs/tune/citeulike-t-lightgcn-bpr-$arg.yaml" \
        --teacher-checkpoint "$teacher" --threads 1 \
        --out "benchmarks/results/tune/citeulike-t-lightgcn-bpr-$arg" > "$work/tune-$arg.log" 2>&1 < /dev/null &)
    echo "started $arg (log: $work/tune-$arg.log)"
done
