#!/usr/bin/env bash
# sign.sh signs a release's checksums: DIR/SHA256SUMS (written by dist.sh
# and package.sh: every archive, .deb and .rpm) gets a detached ed25519
# signature DIR/SHA256SUMS.sig made with OpenSSH (ssh-keygen -Y sign, the
# namespace edge-node-release, so the signature is good for nothing else).
# The key is an OpenSSH private key (ssh-keygen -t ed25519); its public half
# goes, as a line of an allowed-signers file, wherever operators get the
# project's keys (docs/operations.md, "Verifying a release").
# Usage: scripts/sign.sh KEY [DIR]   (DIR: dist)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
key=${1:?usage: scripts/sign.sh KEY [DIR]}
dir=${2:-$root/dist}
command -v ssh-keygen >/dev/null || { echo "sign: ssh-keygen not found (apt-get install openssh-client)" >&2; exit 1; }
[ -s "$dir/SHA256SUMS" ] || { echo "sign: no $dir/SHA256SUMS: run make package first" >&2; exit 1; }
rm -f "$dir/SHA256SUMS.sig"
ssh-keygen -q -Y sign -f "$key" -n edge-node-release "$dir/SHA256SUMS" >&2
echo "sign: $dir/SHA256SUMS.sig" >&2
