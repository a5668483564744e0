#!/usr/bin/env bash
# deadcode.sh is `make lint`'s dead code check: golang.org/x/tools/cmd/deadcode
# (version pinned by go.mod's tool directive) over the programs in cmd/.
#
# It runs WITHOUT -test on purpose: a function that only tests reach is dead
# in a production package. Delete it, or move it into a _test.go file
# (export_test.go for the package's own external tests). Two exceptions:
#   - test-helper packages (HELPERS): imported by tests only, by design. The
#     script fails if a production package imports one.
#   - the seams in ALLOW, each with the reason it cannot live in a _test.go
#     file. An entry deadcode no longer reports fails too (keep the list true).
# deadcode -test (what tests reach) is stricter in the other direction: it
# also reports code no test exercises; run it by hand for coverage gaps.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
mod=$($GO list -m)

HELPERS=(
  internal/logtest
  internal/testwait
  inference/inferencetest
  models/testsuite
  node/kserve/kservetest
  sync/brokertest
  sync/kube/kubetest
  sync/kubeedge/kubeedgetest
  sync/mqttlink/mqttlinktest
)
ALLOW=(
  # cgo is not allowed in _test.go files; cuda_test.go reads the stub
  # libcudart's counters through it.
  "cgo/pinned cudaLib.int64Symbol"
  # fault injection for models/store's tests (another package, so not an
  # export_test.go of blobstore).
  "models/blobstore WithWriteFault"
)

is_helper() {
  local h
  for h in "${HELPERS[@]}"; do [[ $1 == "$h" ]] && return 0; done
  return 1
}

fail=0
# 1. No production package imports a test-helper package.
while read -r pkg imports; do
  pkg=${pkg#"$mod"/}
  is_helper "$pkg" && continue
  for imp in $imports; do
    if [[ $imp == "$mod"/* ]] && is_helper "${imp#"$mod"/}"; then
      echo "deadcode.sh: $pkg imports the test-helper package ${imp#"$mod"/} (tests only)"
      fail=1
    fi
  done
done < <($GO list -f '{{.ImportPath}}{{range .Imports}} {{.}}{{end}}' ./...)

# 2. Nothing unreachable from the mains outside the helpers and ALLOW.
declare -A seen=()
while read -r pkg fn pos; do
  pkg=${pkg#"$mod"/}
  is_helper "$pkg" && continue
  for a in "${ALLOW[@]}"; do
    if [[ $a == "$pkg $fn" ]]; then
      seen[$a]=1
      continue 2
    fi
  done
  echo "${pos#"$PWD"/}: unreachable func: $fn (reached by no program in cmd/; only tests, or nothing)"
  fail=1
done < <($GO tool deadcode -f '{{range .Funcs}}{{$.Path}} {{.Name}} {{.Position.File}}:{{.Position.Line}}{{"\n"}}{{end}}' ./...)
for a in "${ALLOW[@]}"; do
  if [[ -z ${seen[$a]:-} ]]; then
    echo "deadcode.sh: ALLOW entry \"$a\" is not reported any more: remove it"
    fail=1
  fi
done
exit $fail
