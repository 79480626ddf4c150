#!/bin/sh
# file-check.sh PATH...: one "file=SHA256 MODE recorded|hashed PATH" line
# per existing file (provision.ParseFileCheck). K8SLAB_STATE_DIR (tests
# only) moves k8slab's records from /var/lib/k8slab.
#
# Hashing hundreds of MB on an emulated CPU took a minute per node, so,
# like rsync's quick check, a file whose size and mtime match what k8slab
# recorded when it installed it keeps its recorded sha256 ("recorded").
# Mode is part of "the same": a binary that lost its x bit is fixed. One
# stat and one awk for all files: on the saturated emulated control plane
# every process start cost 1-2 s, and four per file made a no-op check
# take 113 s.
[ $# -gt 0 ] || exit 0
stat -c '%s|%Y %a %n' -- "$@" 2>/dev/null | awk -v state="${K8SLAB_STATE_DIR:-/var/lib/k8slab}/files.state" '
BEGIN { while ((getline l < state) > 0) { n = split(l, r, "|"); if (n >= 4) rec[r[2] "|" r[3] "|" r[4]] = r[1] } }
{
	split($1, sm, "|"); f = substr($0, length($1) + length($2) + 3)
	k = f "|" sm[1] "|" sm[2]
	if (k in rec) print "file " rec[k] " " $2 " recorded " f; else print "hash " $2 " " f
}' | while read -r tag mode f; do
	case $tag in
	file) echo "file=$mode $f" ;;
	hash) echo "file=$(sha256sum "$f" | cut -d' ' -f1) $mode hashed $f" ;;
	esac
done
