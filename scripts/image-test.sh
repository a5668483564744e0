#!/usr/bin/env bash
# image-test.sh builds deploy/kubeedge/Dockerfile (edge-node) and
# deploy/kubernetes/Dockerfile (edge-controller) for linux/amd64 with buildah
# (--isolation chroot: no container runtime is needed) and checks what the
# edge-node image gives an operator:
#   - its configuration: a non-root user (10001), the HEALTHCHECK on
#     /v2/health/ready, the entrypoint, ONNXRUNTIME_LIB, port 8080, the store
#     volume;
#   - its files: LICENSE, THIRD_PARTY_NOTICES and an SBOM that lists every
#     module linked into the image's edge-node and the image's ONNX Runtime
#     library by hash (scripts/sbom-check.sh); /var/lib/edge-node owned by
#     10001, 0750;
#   - the image's edge-node prints the build's version, and, started from
#     the image's root filesystem as its user with its environment, in a
#     network namespace of its own (so the HEALTHCHECK's fixed port 8080 is
#     free), fails the HEALTHCHECK before it is up, passes it once models
#     are loaded, and answers one KServe v2 inference (silero_vad);
# and the edge-controller image's user (65532, the Deployment's), notices and
# SBOM, its --version, and a fast failure naming an unreachable broker.
# No image registry is reachable here, so the two bases the Dockerfile names
# are made locally under those names, in a private image store
# (.cache/containers, vfs driver): debian:bookworm-slim from the cached
# debootstrap root (scripts/debian-root.sh), golang:1.26-bookworm from that
# plus gcc and this machine's Go toolchain. The build itself fetches Go
# modules and Debian packages as it would anywhere.
# Needs root (chroot, mount, unshare) and buildah (Debian package).
# Usage: scripts/image-test.sh   (IMAGE_TEST_KEEP=1 keeps the image and its
# container for a look: buildah --root .cache/containers/storage ...)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EDGE_CACHE_DIR:-$root/.cache}
GO=${GO:-go}
# shellcheck source=smoke.sh
. "$root/scripts/smoke.sh"
fail() { echo "image-test: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (buildah --isolation chroot, chroot, unshare)"
for c in buildah unshare chroot ip; do
  command -v $c >/dev/null || fail "$c not found (apt-get install buildah iproute2)"
done
[ "$(uname -m)" = x86_64 ] || fail "builds and runs the linux/amd64 image: needs an x86_64 host"
model=$cache/models/silero_vad/1/model.onnx
[ -f "$model" ] && [ -f "$cache/lib/linux-x64/libonnxruntime.so.1" ] || fail "run make setup first"
dockerfile=$root/deploy/kubeedge/Dockerfile
version=${VERSION:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)}

store=$cache/containers
b() { buildah --root "$store/storage" --runroot "$store/run" --storage-driver vfs "$@"; }
# The bases, by the names the Dockerfile gives them.
debian_ref=$(sed -n 's/^FROM \(docker\.io\/library\/debian:[^ ]*\).*/\1/p' "$dockerfile")
golang_ref=$(sed -n 's/^FROM .*\(docker\.io\/library\/golang:[^ ]*\).*/\1/p' "$dockerfile")
[ -n "$debian_ref" ] && [ -n "$golang_ref" ] || fail "the Dockerfile names no docker.io/library/debian and golang bases"
gotag=${golang_ref#*golang:}; gotag=${gotag%%-*}
goversion=$("$GO" env GOVERSION)
case $goversion in go"$gotag"|go"$gotag".*) ;; *) fail "the Dockerfile builds with Go $gotag, this machine has $goversion" ;; esac

debian_tar=$("$root/scripts/debian-root.sh")
# A base is made again when what it is made from changes.
key=$( { sha256sum "$debian_tar" | cut -c1-16; echo "$goversion"; } | sha256sum | cut -c1-16)
has() { [ "$(b inspect --type image --format '{{index .ImageAnnotations "edge-node.base-key"}}' "$1" 2>/dev/null)" = "$key" ]; }
if ! has "$debian_ref"; then
  echo "image-test: making $debian_ref from $(basename "$debian_tar")" >&2
  c=$(b from scratch)
  b add "$c" "$debian_tar" / >/dev/null
  b config --cmd /bin/bash --annotation edge-node.base-key="$key" "$c"
  b commit -q --rm "$c" "$debian_ref" >/dev/null
