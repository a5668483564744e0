#!/usr/bin/env bash
# test-deps.sh installs the Debian packages the tests use when they are
# missing:
#   mosquitto, mosquitto-clients  a real MQTT broker (tests start their own on a
#                                 free loopback port) and the transfer baseline
#   gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, libstdc++6-arm64-cross,
#   qemu-user-static              the arm64 release archive is cross-built and
#                                 run under qemu-user by `make dist-test`
#   debootstrap, rpm              `make package-test` installs the .deb and .rpm
#                                 into a debootstrap'd Debian root
#   openssh-client                `make sign-test` signs SHA256SUMS (ssh-keygen -Y)
#   buildah, iproute2            `make image-test` builds the container image
#                                 (--isolation chroot) and runs its edge-node in
#                                 a network namespace of its own
#   python3-onnx                  sync/transfer/testdata/finetune.py makes the
#                                 one-tensor fine-tune of ppocr_det (node and
#                                 transfer measurements)
#   chromium                      headless, for the operator page's screenshot test
#   etcd-server                   the ModelVersion controller's tests run a real
#                                 etcd and kube-apiserver (scripts/kube-assets.sh)
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in mosquitto mosquitto-clients gcc-aarch64-linux-gnu libc6-dev-arm64-cross libstdc++6-arm64-cross qemu-user-static debootstrap rpm openssh-client buildah iproute2 python3-onnx chromium etcd-server; do
  have "$p" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
echo "test-deps: installing ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The mosquitto package may start a system broker on :1883; tests use their
# own ports, and the node's embedded broker wants 1883 on a single device.
$sudo systemctl disable --now mosquitto >/dev/null 2>&1 || $sudo service mosquitto stop >/dev/null 2>&1 || true
# Likewise etcd on :2379; the tests start their own.
$sudo systemctl disable --now etcd >/dev/null 2>&1 || $sudo service etcd stop >/dev/null 2>&1 || true
