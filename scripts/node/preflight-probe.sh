#!/bin/sh
# preflight-probe.sh CONTROL_PLANE: what preflight needs beyond the
# facts: listening ports with their owners, and the route to the control
# plane (its source address is the node's address in the cluster).
ss -Hltnp 2>/dev/null | awk '{print "listen=" $4 " " $6}'
echo "route=$(ip -4 -o route get "$1" 2>/dev/null)"
