package provision

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/k8slab/k8slab/internal/host"
	nodescript "github.com/k8slab/k8slab/scripts/node"
)

// requiredPackages are the programs kubeadm's preflight and kube-proxy
// need, with the Debian/Ubuntu package that provides each.
func requiredPackages() [][2]string {
	return [][2]string{
		{"conntrack", "conntrack"}, {"socat", "socat"}, {"iptables", "iptables"},
		{"nft", "nftables"}, {"ebtables", "ebtables"}, {"ethtool", "ethtool"},
	}
}

// installPackages installs missing packages with apt, and only then: a
// node that has them all is never touched (nor needs a mirror).
func installPackages(ctx context.Context, h host.Host, missing []string) error {
	pkgs := strings.Join(missing, " ")
	cmd := "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends " + pkgs +
		" || { DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends " + pkgs + "; }"
	if _, err := host.Output(ctx, h, cmd); err != nil {
		return fmt.Errorf("installing %s with apt: %w", strings.Join(missing, ", "), err)
	}
	return nil
}

// containerdConfig is containerd 2.x's config (version 3): the systemd
// cgroup driver, matching the kubelet's cgroupDriver, and the sandbox
// image kubeadm expects. Where the node may not lower OOM scores (no
// CAP_SYS_RESOURCE), runc is told not to try: it fails every container
// otherwise ("failed to update /proc/self/oom_score_adj: Permission denied").
func containerdConfig(pause string, restrictOOMScoreAdj bool) string {
	runtime := ""
	if restrictOOMScoreAdj {
		runtime = "\n[plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = true\n"
	}
	return fmt.Sprintf(`# Written by k8slab.
version = 3

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'registry.k8s.io/pause:%s'
%s
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = true
`, pause, runtime)
}

const containerdUnit = `[Unit]
Description=containerd container runtime (installed by k8slab)
Documentation=https://containerd.io
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
`

const crictlConfig = "runtime-endpoint: unix:///run/containerd/containerd.sock\nimage-endpoint: unix:///run/containerd/containerd.sock\ntimeout: 10\n"

const kubeletUnit = `[Unit]
Description=kubelet: The Kubernetes Node Agent (installed by k8slab)
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target containerd.service

[Service]
ExecStart=/usr/local/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
`

// kubeadmDropIn is the drop-in kubeadm's packages ship: kubeadm writes
// the files it names (kubeadm-flags.env, config.yaml) during init/join.
const kubeadmDropIn = `[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
`

// bundleFile maps a bundle path to where it goes on a node.
func bundleFile(b *Bundle, dir, rel, remote string, mode fs.FileMode) (FileSpec, error) {
	for _, f := range b.Files {
		if f.Path == rel {
			return FileSpec{Remote: remote, Mode: mode, Local: filepath.Join(dir, filepath.FromSlash(rel)), SHA256: f.SHA256, Size: f.Size}, nil
		}
	}
	return FileSpec{}, fmt.Errorf("bundle lacks %s", rel)
}

// ContainerdFiles are containerd, runc, the CNI plugins, crictl and their
// configuration and unit.
func ContainerdFiles(b *Bundle, dir string, restrictOOMScoreAdj bool) ([]FileSpec, error) {
	var files []FileSpec
	add := func(rel, remote string) error {
		f, err := bundleFile(b, dir, rel, remote, 0o755)
		files = append(files, f)
		return err
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "crictl"} {
		if err := add("bin/"+bin, "/usr/local/bin/"+bin); err != nil {
			return nil, err
		}
	}
	if err := add("bin/runc", "/usr/local/sbin/runc"); err != nil {
		return nil, err
	}
	for _, c := range cniPlugins() {
		if err := add("cni/"+c, "/opt/cni/bin/"+c); err != nil {
			return nil, err
		}
		files[len(files)-1].IfMissing = true
	}
	files = append(files,
		Generated("/etc/containerd/config.toml", 0o644, containerdConfig(b.Release.Pause, restrictOOMScoreAdj)),
		Generated("/etc/systemd/system/containerd.service", 0o644, containerdUnit),
		Generated("/etc/crictl.yaml", 0o644, crictlConfig),
	)
	return files, nil
}

