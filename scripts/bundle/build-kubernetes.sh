#!/usr/bin/env bash
# Builds the Kubernetes binaries of one release from the Go module proxy.
# k8s.io/kubernetes's module zip has no staging/ tree, so the build runs in a
# generated wrapper module that requires k8s.io/kubernetes and points each
# staging module (k8s.io/api, k8s.io/client-go, ...) at its published
# v0.X.Y release. Version variables are set as the release build sets them:
# without them the binaries say v0.0.0 and kubeadm's preflight refuses them.
# Usage: build-kubernetes.sh OUTDIR [VERSION]   (cached: skips what exists)
set -euo pipefail
out=${1:?usage: build-kubernetes.sh OUTDIR [VERSION]}
ver=${2:-v1.37.2}
cache=${K8SLAB_CACHE:-$HOME/.cache/k8slab}
work=$cache/build/kubernetes-$ver
bins=(kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
mkdir -p "$out" "$work"
missing=()
for b in "${bins[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
[ ${#missing[@]} -eq 0 ] && { echo "kubernetes $ver: cached in $out"; exit 0; }

staging=v0.${ver#v1.}
gomod=$(go mod download -json "k8s.io/kubernetes@$ver" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
[ -f "$gomod" ] || { echo "cannot download k8s.io/kubernetes@$ver" >&2; exit 1; }
cd "$work"
if [ ! -f go.mod ]; then
  {
    echo "module k8slab.local/kubernetes-build"
    echo
    echo "go 1.25"
    echo
    echo "require k8s.io/kubernetes $ver"
    grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } > go.mod
  echo "package main" > tools.go
fi
commit=$(printf '%s' "$ver" | sha1sum | cut -c1-40)
major=$(echo "$ver" | cut -d. -f1 | tr -d v); minor=$(echo "$ver" | cut -d. -f2)
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ld="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $pkg.gitVersion=$ver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ld="$ld -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
done
for b in "${missing[@]}"; do
  echo "kubernetes $ver: building $b"
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b"
  mv "$out/$b.tmp" "$out/$b"
done
