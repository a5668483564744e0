#!/usr/bin/env bash
# fleet-perf.sh N measures one fleet rollout at scale, as docs/performance.md
# reports it: a fresh mosquitto on a free loopback port, N simulated nodes
# (edgectl simulate: real MQTT sessions, a stand-in inference backend with a
# 300 ms "download" and a 500 ms gate), then one rollout in 4 waves driven by
# a separate edgectl process under /usr/bin/time (controller CPU and memory),
# with the broker's $SYS counters read before and after (bytes and messages).
# Needs: mosquitto, mosquitto-clients, /usr/bin/time (Debian package time).
set -euo pipefail
N=${1:?usage: fleet-perf.sh N}
root=$(cd "$(dirname "$0")/.." && pwd)
D=$(mktemp -d)
trap 'kill $SIM $MQ 2>/dev/null || true; rm -rf "$D"' EXIT
cd "$root" && go build -o "$D/edgectl" ./cmd/edgectl
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$D/mq.conf" <<EOC
listener $PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 100000
max_inflight_messages 0
sys_interval 1
EOC
/usr/sbin/mosquitto -c "$D/mq.conf" 2>/dev/null & MQ=$!
sleep 0.5
B="--broker tcp://127.0.0.1:$PORT"
"$D/edgectl" $B simulate --nodes "$N" --initial det=1 --download 300ms --gate 500ms --groups cams > "$D/sim.log" 2>&1 & SIM=$!
for _ in $(seq 1 120); do grep -q connected "$D/sim.log" && break; sleep 0.5; done
sleep 2
sys() { timeout 3 mosquitto_sub -p "$PORT" -C 4 -v -t '$SYS/broker/messages/received' -t '$SYS/broker/messages/sent' -t '$SYS/broker/bytes/received' -t '$SYS/broker/bytes/sent' | sort; }
sys > "$D/sys0"
/usr/bin/time -v "$D/edgectl" $B --retained-wait 1s rollout --state "$D/r.db" start --id perf --model det --version 2 --target cams --no-progress > "$D/ctl.out" 2> "$D/ctl.time"
sleep 2.5
sys > "$D/sys1"
echo "N=$N"
grep -E "from wave 1|completed," "$D/ctl.out" || true
grep -E "User time|System time|Maximum resident|Elapsed" "$D/ctl.time"
paste "$D/sys0" "$D/sys1" | awk -v n="$N" '{printf "%s %d (%.1f per node)\n", $1, $4-$2, ($4-$2)/n}'
