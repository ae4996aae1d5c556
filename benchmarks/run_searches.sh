#!/usr/bin/env bash
# Start or continue the equal-budget searches of one setting and their test runs: train the setting's teacher
# in WORK when it holds none, check that its weights are those the committed searches were run with, then
# start one single-thread job in the background per argument:
#   ARM              `freqd tune configs/tune/<setting>-<arm>.yaml` in its committed folder
#                    benchmarks/results/tune/<setting>-<arm>/ (commit those folders to keep the trials);
#                    log WORK/tune-<arm>.log
#   test:ARMS[:SEEDS] `freqd compare configs/compare/<setting>-equal-budget.yaml` for those arms (comma-separated)
#                    and seeds (default: the config's) in benchmarks/results/compare/<setting>-equal-budget/,
#                    where a finished run is reused and a cut one continues (commit its teacher.json/.npz and
#                    arms/*/s*.json/.npz to keep the finished runs); log WORK/test-<arms>[-<seeds>].log
# Settings: citeulike-t-lightgcn-bpr (the default; RESULTS §28, §32; teacher about 25 min, one thread),
# ml-1m-bpr-bpr (RESULTS §33-§35; teacher 8-13 min) and citeulike-t-bpr-bpr (its searches reuse
# citeulike-t-lightgcn-bpr's scratch search, which takes no teacher).
#
#   benchmarks/run_searches.sh [--setting S] WORK ARG...   e.g. benchmarks/run_searches.sh ../runs rrd test:fd:3
#
# Needs FREQD_DATA_ROOT (the folder that holds the datasets). Three single-thread jobs fill two cores.
# One block: bash reads it whole before running it, so editing this file cannot break a running launch.
{
set -euo pipefail
setting=citeulike-t-lightgcn-bpr
if [ "${1:-}" = "--setting" ]; then
    setting=${2:?--setting needs a value}
    shift 2
fi
if [ $# -lt 2 ]; then
    sed -n '2,18p' "$0" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mkdir -p "$1" && cd "$1" && pwd)
shift
# Each setting's teacher: model, `freqd train` arguments, and the weights digest of the teacher its committed
# searches were run with (freqd.checkpoints.weights_digest).
case "$setting" in
    citeulike-t-lightgcn-bpr)
        model=LightGCN
        train_args=(--dataset citeulike-t --config "$repo/configs/dataset/citeulike-t.yaml"
            --config "$repo/configs/model/lightgcn-teacher-citeulike-cpu.yaml")
        expected=680571f564dd1a1e493ec04be45501a4ac711bca ;;
    citeulike-t-bpr-bpr)
        model=BPR
        train_args=(--dataset citeulike-t --config "$repo/configs/dataset/citeulike-t.yaml"
            --config "$repo/configs/model/bpr-teacher-citeulike.yaml" --train_sampler=fast)
        expected=25867d39617bce04995c38cf22e3fad470493c74 ;;
    ml-1m-bpr-bpr)
        model=BPR
        train_args=(--dataset ml-1m --config "$repo/configs/dataset/ml-1m.yaml"
            --config "$repo/benchmarks/results/tune/ml-1m-bpr-teacher/best.yaml")
        expected=a17a6faba89b9156a4f60158fe9bb764da961908 ;;
    *)
        echo "unknown setting $setting (citeulike-t-lightgcn-bpr, citeulike-t-bpr-bpr, ml-1m-bpr-bpr)" >&2
        exit 2 ;;
esac
export OMP_NUM_THREADS=1
teacher=$(ls "$work"/teacher/saved/"$model"-*.pth 2>/dev/null | grep -v -- '-last\.pth$' | head -n 1 || true)
if [ -z "$teacher" ]; then
    echo "training the $setting teacher in $work/teacher (log: $work/teacher.log)"
    mkdir -p "$work/teacher"
    (cd "$work/teacher" && freqd train --model "$model" "${train_args[@]}" \
        --seed 0 --threads 1 --show_progress=False) > "$work/teacher.log" 2>&1
    teacher=$(ls "$work"/teacher/saved/"$model"-*.pth | grep -v -- '-last\.pth$' | head -n 1)
fi
digest=$(python -c "import sys; from freqd.checkpoints import weights_digest; print(weights_digest(sys.argv[1]))" "$teacher")
if [ "$digest" != "$expected" ]; then
    echo "$teacher has weights digest $digest, not $expected: the committed searches would refuse it" >&2
    exit 1
fi
echo "teacher $teacher (weights digest $digest)"
# Each job replaces its subshell (exec) and holds only its log, so a pipe reading this script's output ends
# when the script does.
for arg in "$@"; do
    if [[ "$arg" == test:* ]]; then
        IFS=: read -r _ arms seeds <<< "$arg"
        [ -n "$arms" ] || { echo "no arms in $arg (test:ARMS[:SEEDS])" >&2; exit 2; }
        log="$work/test-${arms//,/-}${seeds:+-${seeds//,/-}}.log"
        (cd "$repo" && exec nohup setsid freqd compare "configs/compare/$setting-equal-budget.yaml" \
            --teacher-checkpoint "$teacher" --arms "$arms" ${seeds:+--seeds "$seeds"} --jobs 1 --threads 1 \
            --no-progress --out "benchmarks/results/compare/$setting-equal-budget" > "$log" 2>&1 < /dev/null) &
        echo "started test runs of $arms${seeds:+ (seeds $seeds)} (log: $log)"
        continue
    fi
    config="$repo/configs/tune/$setting-$arg.yaml"
    [ -f "$config" ] || { echo "no search config $config" >&2; exit 2; }
    # A search without a distiller (scratch) takes no teacher.
    teacher_arg=()
    grep -q '^kd:' "$config" && teacher_arg=(--teacher-checkpoint "$teacher")
    (cd "$repo" && exec nohup setsid freqd tune "configs/tune/$setting-$arg.yaml" \
        "${teacher_arg[@]}" --threads 1 \
        --out "benchmarks/results/tune/$setting-$arg" > "$work/tune-$arg.log" 2>&1 < /dev/null) &
    echo "started $arg (log: $work/tune-$arg.log)"
done
exit 0
}
