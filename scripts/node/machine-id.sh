#!/bin/sh
# machine-id.sh makes a new random machine-id the way systemd does on
# first boot (cloned VMs share one, and kubeadm and Calico tell nodes
# apart by it); D-Bus's copy follows it. Prints machine_id=NEW.
set -e
rm -f /etc/machine-id
systemd-machine-id-setup >/dev/null 2>&1 || dbus-uuidgen --ensure=/etc/machine-id
[ ! -e /var/lib/dbus/machine-id ] || ln -sf /etc/machine-id /var/lib/dbus/machine-id
v=; read -r v < /etc/machine-id
echo "machine_id=$v"
