#!/usr/bin/env bash
# sign-test.sh checks release signing end to end on the built dist/ with a
# throwaway key (the project's release key is never on a test machine):
# sign.sh signs SHA256SUMS; verify-release.sh accepts the release; and it
# refuses a changed archive, a changed SHA256SUMS, a signature by a key the
# allowed-signers file does not hold, and a missing signature.
# Usage: scripts/sign-test.sh [DIR]   (DIR: dist)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dist=${1:-$root/dist}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "sign-test: $*" >&2; exit 1; }
ssh-keygen -q -t ed25519 -N '' -C releases@edgeai.dev -f "$work/release" </dev/null
ssh-keygen -q -t ed25519 -N '' -C other -f "$work/other" </dev/null
echo "releases@edgeai.dev namespaces=\"edge-node-release\" $(cut -d' ' -f1,2 "$work/release.pub")" > "$work/allowed_signers"
# A copy of the release as an operator downloads it.
mkdir "$work/rel"
cp "$dist"/SHA256SUMS "$dist"/edge-node-*.tar.gz "$dist"/*.deb "$dist"/*.rpm "$work/rel/"
"$root/scripts/sign.sh" "$work/release" "$work/rel"
"$root/scripts/verify-release.sh" "$work/allowed_signers" "$work/rel" || fail "a good release was refused"
refused() { # refused WHAT: verify-release must fail now
  if "$root/scripts/verify-release.sh" "$work/allowed_signers" "$work/rel" 2>/dev/null; then fail "$1 was accepted"; fi
  echo "sign-test: refused $1" >&2
}
a=$(ls "$work/rel"/edge-node-*linux-amd64.tar.gz)
cp "$a" "$work/a.orig"; printf 'x' >> "$a"; refused "a changed archive"; cp "$work/a.orig" "$a"
cp "$work/rel/SHA256SUMS" "$work/s.orig"
c=$(head -c1 "$work/rel/SHA256SUMS"); r=a; [ "$c" = a ] && r=b
sed -i "1s/^./$r/" "$work/rel/SHA256SUMS"   # one hex digit of the first sum
refused "a changed SHA256SUMS"; cp "$work/s.orig" "$work/rel/SHA256SUMS"
"$root/scripts/sign.sh" "$work/other" "$work/rel" 2>/dev/null; refused "a signature by another key"
rm "$work/rel/SHA256SUMS.sig"; refused "a missing signature"
echo "sign-test: ok" >&2
