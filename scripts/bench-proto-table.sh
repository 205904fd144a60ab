#!/usr/bin/env bash
# Runs the mailstorm-proto vs smtp-proto benchmark (benches/proto.rs) and
# prints a markdown table from criterion's estimates:
#   benchmark | median | throughput | vs smtp-proto (or memmem)
#
# Usage: scripts/bench-proto-table.sh [--no-run] [CPU]
#   --no-run  only print the table from the last run's target/criterion data
#   CPU       core to pin the benchmark to with taskset (default 1)
# Needs jq (installed with apt-get if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

run=1
if [[ "${1:-}" == "--no-run" ]]; then
    run=0
    shift
fi
cpu="${1:-1}"

if ! command -v jq >/dev/null; then
    if command -v apt-get >/dev/null; then
        sudo=""
        [[ $(id -u) -ne 0 ]] && sudo="sudo"
        $sudo apt-get install -y -qq jq >/dev/null
    else
        echo "jq is required" >&2
        exit 1
    fi
fi

if [[ $run -eq 1 ]]; then
    # Build unpinned (compiling on one core is slow), then run pinned.
    cargo bench --bench proto --no-run
    pin=()
    if command -v taskset >/dev/null; then
        pin=(taskset -c "$cpu")
    fi
    "${pin[@]}" cargo bench --bench proto
fi

crit=target/criterion
[[ -d $crit ]] || { echo "no $crit: run the benchmark first" >&2; exit 1; }

# median (ns) of one benchmark id, e.g. "data_unstuff/mailstorm/1MB"
median() {
    local f="$crit/$1/new/estimates.json"
    [[ -f $f ]] && jq -r '.median.point_estimate' "$f" || echo ""
}
# throughput of a benchmark id: "Bytes N" / "Elements N" / ""
throughput() {
    local f="$crit/$1/new/benchmark.json"
    [[ -f $f ]] || { echo ""; return; }
    jq -r '.throughput // {} | to_entries[0] // empty | "\(.key) \(.value)"' "$f"
}

fmt_time() { # ns -> human
    awk -v t="$1" 'BEGIN {
        if (t >= 1e6) printf "%.3f ms", t / 1e6;
        else if (t >= 1e3) printf "%.2f µs", t / 1e3;
        else printf "%.1f ns", t }'
}
fmt_tp() { # ns, "Kind N" -> per-element time or GB/s
    local ns="$1" kind="${2%% *}" n="${2##* }"
    case "$kind" in
        Bytes|BytesDecimal) awk -v t="$ns" -v n="$n" 'BEGIN { printf "%.1f GB/s", n / t }' ;; # 10^9 B/s
        Elements) awk -v t="$ns" -v n="$n" 'BEGIN { printf "%.2f ns/elem", t / n }' ;;
        *) echo "" ;;
    esac
}

# Every benchmark that has results: groups in a fixed order, then by case
# (1MB before 100KB), then mailstorm, smtp-proto, other smtp-proto paths, memmem.
ids=()
gi=0
while IFS= read -r line; do
    ids+=("${line##* }")
done < <(
    for group in commands data_discard data_unstuff replies ehlo_caps; do
        gi=$((gi + 1))
        [[ -d $crit/$group ]] || continue
        find "$crit/$group" -path '*/new/estimates.json' | while IFS= read -r f; do
            id="${f#"$crit"/}"
            id="${id%/new/estimates.json}"
            rest="${id#*/}"
            impl="${rest%%/*}"
            param=""
            [[ $rest == */* ]] && param="${rest#*/}"
            case "$impl" in
                mailstorm) io=1 ;; smtp-proto) io=2 ;; memmem) io=4 ;; *) io=3 ;;
            esac
            case "$param" in
                1MB) po=1 ;; 100KB) po=2 ;; single) po=1 ;; ehlo11) po=2 ;; *) po=9 ;;
            esac
            echo "$gi $po $io $id"
        done
    done | sort -k1,1n -k2,2n -k3,3n
)

echo "| benchmark | median | per element / GB/s | ratio | vs |"
echo "|---|---|---|---|---|"
for id in "${ids[@]}"; do
    [[ $id == */report* ]] && continue
    ns=$(median "$id")
    [[ -n $ns ]] || continue
    tp=$(throughput "$id")
    # Reference: memmem for discard, smtp-proto otherwise (same case).
    group="${id%%/*}"
    rest="${id#*/}"
    impl="${rest%%/*}"
    param=""
    [[ $rest == */* ]] && param="/${rest#*/}"
    ref_impl=smtp-proto
    [[ $group == data_discard ]] && ref_impl=memmem
    ratio="" vs=""
    if [[ $impl != "$ref_impl" ]]; then
        ref_ns=$(median "$group/$ref_impl$param")
        if [[ -n $ref_ns ]]; then
            ratio=$(awk -v a="$ns" -v b="$ref_ns" 'BEGIN { printf "%.2fx", a / b }')
            vs="$ref_impl (time ratio)"
        fi
    fi
    tps=""
    [[ -n $tp ]] && tps=$(fmt_tp "$ns" "$tp")
    echo "| $id | $(fmt_time "$ns") | $tps | $ratio | $vs |"
done
