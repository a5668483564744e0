#!/usr/bin/env bash
# dist.sh builds release archives for linux/amd64 and linux/arm64 into dist/:
#   dist/edge-node-<version>-linux-<arch>.tar.gz with
#     bin/edge-node, bin/edgectl (edge-controller runs in the cluster, not on nodes: deploy/kubernetes/),
#     lib/libonnxruntime.so.1 (the same onnxruntime-node npm package, per arch),
#     systemd/edge-node.service, systemd/edge-node.sysusers, config.example.yaml, README.txt,
#     LICENSE, THIRD_PARTY_NOTICES,
#     sbom/edge-node.cdx.json, sbom/edgectl.cdx.json (CycloneDX 1.6 SBOMs: the
#       Go modules linked into each binary, scripts/sbom.sh; edge-node's
#       also lists the ONNX Runtime library)
#   dist/SHA256SUMS
# The cgo parts (cgo/pinned) are cross-compiled with Debian's
# gcc-aarch64-linux-gnu; ONNX Runtime is loaded at run time (dlopen), so no
# ONNX Runtime headers or libraries are needed at build time.
# Both architectures link against a Debian 11 sysroot (glibc 2.31,
# scripts/sysroot.sh) instead of the host's glibc, so the binaries run on
# glibc >= 2.31 (Ubuntu 20.04, JetPack 5); every ELF file in an archive is
# checked against that floor (scripts/glibc-floor.sh; GLIBC_MAX), and
# dist-test runs the archives on the sysroot's own glibc.
# Usage: scripts/dist.sh [arch...]   (default: amd64 arm64)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}
cache=${EDGE_CACHE_DIR:-$root/.cache}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64)
out=$root/dist
mkdir -p "$out"
glibc_max=${GLIBC_MAX:-2.31}

# e_machine of an ELF file (bytes 18-19, little-endian): 62 x86-64, 183 aarch64.
elf_machine() { od -An -t u2 -j 18 -N 2 "$1" | tr -d ' '; }

for arch in "${archs[@]}"; do
  case $arch in
    amd64) lib=linux-x64; cc=${CC_AMD64:-gcc}; machine=62; triplet=x86_64-linux-gnu ;;
    arm64) lib=linux-arm64; cc=${CC_ARM64:-aarch64-linux-gnu-gcc}; machine=183; triplet=aarch64-linux-gnu ;;
    *) echo "dist: unsupported arch $arch" >&2; exit 1 ;;
  esac
  if [ "$arch" = amd64 ] && [ "$(uname -m)" = aarch64 ]; then cc=${CC_AMD64:-x86_64-linux-gnu-gcc}; fi
  command -v "$cc" >/dev/null || { echo "dist: $cc not found (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)" >&2; exit 1; }
  so=$cache/lib/$lib/libonnxruntime.so.1
  [ -f "$so" ] || { echo "dist: $so missing: run make setup" >&2; exit 1; }
  [ "$(elf_machine "$so")" = $machine ] || { echo "dist: $so is not a $arch library" >&2; exit 1; }
  sysroot=$("$root/scripts/sysroot.sh" "$arch")
  # -B puts the sysroot's crt files and libraries before the compiler's
  # built-in multiarch paths (which are the host's); -isystem does the same
  # for headers (Debian's cross gcc searches /usr/<triplet>/include first).
  sysflags="--sysroot=$sysroot -B$sysroot/usr/lib/$triplet/ -isystem $sysroot/usr/include/$triplet -isystem $sysroot/usr/include"

  name=edge-node-$version-linux-$arch
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/$name/bin" "$stage/$name/lib" "$stage/$name/systemd"
  echo "dist: building $name (CC=$cc, glibc 2.31 sysroot)" >&2
  CGO_ENABLED=1 GOOS=linux GOARCH=$arch CC="$cc $sysflags" \
    "$GO" build -trimpath -ldflags "-s -w -X github.com/edgeai/edge-node/internal/buildinfo.version=$version" -o "$stage/$name/bin/" ./cmd/edge-node ./cmd/edgectl
  for b in "$stage/$name"/bin/*; do
    [ "$(elf_machine "$b")" = $machine ] || { echo "dist: $b is not a $arch binary" >&2; exit 1; }
  done
  install -m 0644 "$so" "$stage/$name/lib/libonnxruntime.so.1"
  "$root/scripts/glibc-floor.sh" "$glibc_max" "$stage/$name"/bin/* "$stage/$name/lib/libonnxruntime.so.1" ||
    { echo "dist: $name needs a glibc newer than $glibc_max" >&2; exit 1; }
  "$root/scripts/sbom.sh" "$stage/$name/bin/edge-node" "$arch" "$version" "$stage/$name/sbom/edge-node.cdx.json" "$so"
  "$root/scripts/sbom.sh" "$stage/$name/bin/edgectl" "$arch" "$version" "$stage/$name/sbom/edgectl.cdx.json"
  install -m 0644 deploy/systemd/edge-node.service deploy/systemd/edge-node.sysusers "$stage/$name/systemd/"
  install -m 0644 deploy/config.example.yaml "$stage/$name/config.example.yaml"
  install -m 0644 LICENSE THIRD_PARTY_NOTICES "$stage/$name/"
  cat > "$stage/$name/README.txt" <<TXT
edge-node $version for linux/$arch. Install (see docs/operations.md):
  install -m 0755 bin/edge-node /usr/local/bin/
  install -D -m 0644 lib/libonnxruntime.so.1 /usr/local/lib/edge-node/libonnxruntime.so.1
  install -D -m 0644 systemd/edge-node.sysusers /usr/lib/sysusers.d/edge-node.conf && systemd-sysusers
  install -D -m 0640 -g edge-node config.example.yaml /etc/edge-node/config.yaml
  install -d -m 0700 /etc/edge-node/credentials   # broker_password, admin_token (0600)
  install -m 0644 systemd/edge-node.service /etc/systemd/system/ && systemctl enable --now edge-node
TXT
  tar -C "$stage" --owner=0 --group=0 --sort=name -czf "$out/$name.tar.gz" "$name"
  rm -rf "$stage"; trap - EXIT
  echo "dist: $out/$name.tar.gz" >&2
done
(cd "$out" && sha256sum edge-node-*.tar.gz > SHA256SUMS)
