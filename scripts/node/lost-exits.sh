#!/bin/sh
# lost-exits.sh: containers the CRI still reports running whose task
# containerd itself has STOPPED, i.e. whose exit containerd lost (seen on
# an overloaded emulated node: the exit came while the container's start
# was still under way, and every later attempt to handle it timed out).
# It only reads. Output: lost=NAME (the container's name) for each.
command -v crictl >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1 || exit 0
stopped=$(ctr -n k8s.io tasks ls 2>/dev/null | awk '$3 == "STOPPED" {print $1}')
[ -n "$stopped" ] || exit 0
for id in $(crictl ps -q --state running 2>/dev/null); do
	for s in $stopped; do
		case $s in
		"$id"*)
			name=$(crictl inspect -o go-template --template '{{.status.metadata.name}}' "$id" 2>/dev/null)
			echo "lost=${name:-$id}"
			;;
		esac
	done
done
true
