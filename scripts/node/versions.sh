#!/bin/sh
# versions.sh starts the binaries to ask their versions: `kubelet
# --version` alone took 28 s on the saturated emulated control plane, so
# only `k8slab facts` asks (preflight needs no versions: provision checks
# the files' checksums).
echo "containerd_version=$(containerd --version 2>/dev/null | awk '{print $3}')"
echo "kubelet_version=$(kubelet --version 2>/dev/null | awk '{print $2}')"
