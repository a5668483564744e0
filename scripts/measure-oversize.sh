#!/bin/bash
# measure-oversize.sh: peak RSS of a real edge-node (serving the sample models from the model
# repository) receiving one 200 MiB message on its desired topic.
set -e
BIN=${BIN:-bin}  # make build
W=$(mktemp -d)
PORT=18839
printf 'listener %d 127.0.0.1\nallow_anonymous true\n' $PORT > $W/m.conf
mosquitto -c $W/m.conf >$W/m.log 2>&1 & MPID=$!
sleep 0.5
$BIN/edge-node --http-addr 127.0.0.1:18080 --grpc-addr "" --broker tcp://127.0.0.1:$PORT --node-id n1 \
  --model-repository .cache/models --ort-lib .cache/libonnxruntime.so --data-dir $W/data >$W/node.log 2>&1 & NPID=$!
for i in $(seq 100); do curl -sf 127.0.0.1:18080/v2/health/ready >/dev/null && break; sleep 0.2; done
for i in $(seq 50); do curl -s 127.0.0.1:18080/metrics | grep -q '^edge_link_connected 1' && break; sleep 0.2; done
sleep 2
B=$(awk '/VmHWM/{print $2}' /proc/$NPID/status); R=$(awk '/VmRSS/{print $2}' /proc/$NPID/status)
truncate -s 200M $W/big.bin
mosquitto_pub -h 127.0.0.1 -p $PORT -t edgeai/v1/nodes/n1/desired -q 1 -f $W/big.bin
for i in $(seq 100); do curl -s 127.0.0.1:18080/metrics | grep -q 'edge_link_rejected_total{kind="desired",reason="oversize"} 1' && break; sleep 0.2; done
A=$(awk '/VmHWM/{print $2}' /proc/$NPID/status)
echo "edge-node VmHWM before: $B kB (VmRSS $R kB), after a 200 MiB desired message: $A kB (+$((A-B)) kB)"
curl -s 127.0.0.1:18080/metrics | grep -E 'edge_link_rejected_total\{kind="desired",reason="oversize"\}|^edge_link_connected|edge_link_oversize'
curl -sf 127.0.0.1:18080/v2/health/ready && echo ready
kill $NPID; wait $NPID 2>/dev/null || true; kill $MPID; rm -rf $W
