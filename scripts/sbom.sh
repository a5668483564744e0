#!/usr/bin/env bash
# sbom.sh writes the CycloneDX 1.6 SBOM (JSON) of a Go binary: the Go modules
# linked into it, read from its build info by cyclonedx-gomod (pinned, built
# once by tool.sh). Given the ONNX Runtime library the binary ships with, it
# adds that as a component too: the onnxruntime-node release setup.sh takes
# it from (ORT_NPM), the file's sha256, MIT. dist.sh writes one per binary of
# each archive; deploy/kubeedge/Dockerfile one for the image's edge-node.
# Needs go (first run) and python3.
# Usage: scripts/sbom.sh BINARY GOARCH VERSION OUT [ORT_LIBRARY]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage="usage: scripts/sbom.sh BINARY GOARCH VERSION OUT [ORT_LIBRARY]"
bin=${1:?$usage}; arch=${2:?$usage}; version=${3:?$usage}; out=${4:?$usage}; so=${5:-}
cyclonedx=$("$root/scripts/tool.sh" cyclonedx-gomod github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@v1.10.0)
mkdir -p "$(dirname "$out")"
# GOOS/GOARCH: cyclonedx-gomod labels the purls with the environment's, not the binary's.
GOOS=linux GOARCH=$arch "$cyclonedx" bin -json -version "$version" -output "$out" "$bin" 2>/dev/null
[ -n "$so" ] || exit 0
ort_npm=$(sed -n 's/^ORT_NPM=//p' "$root/scripts/setup.sh")
[ -n "$ort_npm" ] || { echo "sbom: no ORT_NPM in scripts/setup.sh" >&2; exit 1; }
python3 - "$out" "$so" "$ort_npm" <<'PY'
import hashlib, json, sys
path, lib, spec = sys.argv[1:]
name, version = spec.rsplit("@", 1)
bom = json.load(open(path))
digest = hashlib.sha256(open(lib, "rb").read()).hexdigest()
ref = f"pkg:npm/{name}@{version}#libonnxruntime.so.1"
bom.setdefault("components", []).append({
    "bom-ref": ref, "type": "library", "name": "onnxruntime", "version": version,
    "description": "ONNX Runtime (CPU build), loaded at run time from lib/libonnxruntime.so.1",
    "scope": "required", "hashes": [{"alg": "SHA-256", "content": digest}],
    "licenses": [{"license": {"id": "MIT"}}], "purl": f"pkg:npm/{name}@{version}",
    "properties": [{"name": "edge-node:file", "value": "lib/libonnxruntime.so.1"}],
})
main = bom["metadata"]["component"]["bom-ref"]
for d in bom.setdefault("dependencies", []):
    if d.get("ref") == main:
        d.setdefault("dependsOn", []).append(ref)
        break
else:
    bom["dependencies"].append({"ref": main, "dependsOn": [ref]})
json.dump(bom, open(path, "w"), indent=2)
PY
