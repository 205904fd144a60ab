#!/usr/bin/env bash
# Collects the shards' reports of a finished mailstorm-blast Indexed Job
# from `kubectl logs` (each pod printed its report framed, `--report -`)
# and merges them into one report of the whole run.
#
#   configs/kubernetes/collect.sh [JOB [OUT_DIR]] [-- MERGE_FLAGS…]
#   configs/kubernetes/collect.sh mailstorm-blast out -- --threshold 'p99<50ms,5xx==0'
#
# Every pod's log is saved as OUT/shard-INDEX.log, a failed pod's too: a
# shard that failed after reporting (exit 1: its run did not pass, 4, 5)
# printed its report and is merged; one that failed before (e.g. the target
# unreachable) left only its error, and a pod whose log cannot be read
# leaves kubectl's error in that file: merge counts such a log as a missing
# shard, names it and shows its last line, and refuses unless
# `-- --allow-partial` (then it merges the other shards and marks the
# report partial). A log with a damaged report (cut off) is refused even so.
#
# NAMESPACE selects the namespace, WAIT_S bounds the wait for the Job
# (default 3600 s), MAILSTORM_BLAST names the binary (default: on PATH).
# Exit code: merge's (0 merged and passed, 1 a threshold failed or the
# merged run did not pass, 2 refused, e.g. a shard missing, 4 or 5 a part
# had an internal error or was interrupted); 1 also when the Job did not
# finish within WAIT_S or has no pods.
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
    echo "collect: job/$JOB failed (a shard's pod failed): merging what its pods logged" >&2
fi

mkdir -p "$OUT"
rm -f "$OUT"/shard-*.log
# One log per completion index, whatever the pod's phase; a newer pod of
# the same index wins. A log that cannot be read does not stop the others.
"${K[@]}" get pods -l "job-name=$JOB" --sort-by=.metadata.creationTimestamp \
    -o 'jsonpath={range .items[*]}{.metadata.name}{" "}{.metadata.annotations.batch\.kubernetes\.io/job-completion-index}{" "}{.status.phase}{"\n"}{end}' |
    while read -r pod index phase; do
        [[ -n "$pod" ]] || continue
        log="$OUT/shard-$index.log"
        echo "collect: $pod (shard $index, ${phase:-phase unknown})" >&2
        if ! "${K[@]}" logs "$pod" >"$log" 2>"$log.err"; then
            why="$(tail -n 1 "$log.err")"
            echo "collect: $pod: no log: ${why:-kubectl logs failed}" >&2
            # Last in the file, so merge shows it as why there is no report.
            echo "collect: no log from pod $pod (${phase:-phase unknown}): ${why:-kubectl logs failed}" >>"$log"
        else
            cat "$log.err" >&2
        fi
        rm -f "$log.err"
    done
shopt -s nullglob
logs=("$OUT"/shard-*.log)
if [[ ${#logs[@]} -eq 0 ]]; then
    echo "collect: no pods of job/$JOB" >&2
    exit 1
fi
exec "$BLAST" merge "${logs[@]}" --report "$OUT/merged.json" --html "$OUT/merged.html" "$@"