fi
if ! has "$golang_ref"; then
  echo "image-test: making $golang_ref ($goversion from $("$GO" env GOROOT), gcc from Debian)" >&2
  c=$(b from --pull=never "$debian_ref")
  b run --isolation chroot "$c" -- sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*'
  b copy "$c" "$("$GO" env GOROOT)" /usr/local/go
  # This machine's CA bundle: a network that inspects TLS adds its own CA.
  b copy "$c" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
  b config --env PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env GOPATH=/go --env GOTOOLCHAIN=local --env GOPROXY="$("$GO" env GOPROXY)" --env GOSUMDB="$("$GO" env GOSUMDB)" \
    --annotation edge-node.base-key="$key" "$c"
  b commit -q --rm "$c" "$golang_ref" >/dev/null
fi

image=localhost/edge-node:image-test
echo "image-test: building $image ($version) from deploy/kubeedge/Dockerfile" >&2
start=$(date +%s)
work=$(mktemp -d)
b bud --isolation chroot --pull=never --format docker --layers=false --platform linux/amd64 \
  --build-context ort="$cache/lib" --build-arg VERSION="$version" -f "$dockerfile" -t "$image" "$root" > "$work/build.log" 2>&1 ||
  { tail -40 "$work/build.log" >&2; rm -rf "$work"; fail "buildah bud failed (above)"; }