// KubernetesFiles are kubeadm, kubelet and kubectl with the kubelet unit
// and kubeadm's drop-in; etcd members also get etcd and etcdctl.
func KubernetesFiles(b *Bundle, dir string, etcdMember bool) ([]FileSpec, error) {
	bins := []string{"kubeadm", "kubelet", "kubectl"}
	if etcdMember {
		bins = append(bins, "etcd", "etcdctl")
	}
	var files []FileSpec
	for _, bin := range bins {
		f, err := bundleFile(b, dir, "bin/"+bin, "/usr/local/bin/"+bin, 0o755)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return append(files,
		Generated("/etc/systemd/system/kubelet.service", 0o644, kubeletUnit),
		Generated("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf", 0o644, kubeadmDropIn),
	), nil
}

// EnsureService reloads systemd and restarts unit when its files changed,
// or just enables and starts it when it is not running: a converged node
// sees no restart.
func EnsureService(ctx context.Context, h host.Host, unit string, changed bool) error {
	cmd := fmt.Sprintf("systemctl is-enabled -q %[1]s && systemctl is-active -q %[1]s || { systemctl daemon-reload && systemctl enable --now %[1]s; }", unit)
	if changed {
		cmd = fmt.Sprintf("systemctl daemon-reload && systemctl enable %[1]s && systemctl restart %[1]s", unit)
	}
	if _, err := host.Output(ctx, h, cmd); err != nil {
		return fmt.Errorf("service %s: %w", unit, err)
	}
	return nil
}

// ImagesFor lists the images a node needs for its roles: workers run
// kube-proxy, pause and possibly CoreDNS; the control plane also runs the
// control-plane components, and stacked etcd needs the etcd image.
func ImagesFor(r Release, controlPlane, stackedEtcd bool) []string {
	var out []string
	for _, ref := range r.Images() {
		switch {
		case strings.Contains(ref, "/kube-proxy:"), strings.Contains(ref, "/pause:"), strings.Contains(ref, "/coredns:"):
			out = append(out, ref)
		case strings.Contains(ref, "/etcd:"):
			if stackedEtcd {
				out = append(out, ref)
			}
		case controlPlane:
			out = append(out, ref)
		}
	}
	return out
}

// BundledCalicoImages are the version's Calico images that the bundle
// holds (none for a downloaded release: containerd pulls them).
func BundledCalicoImages(b *Bundle, version string) []string {
	var out []string
	for _, ref := range CalicoImages(version) {
		if _, ok := b.Images[ref]; ok && version != "" {
			out = append(out, ref)
		}
	}
	return out
}

// ImportImages uploads and imports the images the node lacks; containerd's
// own list decides, so a re-run imports nothing.
func ImportImages(ctx context.Context, h host.Host, b *Bundle, dir string, refs []string) ([]string, error) {
	out, err := host.Output(ctx, h, "ctr -n k8s.io images ls -q")
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	have := strings.Fields(out)
	var imported []string
	for _, ref := range refs {
		if slices.Contains(have, ref) {
			continue
		}
		rel, ok := b.Images[ref]
		if !ok {
			return imported, fmt.Errorf("bundle has no image %s", ref)
		}
		f, err := bundleFile(b, dir, rel, path.Join("/var/lib/k8slab/images", path.Base(rel)), 0o644)
		if err != nil {
			return imported, err
		}
		if _, err := SyncFiles(ctx, h, []FileSpec{f}); err != nil {
			return imported, err
		}
		if _, err := host.Output(ctx, h, "ctr -n k8s.io images import "+host.Quote(f.Remote)+" >/dev/null && rm -f "+host.Quote(f.Remote)); err != nil {
			return imported, fmt.Errorf("importing %s: %w", ref, err)
		}
		imported = append(imported, ref)
	}
	return imported, nil
}

// NodeImages are the bundle's images a node with these roles gets:
// kubeadm's for its roles, verify's probe (its test pods may land on any
// node) and Calico's (kube-controllers may be scheduled on any node too).
func NodeImages(b *Bundle, roles Roles) []string {
	refs := ImagesFor(b.Release, roles.ControlPlane, roles.StackedEtcd)
	if _, ok := b.Images[ProbeImage]; ok {
		refs = append(refs, ProbeImage)
	}
	return append(refs, BundledCalicoImages(b, roles.Calico)...)
}

// Roles say what a node runs, for what it needs installed.
type Roles struct {
	ControlPlane bool
	// EtcdMember: an external etcd member (gets etcd and etcdctl).
	EtcdMember bool
	// StackedEtcd: the control plane runs etcd as a static pod (its image).
	StackedEtcd bool
	// Calico is the Calico version the cluster runs: its images are
	// imported when the bundle has them (else containerd pulls them).
	Calico string
	// RestrictOOMScoreAdj: the node lacks CAP_SYS_RESOURCE (Facts.SysResource).
	RestrictOOMScoreAdj bool
}

// nodeCheck is everything provisioning needs to know, in one round trip:
// it applies the kernel settings (they change only what differs), then
// reports missing packages, the installed files, whether containerd runs,
// and the images containerd has. A converged node is done after it.
func nodeCheck(files []FileSpec) string {
	var pk strings.Builder
	for _, p := range requiredPackages() {
		fmt.Fprintf(&pk, "command -v %s >/dev/null 2>&1 || echo missing=%s\n", p[0], p[1])
	}
	return nodescript.Subshell("kernel.sh") + " || { echo 'kernel settings failed' >&2; exit 1; }\n" +
		pk.String() + FileCheckScript(files) +
		"systemctl is-enabled -q containerd 2>/dev/null && systemctl is-active -q containerd && echo containerd=active\n" +
		"ctr -n k8s.io images ls -q 2>/dev/null | sed 's/^/image=/'\ntrue\n"
}

// PrepareNode runs every provisioning step on one node, in order, and
// returns what it changed (nothing on a converged node). status is told
// which step runs.
func PrepareNode(ctx context.Context, h host.Host, b *Bundle, dir string, roles Roles, status func(string)) ([]string, error) {
	ctrFiles, err := ContainerdFiles(b, dir, roles.RestrictOOMScoreAdj)
	if err != nil {
		return nil, err
	}
	k8sFiles, err := KubernetesFiles(b, dir, roles.EtcdMember)
	if err != nil {
		return nil, err
	}
	status("checking")
	out, err := host.Output(ctx, h, nodeCheck(append(slices.Clone(ctrFiles), k8sFiles...)))
	if err != nil {
		return nil, fmt.Errorf("checking the node: %w", err)
	}
	var changed []string
	vals := nodescript.Parse(out)
	if vals.Get("changed") == "1" {
		changed = append(changed, "kernel settings")
	}
	missing, images, active := vals.All("missing"), vals.All("image"), vals.Get("containerd") == "active"
	have := ParseFileCheck(out)
	if len(missing) > 0 {
		status("packages " + strings.Join(missing, " "))
		if err := installPackages(ctx, h, missing); err != nil {
			return nil, err
		}
		changed = append(changed, "packages "+strings.Join(missing, " "))
	}
	if n := Differing(ctrFiles, have); n > 0 {
		status(fmt.Sprintf("containerd: uploading %d files", n))
	}
	ch, err := ApplyFiles(ctx, h, ctrFiles, have)
	if err != nil {
		return nil, err
	}
	if len(ch) > 0 || !active {
		status("containerd: (re)starting")
		if err := EnsureService(ctx, h, "containerd", len(ch) > 0); err != nil {
			return nil, err
		}
	}
	if len(ch) > 0 {
		changed = append(changed, fmt.Sprintf("containerd (%d files)", len(ch)))
	}
	if n := Differing(k8sFiles, have); n > 0 {
		status(fmt.Sprintf("kubernetes: uploading %d files", n))
	}
	if ch, err = ApplyFiles(ctx, h, k8sFiles, have); err != nil {
		return nil, err
	}
	if len(ch) > 0 {
		changed = append(changed, fmt.Sprintf("kubernetes (%d files)", len(ch)))
		// kubeadm starts the kubelet; until then it only has to be enabled.
		if _, err := host.Output(ctx, h, "systemctl daemon-reload && systemctl enable -q kubelet"); err != nil {
			return nil, err
		}
	}
	var need []string
	for _, ref := range NodeImages(b, roles) {
		// Without images in the bundle, kubeadm and the kubelet pull them.
		if !b.Pull && (!active || !slices.Contains(images, ref)) {
			need = append(need, ref)
		}
	}
	if len(need) > 0 {
		status(fmt.Sprintf("images: importing %d", len(need)))
		imgs, err := ImportImages(ctx, h, b, dir, need)
		if err != nil {
			return nil, err
		}
		if len(imgs) > 0 {
			changed = append(changed, fmt.Sprintf("%d images", len(imgs)))
		}
	}
	return changed, nil
}
