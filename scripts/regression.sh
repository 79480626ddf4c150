#!/usr/bin/env bash
# Scripted regression runs: N cycles of `k8slab reinstall` + `k8slab verify`
# against an installed cluster, one JSON report per command and cycle, then
# min/median/max per phase. Exits non-zero if any cycle failed.
#
#   scripts/regression.sh N [k8slab flags...]
#   e.g. scripts/regression.sh 5 --nodes 172.31.3.11 --artifacts ~/.cache/k8slab/bundle/v1.37.2
#
# K8SLAB (default: k8slab on PATH, else bin/k8slab), OUT (default
# regress-<timestamp>) and SETTLE (verify's --settle: how long its node and
# pod checks may take to pass after the reinstall; default verify's own)
# may be set. The cluster's recorded settings (on its control plane) are
# used, so --nodes <control plane> is enough.
set -uo pipefail
n=${1:?usage: scripts/regression.sh N [k8slab flags...]}
shift
k8slab=${K8SLAB:-$(command -v k8slab || echo bin/k8slab)}
out=${OUT:-regress-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
failed=0
for i in $(seq 1 "$n"); do
	"$k8slab" reinstall --yes --output json "$@" > "$out/cycle-$i-reinstall.json" 2> "$out/cycle-$i-reinstall.log"
	rc=$?
	"$k8slab" verify --output json ${SETTLE:+--settle "$SETTLE"} "$@" > "$out/cycle-$i-verify.json" 2> "$out/cycle-$i-verify.log"
	vrc=$?
	echo "cycle $i: reinstall exit $rc, verify exit $vrc"
	if [ "$rc" -ne 0 ] || [ "$vrc" -ne 0 ]; then failed=$((failed + 1)); fi
done
"$k8slab" report summary "$out"/cycle-*-reinstall.json
echo "$n cycles, $failed failed; reports in $out"
[ "$failed" -eq 0 ]
