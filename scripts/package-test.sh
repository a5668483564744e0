#!/usr/bin/env bash
# package-test.sh installs the amd64 .deb and .rpm of scripts/package.sh for
# real, each into its own copy of a minimal Debian 12 root (debootstrap
# --variant=minbase, made once and cached as .cache/debootstrap/*.tar), and
# checks what an operator gets:
#   - the maintainer scripts ran: the edge-node system user exists, the model
#     store /var/lib/edge-node is edge-node's (0750), /etc/edge-node/config.yaml
#     is root:edge-node 0640, the credentials folder root's 0700;
#   - the unit names the packaged paths (/usr/bin, /usr/lib/edge-node);
#   - the daemon starts from them as the edge-node user, with the packaged
#     config and library, and answers one KServe v2 inference (silero_vad);
#   - removing keeps the config (dpkg -r) and the model store; purging removes
#     the config (dpkg --purge); rpm -e removes the package.
# dpkg installs the .deb with its dependencies checked; rpm installs the .rpm
# with --nodeps (a Debian root has no RPM database of glibc), scripts run.
# There is no systemd in the root, so the scripts' systemctl branch is not
# taken; cmd/edge-node's TestSystemdUnit checks the unit with systemd-analyze.
# Needs root (chroot, mount) plus debootstrap and rpm (Debian packages).
# Usage: scripts/package-test.sh [dist-folder]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EDGE_CACHE_DIR:-$root/.cache}
dist=${1:-$root/dist}
# shellcheck source=smoke.sh
. "$root/scripts/smoke.sh"
[ "$(id -u)" = 0 ] || { echo "package-test: needs root (chroot into a Debian root)" >&2; exit 1; }
for c in rpm chroot; do
  command -v $c >/dev/null || { echo "package-test: $c not found (apt-get install rpm)" >&2; exit 1; }
done
deb=$(ls -t "$dist"/edge-node_*_amd64.deb 2>/dev/null | head -1)
rpm=$(ls -t "$dist"/edge-node-*.x86_64.rpm 2>/dev/null | head -1)
[ -n "$deb" ] && [ -n "$rpm" ] || { echo "package-test: no amd64 .deb and .rpm in $dist: run make package" >&2; exit 1; }
model=$cache/models/silero_vad/1/model.onnx
[ -f "$model" ] || { echo "package-test: $model missing: run make setup" >&2; exit 1; }

base=$("$root/scripts/debian-root.sh")

work=$(mktemp -d)
pid=
cleanup() {
  local rc=$?
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  for m in "$work"/*/proc; do mountpoint -q "$m" && umount "$m"; done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

fail() { echo "package-test: $*" >&2; exit 1; }
# want MODE OWNER:GROUP PATH, read inside the root (its own user names).
want() {
  local got
  got=$(chroot "$r" stat -c '%a %U:%G' "$3") || fail "$3 is missing"
  [ "$got" = "$1 $2" ] || fail "$3 is $got, want $1 $2"
}

# serve: start the installed daemon as it runs under the unit (the edge-node
# user, the packaged config and library, the store in /var/lib/edge-node),
# then one inference.
serve() {
  local port
  grep -q '^ExecStart=/usr/bin/edge-node --config /etc/edge-node/config.yaml$' "$r/usr/lib/systemd/system/edge-node.service" ||
    fail "the packaged unit's ExecStart is not /usr/bin/edge-node"
  grep -q '^Environment=ONNXRUNTIME_LIB=/usr/lib/edge-node/libonnxruntime.so.1$' "$r/usr/lib/systemd/system/edge-node.service" ||
    fail "the packaged unit's ONNXRUNTIME_LIB is not the packaged library"
  mkdir -p "$r/opt/models/silero_vad/1"
  cp "$model" "$r/opt/models/silero_vad/1/model.onnx"
  port=$(free_port)
  chroot --userspec=edge-node:edge-node "$r" /usr/bin/env -i HOME=/var/lib/edge-node \
    ONNXRUNTIME_LIB=/usr/lib/edge-node/libonnxruntime.so.1 \
    /usr/bin/edge-node --config /etc/edge-node/config.yaml --http-addr "127.0.0.1:$port" \
    --model-repository /opt/models --cloud-disabled --log-format json >"$work/$1.log" 2>&1 &
  pid=$!
  wait_ready "$port" "$pid" "$work/$1.log"
  infer_silero "$port" "$work/$1.log"
  [ -n "$(find "$r/var/lib/edge-node" -mindepth 1 -print -quit)" ] || fail "the daemon wrote nothing into /var/lib/edge-node"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}

installed() {
  chroot "$r" getent passwd edge-node | grep -q ':/var/lib/edge-node:/usr/sbin/nologin$' || fail "no edge-node system user"
  want 750 edge-node:edge-node /var/lib/edge-node
  want 640 root:edge-node /etc/edge-node/config.yaml
  want 700 root:root /etc/edge-node/credentials
  want 755 root:root /usr/bin/edge-node
  want 644 root:root /usr/lib/edge-node/libonnxruntime.so.1
  for f in LICENSE THIRD_PARTY_NOTICES sbom/edge-node.cdx.json sbom/edgectl.cdx.json; do
    [ -s "$r/usr/share/doc/edge-node/$f" ] || fail "no /usr/share/doc/edge-node/$f"
  done
  chroot "$r" /usr/bin/edge-node --version | grep -q '^edge-node ' || fail "edge-node --version"
}

newroot() {
  r=$work/$1
  mkdir -p "$r"
  tar -C "$r" -xf "$base"
  mount -t proc proc "$r/proc"
}

echo "package-test: dpkg -i $(basename "$deb")" >&2
newroot deb
cp "$deb" "$r/tmp/edge-node.deb"
chroot "$r" dpkg -i /tmp/edge-node.deb >&2 || fail "dpkg -i failed"
installed
serve deb
chroot "$r" dpkg -r edge-node >&2 || fail "dpkg -r failed"
[ ! -e "$r/usr/bin/edge-node" ] || fail "dpkg -r left /usr/bin/edge-node"
[ -f "$r/etc/edge-node/config.yaml" ] || fail "dpkg -r removed the config (a conffile stays until purge)"
chroot "$r" dpkg --purge edge-node >&2 || fail "dpkg --purge failed"
[ ! -e "$r/etc/edge-node" ] || fail "dpkg --purge left /etc/edge-node"
[ -d "$r/var/lib/edge-node" ] || fail "dpkg --purge removed the model store"
echo "package-test: .deb installed, served, removed and purged" >&2

echo "package-test: rpm -i --nodeps $(basename "$rpm")" >&2
newroot rpm
cp "$rpm" "$r/tmp/edge-node.rpm"
rpm --root "$r" --initdb
rpm --root "$r" -i --nodeps "$r/tmp/edge-node.rpm" >&2 || fail "rpm -i failed"
installed
serve rpm
rpm --root "$r" -e edge-node >&2 || fail "rpm -e failed"
[ ! -e "$r/usr/bin/edge-node" ] || fail "rpm -e left /usr/bin/edge-node"
[ -d "$r/var/lib/edge-node" ] || fail "rpm -e removed the model store"
echo "package-test: .rpm installed, served and removed" >&2
echo "package-test: ok" >&2
