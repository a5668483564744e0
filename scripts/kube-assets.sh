#!/usr/bin/env bash
# kube-assets.sh puts the two binaries of a real Kubernetes control plane into
# $CACHE/k8s/$K8S_VERSION/ (controller-runtime's envtest reads them from
# KUBEBUILDER_ASSETS):
#   kube-apiserver  built from the Go module proxy: k8s.io/kubernetes is a
#                   module, but its go.mod points the staging modules at
#                   local folders, so a small helper module requires it and
#                   replaces each staging module by its published v0.x.y
#   etcd            Debian's etcd-server package (scripts/test-deps.sh)
# The build takes ~10 minutes cold on 2 cores and is done once per version.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-1.31.4}
CACHE=${CACHE:-$(cd "$(dirname "$0")/.." && pwd)/.cache}
GO=${GO:-go}
dir=$CACHE/k8s/v$K8S_VERSION
if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ]; then exit 0; fi
mkdir -p "$dir"
etcd=$(command -v etcd || true)
[ -n "$etcd" ] || { [ -x /usr/bin/etcd ] && etcd=/usr/bin/etcd; }
[ -n "$etcd" ] || { echo "kube-assets: etcd not found (install Debian's etcd-server: make deps)" >&2; exit 1; }
ln -sf "$etcd" "$dir/etcd"
if [ ! -x "$dir/kube-apiserver" ]; then
  minor=${K8S_VERSION#1.}
  staging="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider cluster-bootstrap
    code-generator component-base component-helpers controller-manager cri-api cri-client csi-translation-lib
    dynamic-resource-allocation endpointslice kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler
    kubectl kubelet metrics mount-utils pod-security-admission sample-apiserver"
  mod=$(mktemp -d)
  trap 'rm -rf "$mod"' EXIT
  {
    echo "module kubeassets"
    echo "go 1.22"
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    for m in $staging; do echo "replace k8s.io/$m => k8s.io/$m v0.$minor"; done
  } >"$mod/go.mod"
  echo "kube-assets: building kube-apiserver v$K8S_VERSION from the module proxy into $dir (~10 min cold)" >&2
  (cd "$mod" && GOFLAGS=-mod=mod "$GO" build -trimpath -ldflags "-s -w" -o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$dir/kube-apiserver.tmp" "$dir/kube-apiserver"
fi
"$dir/kube-apiserver" --version >&2
