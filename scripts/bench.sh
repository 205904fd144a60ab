#!/usr/bin/env bash
# End-to-end benchmark: Postfix's smtp-sink vs mailstorm-sink, side by side in
# one run, under the same client (Postfix's smtp-source).
#
#   scripts/bench.sh                 # 5 rounds of scenarios a b c d
#   ROUNDS=3 SCENARIOS="a b" scripts/bench.sh
#   SCALE=0.2 scripts/bench.sh       # shorter runs (fewer messages)
#
# Sink on CPU 0, client on CPU 1 (taskset), rounds interleaved so a slow phase
# of the host hits both sides; medians reported. CPU per message is the sink
# process's user+sys time (from /proc/PID/stat) divided by messages. On
# loopback the kernel's receive work runs on the *sender's* CPU, so compare
# CPU per message under the same client, as this script does.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROUNDS="${ROUNDS:-5}"
SCENARIOS="${SCENARIOS:-a b c d}"
SCALE="${SCALE:-1}"
SINK_CPU="${SINK_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
PORT_POSTFIX="${PORT_POSTFIX:-26025}"
PORT_MAILSTORM="${PORT_MAILSTORM:-26026}"
OUT="${OUT:-$ROOT/bench-results}"
mkdir -p "$OUT"

# --- prerequisites: Postfix's smtp-sink/smtp-source, installed non-interactively.
if ! command -v /usr/sbin/smtp-sink >/dev/null 2>&1; then
    echo "installing postfix (for smtp-sink/smtp-source)"
    printf '%s\n' 'postfix postfix/main_mailer_type select No configuration' \
        'postfix postfix/mailname string mailstorm.test' | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix
    /usr/sbin/postfix stop 2>/dev/null || true
fi
cargo build --release -q -p mailstorm-sink
MAILSTORM_SINK="$ROOT/target/release/mailstorm-sink"

# smtp-sink refuses to run as root without -u.
PF_USER_ARGS=()
[[ "$(id -u)" -eq 0 ]] && PF_USER_ARGS=(-u nobody)

# scenario -> "messages smtp-source-args"
scenario_args() {
    local n
    case "$1" in
        a) n=20000; echo "$(scaled $n) -s 50" ;;
        b) n=60000; echo "$(scaled $n) -d -s 50" ;;
        c) n=6000;  echo "$(scaled $n) -l 102400 -s 20" ;;
        d) n=12000; echo "$(scaled $n) -r 10 -s 50" ;;
        *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}
scaled() { python3 -c "print(max(200, int($1 * $SCALE)))"; }

wait_port() {
    local port=$1 deadline=$((SECONDS + 10))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "port $port did not open" >&2; return 1; }
        sleep 0.05
    done
}

# CPU ticks (user+sys) of a process, all threads included.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

start_sink() {
    case "$1" in
        postfix)
            taskset -c "$SINK_CPU" /usr/sbin/smtp-sink "${PF_USER_ARGS[@]}" "127.0.0.1:$PORT_POSTFIX" 4096 &
            SINK_PID=$!; SINK_PORT=$PORT_POSTFIX ;;
        mailstorm)
            taskset -c "$SINK_CPU" "$MAILSTORM_SINK" --listen "127.0.0.1:$PORT_MAILSTORM" \
                --threads 1 --control off --quiet &
            SINK_PID=$!; SINK_PORT=$PORT_MAILSTORM ;;
    esac
    wait_port "$SINK_PORT"
}

stop_sink() {
    kill "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
}

RESULTS="$OUT/bench-$(date +%Y%m%d-%H%M%S).tsv"
printf 'round\tscenario\tsink\tmessages\tseconds\tmsgs_per_s\tsink_us_per_msg\tclient_us_per_msg\n' >"$RESULTS"

run_one() { # round scenario sink
    local round=$1 sc=$2 sink=$3 args msgs
    args=$(scenario_args "$sc"); msgs=${args%% *}; args=${args#* }
    start_sink "$sink"
    local t0 t1 c0 c1 client_cpu
    c0=$(cpu_ticks "$SINK_PID")
    t0=$(date +%s.%N)
    # TIMEFORMAT gives the client's own user+sys seconds.
    client_cpu=$( { TIMEFORMAT='%U %S'; time taskset -c "$CLIENT_CPU" /usr/sbin/smtp-source \
        -m "$msgs" $args -M mailstorm.test "127.0.0.1:$SINK_PORT" >/dev/null; } 2>&1 | tail -1)
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$SINK_PID")
    stop_sink
    python3 - "$round" "$sc" "$sink" "$msgs" "$t0" "$t1" "$c0" "$c1" "$CLK_TCK" "$client_cpu" >>"$RESULTS" <<'PY'
import sys
r, sc, sink, msgs, t0, t1, c0, c1, tck, ccpu = sys.argv[1:]
msgs = int(msgs); secs = float(t1) - float(t0)
sink_us = (int(c1) - int(c0)) / int(tck) / msgs * 1e6
u, s = (float(x) for x in ccpu.split())
print(f"{r}\t{sc}\t{sink}\t{msgs}\t{secs:.3f}\t{msgs/secs:.0f}\t{sink_us:.1f}\t{(u+s)/msgs*1e6:.1f}")
PY
    tail -1 "$RESULTS"
}

trap 'stop_sink 2>/dev/null || true' EXIT
for round in $(seq 1 "$ROUNDS"); do
    for sc in $SCENARIOS; do
        # Alternate which sink goes first so drift in the host hits both.
        if ((round % 2)); then order="postfix mailstorm"; else order="mailstorm postfix"; fi
        for sink in $order; do run_one "$round" "$sc" "$sink"; done
    done
done

echo
echo "Medians over $ROUNDS rounds (sink on CPU $SINK_CPU, smtp-source on CPU $CLIENT_CPU); raw: $RESULTS"
python3 - "$RESULTS" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = {}
for r in rows:
    med.setdefault((r["scenario"], r["sink"]), []).append(r)
def m(key, col):
    return statistics.median(float(x[col]) for x in med[key])
names = {"a": "a: 1 msg/conn, 50 sessions", "b": "b: reused conns (-d), 50 sessions",
         "c": "c: 100 KB msgs, 20 sessions", "d": "d: 10 rcpts, 50 sessions"}
print("| scenario | smtp-sink msgs/s | mailstorm-sink msgs/s | ratio | smtp-sink CPU µs/msg | mailstorm-sink CPU µs/msg | CPU ratio |")
print("|---|---:|---:|---:|---:|---:|---:|")
for sc in sorted({k[0] for k in med}):
    p, s = (sc, "postfix"), (sc, "mailstorm")
    if p not in med or s not in med:
        continue
    pr, sr = m(p, "msgs_per_s"), m(s, "msgs_per_s")
    pc, scpu = m(p, "sink_us_per_msg"), m(s, "sink_us_per_msg")
    print(f"| {names.get(sc, sc)} | {pr:,.0f} | {sr:,.0f} | {sr/pr:.2f}x | {pc:.1f} | {scpu:.1f} | {scpu/pc:.2f}x |")
PY
