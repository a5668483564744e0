# smoke.sh is sourced by dist-test.sh and package-test.sh: the one check that
# an installed edge-node serves, shared by both.
#   free_port                 a free loopback TCP port
#   wait_ready PORT PID LOG   wait until /v2/health/ready answers 200, or fail
#                             (printing LOG) when PID exits or 300 s pass
#   infer_silero PORT LOG     one KServe v2 inference on silero_vad; fails
#                             (printing LOG) unless HTTP 200 with an output
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() {
  local port=$1 pid=$2 log=$3
  # ONNX Runtime under emulation starts slowly.
  for _ in $(seq 1 600); do
    if ! kill -0 "$pid" 2>/dev/null; then echo "smoke: edge-node exited:" >&2; cat "$log" >&2; return 1; fi
    [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/v2/health/ready")" = 200 ] && return 0
    sleep 0.5
  done
  echo "smoke: edge-node not ready after 300 s:" >&2; cat "$log" >&2; return 1
}

infer_silero() {
  local port=$1 log=$2 body resp code
  zeros() { printf 0; for ((i = 1; i < $1; i++)); do printf ,0; done; }
  body='{"inputs":[{"name":"input","datatype":"FP32","shape":[1,512],"data":['"$(zeros 512)"']},
   {"name":"sr","datatype":"INT64","shape":[],"data":[16000]},
   {"name":"h","datatype":"FP32","shape":[2,1,64],"data":['"$(zeros 128)"']},
   {"name":"c","datatype":"FP32","shape":[2,1,64],"data":['"$(zeros 128)"']}],"outputs":[{"name":"output"}]}'
  resp=$(curl -s -w '\n%{http_code}' "127.0.0.1:$port/v2/models/silero_vad/infer" -d "$body")
  code=${resp##*$'\n'}; resp=${resp%$'\n'*}
  echo "smoke: infer -> HTTP $code: $resp" >&2
  if [ "$code" != 200 ] || ! grep -q '"name":"output"' <<<"$resp"; then
    echo "smoke: inference failed" >&2; cat "$log" >&2; return 1
  fi
  grep -o '"onnxruntime":"[^"]*"' "$log" | head -1 >&2 || true
}
