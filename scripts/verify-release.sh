#!/usr/bin/env bash
# verify-release.sh checks a downloaded release the way docs/operations.md
# tells operators to: the signature of SHA256SUMS against an allowed-signers
# file (ssh-keygen -Y verify, namespace edge-node-release, identity
# releases@edgeai.dev), then every file SHA256SUMS names that is present
# (sha256sum -c --ignore-missing; at least one must be). It fails on a
# missing or bad signature, a key not in the file, or a changed file.
# Usage: scripts/verify-release.sh ALLOWED_SIGNERS [DIR]   (DIR: .)
set -euo pipefail
signers=${1:?usage: scripts/verify-release.sh ALLOWED_SIGNERS [DIR]}
dir=${2:-.}
cd "$dir"
[ -f SHA256SUMS.sig ] || { echo "verify-release: no SHA256SUMS.sig in $dir" >&2; exit 1; }
ssh-keygen -Y verify -f "$signers" -I releases@edgeai.dev -n edge-node-release -s SHA256SUMS.sig < SHA256SUMS >&2 ||
  { echo "verify-release: SHA256SUMS is not signed by a key in $signers" >&2; exit 1; }
n=$(sha256sum -c --ignore-missing --quiet SHA256SUMS >&2 && sha256sum -c --ignore-missing SHA256SUMS 2>/dev/null | grep -c ': OK$') ||
  { echo "verify-release: a file does not match SHA256SUMS" >&2; exit 1; }
[ "$n" -gt 0 ] || { echo "verify-release: none of the files SHA256SUMS names is in $dir" >&2; exit 1; }
echo "verify-release: signature good, $n files match" >&2
