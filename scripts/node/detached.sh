#!/bin/sh
# detached.sh ACTION DIR UNIT [COMMAND]: a long step (kubeadm) run by
# systemd on the node rather than by the SSH session, which kills it when
# the client goes away. Its output goes to DIR/UNIT.log, its exit code to
# DIR/UNIT.status.
#   state   prints state=<the unit's ActiveState> (active: still running)
#   start   starts COMMAND as the transient unit UNIT (in a subshell: an
#           exit in it still leaves the exit code)
#   follow [SECONDS]
#           prints status=<exit code, or running> and last=<newest log line>;
#           with SECONDS, first waits up to that long for a running step to
#           end: the step holds DIR/UNIT.lock while it runs, so its end is
#           seen at once instead of at the next poll (up to 2 s late, three
#           times in each install's critical path)
#   tail    prints the log's last 15 lines
set -e
action=$1 dir=$2 unit=$3
log=$dir/$unit.log status=$dir/$unit.status lock=$dir/$unit.lock
case $action in
state)
	echo "state=$(systemctl show -p ActiveState --value "$unit.service" 2>/dev/null || true)" ;;
start)
	mkdir -p "$dir"
	rm -f "$status"
	: > "$log"
	systemctl reset-failed "$unit.service" 2>/dev/null || true
	# The step runs from a script file: given as an sh -c argument, its
	# ';' and '$' reached the transient unit escaped, and systemd logged
	# "Ignoring unknown escape sequences" for every step.
	printf "(%s)\necho \$? > '%s'\n" "$4" "$status" > "$dir/$unit.sh"
	set -- /bin/sh "$dir/$unit.sh"
	if flock=$(command -v flock); then set -- "$flock" "$lock" "$@"; fi
	systemd-run --quiet --unit "$unit" --collect -p "StandardOutput=append:$log" -p "StandardError=append:$log" "$@"
	# The unit's process takes the lock once it runs, which can be after
	# systemd-run has returned: wait (5 s at most) until it holds the lock
	# or has ended, so that the first follow sees its end through the lock
	# rather than a poll later.
	if [ -n "$flock" ]; then
		i=0
		while [ $i -lt 50 ] && [ ! -s "$status" ] && flock -n "$lock" true 2>/dev/null; do
			sleep 0.1
			i=$((i + 1))
		done
	fi ;;
follow)
	if [ -n "${4:-}" ] && [ ! -s "$status" ] && command -v flock >/dev/null 2>&1; then
		flock -w "$4" "$lock" true 2>/dev/null || true
	fi
	s=running
	if [ -s "$status" ]; then read -r s < "$status" || true; fi
	echo "status=$s"
	echo "last=$(tail -n 1 "$log" 2>/dev/null)" ;;
tail)
	tail -n 15 "$log" ;;
*)
	echo "detached.sh: no action $action" >&2; exit 2 ;;
esac
