#!/usr/bin/env bash
# test-deps.sh installs the system packages the integration tests use when they
# are missing: mosquitto (a real MQTT broker; tests start it on a free loopback
# port with a generated config) and mosquitto-clients (the transfer baseline).
set -euo pipefail
need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
echo "test-deps: installing ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The package starts a system broker on :1883; tests use their own ports, and the
# node's embedded broker wants 1883 on a single device, so stop it.
$sudo systemctl disable --now mosquitto >/dev/null 2>&1 || $sudo service mosquitto stop >/dev/null 2>&1 || true
