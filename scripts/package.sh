#!/usr/bin/env bash
# package.sh makes the .deb and .rpm of each release archive in dist/ with
# nfpm (github.com/goreleaser/nfpm/v2, run at a pinned version through the Go
# module proxy; the recipe is deploy/packaging/nfpm.yaml):
#   dist/edge-node_<version>_<arch>.deb, dist/edge-node-<version>.<arch>.rpm
# and adds them to dist/SHA256SUMS. The packages carry the archive's own
# files (binaries built for glibc >= 2.31), with the systemd unit's paths
# moved from /usr/local to /usr.
# Usage: scripts/package.sh [archive...]   (default: the newest dist/ archive of each arch)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}
nfpm=$("$root/scripts/tool.sh" nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0)
archives=("$@")
if [ ${#archives[@]} -eq 0 ]; then
  for arch in amd64 arm64; do
    a=$(ls -t dist/edge-node-*-linux-$arch.tar.gz 2>/dev/null | head -1)
    [ -n "$a" ] || { echo "package: no $arch archive: run make dist" >&2; exit 1; }
    archives+=("$a")
  done
fi

# A package version starts with a digit and has no '-' (deb keeps '-' for the
# revision): v1.2.3 -> 1.2.3; an untagged build 38880b5-dirty -> 0.0.0~git38880b5.dirty
# ('~' sorts before any release, in dpkg and rpm alike).
pkg_version() {
  local v=${1#v}
  if [[ $v =~ ^[0-9]+\.[0-9]+ ]]; then echo "${v//-/.}"; else echo "0.0.0~git${v//-/.}"; fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for archive in "${archives[@]}"; do
  base=$(basename "$archive" .tar.gz)           # edge-node-<version>-linux-<arch>
  arch=${base##*-linux-}
  version=${base#edge-node-}; version=${version%-linux-*}
  rm -rf "$work/stage"; mkdir -p "$work/stage"
  tar -xzf "$archive" -C "$work/stage" --strip-components=1
  sed -e 's|/usr/local/bin/edge-node|/usr/bin/edge-node|g' -e 's|/usr/local/lib/edge-node/|/usr/lib/edge-node/|g' \
    "$work/stage/systemd/edge-node.service" > "$work/stage/edge-node.service"
  if grep -n /usr/local "$work/stage/edge-node.service" >&2; then
    echo "package: the unit still names /usr/local" >&2; exit 1
  fi
  install -m 0755 -d "$work/stage/packaging"
  install -m 0755 deploy/packaging/*.sh "$work/stage/packaging/"
  for packager in deb rpm; do
    echo "package: $packager for $base" >&2
    # nfpm resolves the recipe's src paths from its working folder: the stage.
    (cd "$work/stage" && PKG_ARCH=$arch PKG_VERSION=$(pkg_version "$version") \
      "$nfpm" package --config "$root/deploy/packaging/nfpm.yaml" --packager $packager --target "$root/dist/") >&2
  done
done
(cd dist && sha256sum edge-node-*.tar.gz edge-node*.deb edge-node*.rpm > SHA256SUMS)
ls -1 dist/*.deb dist/*.rpm >&2
