#!/usr/bin/env bash
# Collects the shards' reports of a finished mailstorm-blast Indexed Job
# from `kubectl logs` (each pod printed its report framed, `--report -`)
# and merges them into one report of the whole run.
#
#   configs/kubernetes/collect.sh [JOB [OUT_DIR]] [-- MERGE_FLAGS…]
#   configs/kubernetes/collect.sh mailstorm-blast out -- --threshold 'p99<50ms,5xx==0'
#
# NAMESPACE selects the namespace, WAIT_S bounds the wait for the Job
# (default 3600 s), MAILSTORM_BLAST names the binary (default: on PATH).
# Exit code: merge's (0 merged and passed, 1 a threshold failed, 2 refused,
# e.g. a shard missing).
set -euo pipefail

JOB=mailstorm-blast
OUT=mailstorm-reports
if [[ $# -gt 0 && "$1" != "--" ]]; then JOB="$1"; shift; fi
if [[ $# -gt 0 && "$1" != "--" ]]; then OUT="$1"; shift; fi
if [[ $# -gt 0 && "$1" == "--" ]]; then shift; fi
BLAST="${MAILSTORM_BLAST:-mailstorm-blast}"
K=(kubectl)
if [[ -n "${NAMESPACE:-}" ]]; then K+=(--namespace "$NAMESPACE"); fi

# Wait until the Job has finished, either way (bounded).
deadline=$((SECONDS + ${WAIT_S:-3600}))
while :; do
    state="$("${K[@]}" get "job/$JOB" -o 'jsonpath={.status.conditions[*].type}')"
    if [[ " $state " == *" Complete "* || " $state " == *" Failed "* ]]; then
        break
    fi
    if ((SECONDS >= deadline)); then
        echo "collect: job/$JOB not finished after ${WAIT_S:-3600} s (conditions: ${state:-none})" >&2
        exit 1
    fi
    sleep 5
done
if [[ " $state " == *" Failed "* ]]; then
    echo "collect: job/$JOB failed: merging what its pods logged" >&2
fi

mkdir -p "$OUT"
rm -f "$OUT"/shard-*.log
# One log per completion index; a newer pod of the same index wins.
"${K[@]}" get pods -l "job-name=$JOB" --sort-by=.metadata.creationTimestamp \
    -o 'jsonpath={range .items[*]}{.metadata.name}{" "}{.metadata.annotations.batch\.kubernetes\.io/job-completion-index}{"\n"}{end}' |
    while read -r pod index; do
        [[ -n "$pod" ]] || continue
        echo "collect: $pod (shard $index)" >&2
        "${K[@]}" logs "$pod" >"$OUT/shard-$index.log"
    done
shopt -s nullglob
logs=("$OUT"/shard-*.log)
if [[ ${#logs[@]} -eq 0 ]]; then
    echo "collect: no pods of job/$JOB" >&2
    exit 1
fi
exec "$BLAST" merge "${logs[@]}" --report "$OUT/merged.json" --html "$OUT/merged.html" "$@"
