#!/bin/sh
# kube-proxy-programmed.sh SERVICE_IP MODE: whether kube-proxy's rules of
# its mode (nftables map or iptables nat table) hold the kubernetes
# Service's address and port 443. Prints service=programmed, missing, or
# unknown when the rules cannot be read.
svc=$1 mode=$2
if [ "$mode" = nftables ]; then
	rules=$(nft list map ip kube-proxy service-ips 2>/dev/null) || { echo service=unknown; exit 0; }
	case $rules in *"$svc . tcp . 443"*) echo service=programmed ;; *) echo service=missing ;; esac
else
	rules=$(iptables-save -t nat 2>/dev/null) || { echo service=unknown; exit 0; }
	case $rules in *"-d $svc/32 "*"--dport 443"*) echo service=programmed ;; *) echo service=missing ;; esac
fi