echo "image-test: built in $(( $(date +%s) - start )) s" >&2
ctr=
mnt=
cctr=
cimage=localhost/edge-controller:image-test
cleanup() {
  local rc=$?
  set +e
  if [ -n "$mnt" ]; then
    for p in $(in_root 2>/dev/null); do kill -9 "$p"; done
  fi
  [ -n "$mnt" ] && mountpoint -q "$mnt/proc" && umount "$mnt/proc"
  if [ -z "${IMAGE_TEST_KEEP:-}" ]; then
    for c in $ctr $cctr; do b rm "$c" >/dev/null 2>&1; done
    b rmi "$image" "$cimage" >/dev/null 2>&1
  fi
  b rmi --prune >/dev/null 2>&1
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# The configuration the image carries (docker format: with the HEALTHCHECK).
b inspect --type image "$image" > "$work/inspect.json"
python3 - "$work/inspect.json" "$work/env" > "$work/health.cmd" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["Docker"]["config"]
def need(ok, what):
    if not ok:
        sys.exit(f"image-test: the image's {what}: {json.dumps(c, indent=1)}")
need(c.get("User") == "10001:10001", "user is not 10001:10001")
need(c.get("Entrypoint") == ["/usr/local/bin/edge-node"], "entrypoint is not /usr/local/bin/edge-node")
need("ONNXRUNTIME_LIB=/usr/lib/edge-node/libonnxruntime.so.1" in c.get("Env", []), "environment lacks ONNXRUNTIME_LIB")
need("8080/tcp" in (c.get("ExposedPorts") or {}), "exposed ports lack 8080/tcp")
need("/var/lib/edge-node" in (c.get("Volumes") or {}), "volumes lack /var/lib/edge-node")
h = c.get("Healthcheck") or {}
need(h.get("Test", [""])[0] == "CMD" and "/v2/health/ready" in " ".join(h["Test"]), "HEALTHCHECK is not a CMD on /v2/health/ready")
# The HEALTHCHECK's command, NUL-separated, and the environment, a line each,
# to run them as the image would.
sys.stdout.write("\0".join(h["Test"][1:]))
open(sys.argv[2], "w").write("\n".join(c.get("Env", [])) + "\n")
PY

ctr=$(b from --pull=never "$image")
mnt=$(b mount "$ctr")
for f in LICENSE THIRD_PARTY_NOTICES sbom/edge-node.cdx.json; do
  [ -s "$mnt/usr/share/doc/edge-node/$f" ] || fail "the image lacks /usr/share/doc/edge-node/$f"
done
"$root/scripts/sbom-check.sh" "$mnt/usr/share/doc/edge-node/sbom/edge-node.cdx.json" "$mnt/usr/local/bin/edge-node" "$mnt/usr/lib/edge-node/libonnxruntime.so.1"
[ "$(stat -c '%u:%g %a' "$mnt/var/lib/edge-node")" = "10001:10001 750" ] ||
  fail "/var/lib/edge-node is $(stat -c '%u:%g %a' "$mnt/var/lib/edge-node"), want 10001:10001 750"
# image_exec CMD...: become CMD inside the image's root, as its user, with its
# environment (chroot and env exec in turn, so started in the background its
# pid is CMD's own); in_image runs it in a subshell.
image_exec() {
  local env
  mapfile -t env < "$work/env"
  exec chroot --userspec=10001:10001 "$mnt" env -i "${env[@]}" HOME=/var/lib/edge-node "$@"
}
in_image() { (image_exec "$@"); }
# in_root: the processes running inside the image's root (none may be left).
in_root() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$mnt" ] && echo "${p#/proc/}"
  done
  return 0
}
got=$(in_image /usr/local/bin/edge-node --version)
grep -qF "$version" <<<"$got" || fail "edge-node --version in the image says \"$got\", want $version"
echo "image-test: edge-node --version: $got" >&2

mkdir -p "$mnt/opt/models/silero_vad/1"
cp "$model" "$mnt/opt/models/silero_vad/1/model.onnx"
mount -t proc proc "$mnt/proc"
export -f image_exec in_image wait_ready infer_silero fail
export mnt work
# In a network namespace of its own: the HEALTHCHECK names port 8080.
unshare --net bash -c '
  set -euo pipefail
  ip link set lo up
  mapfile -d "" health < "$work/health.cmd"
  healthy() { in_image "${health[@]}" >/dev/null 2>&1; }
  ! healthy || fail "the HEALTHCHECK passes before edge-node runs"
  image_exec /usr/local/bin/edge-node --http-addr 127.0.0.1:8080 --grpc-addr "" --model-repository /opt/models \
    --data-dir /var/lib/edge-node --log-format json > "$work/node.log" 2>&1 &
  pid=$!
  trap "kill $pid 2>/dev/null; wait $pid 2>/dev/null || true" EXIT
  wait_ready 8080 "$pid" "$work/node.log"
  healthy || { cat "$work/node.log" >&2; fail "the HEALTHCHECK fails on a ready edge-node"; }
  echo "image-test: the HEALTHCHECK fails before start and passes when ready" >&2
  infer_silero 8080 "$work/node.log"
' || fail "the image's edge-node did not serve (above)"
left=$(in_root)
[ -z "$left" ] || fail "processes left running in the image's root after the test: $left ($(ps -o cmd= -p "${left%%$'\n'*}"))"
echo "image-test: ok: $image ($version) serves as 10001 with its HEALTHCHECK, SBOM and notices" >&2

# The edge-controller image (deploy/kubernetes/Dockerfile): pure Go, the
# Deployment's user, its SBOM; its binary runs from the image's root and
# fails fast, saying why, on an unreachable broker.
start=$(date +%s)
b bud --isolation chroot --pull=never --format docker --layers=false --platform linux/amd64 \
  --build-arg VERSION="$version" -f "$root/deploy/kubernetes/Dockerfile" -t "$cimage" "$root" > "$work/cbuild.log" 2>&1 ||
  { tail -40 "$work/cbuild.log" >&2; fail "buildah bud of deploy/kubernetes/Dockerfile failed (above)"; }
echo "image-test: $cimage built in $(( $(date +%s) - start )) s" >&2
b inspect --type image "$cimage" > "$work/cinspect.json"
python3 - "$work/cinspect.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["Docker"]["config"]
want = {"User": "65532:65532", "Entrypoint": ["/usr/local/bin/edge-controller"]}
for k, v in want.items():
    if c.get(k) != v:
        sys.exit(f"image-test: the edge-controller image's {k} is {c.get(k)!r}, want {v!r}")
PY
cctr=$(b from --pull=never "$cimage")
cmnt=$(b mount "$cctr")
for f in LICENSE THIRD_PARTY_NOTICES sbom/edge-controller.cdx.json; do
  [ -s "$cmnt/usr/share/doc/edge-controller/$f" ] || fail "the edge-controller image lacks /usr/share/doc/edge-controller/$f"
done
"$root/scripts/sbom-check.sh" "$cmnt/usr/share/doc/edge-controller/sbom/edge-controller.cdx.json" "$cmnt/usr/local/bin/edge-controller"
got=$(chroot --userspec=65532:65532 "$cmnt" /usr/local/bin/edge-controller --version)
grep -qF "$version" <<<"$got" || fail "edge-controller --version in the image says \"$got\", want $version"
echo "image-test: edge-controller --version: $got" >&2
if out=$(chroot --userspec=65532:65532 "$cmnt" timeout 30 /usr/local/bin/edge-controller --broker tcp://127.0.0.1:1 --connect-timeout 2s 2>&1); then
  fail "edge-controller with an unreachable broker exited 0: $out"
fi
grep -q "127.0.0.1:1" <<<"$out" || fail "edge-controller with an unreachable broker did not name it: $out"
echo "image-test: edge-controller on an unreachable broker: $out" >&2
echo "image-test: ok: $cimage ($version) runs as 65532 with its SBOM and notices" >&2
