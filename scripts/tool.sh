#!/usr/bin/env bash
# tool.sh builds a Go command-line tool the release scripts run (not linked
# into the project) once, at a pinned version from the Go module proxy, into
# .cache/tools/<name>-<version>, and prints its path.
# Usage: scripts/tool.sh NAME PACKAGE@VERSION
#   e.g. scripts/tool.sh nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EDGE_CACHE_DIR:-$root/.cache}
name=${1:?usage: scripts/tool.sh NAME PACKAGE@VERSION}
pkg=${2:?usage: scripts/tool.sh NAME PACKAGE@VERSION}
version=${pkg##*@}
[ "$version" != "$pkg" ] || { echo "tool: $pkg has no @version" >&2; exit 2; }
bin=$cache/tools/$name-$version
if [ ! -x "$bin" ]; then
  echo "tool: building $name $version from the Go module proxy" >&2
  tmp=$(mktemp -d)
  GOBIN=$tmp "${GO:-go}" install "$pkg"
  mkdir -p "$cache/tools"
  mv "$tmp/$(basename "${pkg%@*}")" "$bin"
  rm -rf "$tmp"
fi
echo "$bin"
