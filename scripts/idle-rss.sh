#!/usr/bin/env bash
# Memory under many idle connections: opens N connections to mailstorm-sink
# (each reads the greeting and sends EHLO, then stays idle), and reports the
# sink's resident set size (VmRSS from /proc/PID/status) before and after.
#
#   scripts/idle-rss.sh            # N=10000
#   N=2000 scripts/idle-rss.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${N:-10000}"
PORT="${PORT:-26030}"
THREADS="${THREADS:-2}"
cargo build --release -q -p mailstorm-sink
ulimit -n "$(ulimit -Hn)"

target/release/mailstorm-sink --listen "127.0.0.1:$PORT" --threads "$THREADS" \
    --control off --quiet --max-connections 0 --idle-timeout 10m &
SINK=$!
trap 'kill $SINK 2>/dev/null || true; wait $SINK 2>/dev/null || true' EXIT
deadline=$((SECONDS + 10))
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "sink did not start" >&2; exit 1; }
    sleep 0.05
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$SINK/status"; }
before=$(rss)

# The client holds every connection open until the sink's RSS is read, then
# exits; everything is bounded by a timeout.
timeout 120 python3 - "$PORT" "$N" "$SINK" "$before" <<'PY'
import asyncio, resource, sys
port, n, sink, before = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

async def one(sem, conns):
    async with sem:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await r.readline()                      # 220 greeting
        w.write(b"EHLO idle.test\r\n")
        while not (await r.readline()).startswith(b"250 "):
            pass
        conns.append((r, w))

def rss_kib():
    for line in open(f"/proc/{sink}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])

async def main():
    conns, sem = [], asyncio.Semaphore(500)
    await asyncio.gather(*(one(sem, conns) for _ in range(n)))
    after = rss_kib()
    print(f"idle connections: {len(conns)}")
    print(f"sink RSS before: {before/1024:.1f} MiB, with {len(conns)} idle: {after/1024:.1f} MiB, "
          f"per connection: {(after-before)*1024/len(conns):.0f} bytes")
    for _, w in conns:
        w.close()

asyncio.run(main())
PY
