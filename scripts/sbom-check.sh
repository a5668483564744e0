#!/usr/bin/env bash
# sbom-check.sh checks an SBOM of sbom.sh against the binary it describes:
# every module the binary's build info names (go version -m; a replaced
# module by its replacement) is listed at that version, and, given the ONNX
# Runtime library shipped beside the binary, that library is listed by its
# sha256. dist-test.sh runs it on each archive, image-test.sh on the image.
# Usage: scripts/sbom-check.sh SBOM BINARY [ORT_LIBRARY]
set -euo pipefail
usage="usage: scripts/sbom-check.sh SBOM BINARY [ORT_LIBRARY]"
sbom=${1:?$usage}; bin=${2:?$usage}; lib=${3:-}
[ -s "$sbom" ] || { echo "sbom-check: $sbom is missing or empty" >&2; exit 1; }
info=$(mktemp)
trap 'rm -f "$info"' EXIT
"${GO:-go}" version -m "$bin" > "$info"
python3 - "$sbom" "$info" "$lib" <<'PY'
import hashlib, json, os, sys
sbom, info, lib = sys.argv[1:]
name = os.path.basename(sbom)
bom = json.load(open(sbom))
assert bom.get("bomFormat") == "CycloneDX", f"{name}: not a CycloneDX document"
listed = {(c["name"], c.get("version")) for c in bom.get("components", [])}
linked, last = set(), None
for line in open(info):
    f = line.split()
    if len(f) >= 3 and f[0] == "dep":
        last = (f[1], f[2])
        linked.add(last)
    elif len(f) >= 3 and f[0] == "=>" and last:  # a replaced module: its replacement is linked
        linked.discard(last)
        linked.add((f[1], f[2]))
missing = sorted(linked - listed)
if not linked or missing:
    sys.exit(f"sbom-check: {name} lacks linked modules: {missing or 'no modules read'}")
ort = [c for c in bom["components"] if c["name"] == "onnxruntime"]
if lib:
    digest = hashlib.sha256(open(lib, "rb").read()).hexdigest()
    if not ort or ort[0]["hashes"][0]["content"] != digest:
        sys.exit(f"sbom-check: {name} does not list {lib} by its sha256")
print(f"sbom-check: {name} lists all {len(linked)} linked modules" + (" and ONNX Runtime" if lib else ""), file=sys.stderr)
PY
