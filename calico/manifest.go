// Package calico renders Calico for a k8slab cluster: the release
// manifest patched for the cluster's pod network, and the typed Calico
// resources k8slab applies itself.
package calico

import (
	"bytes"
	"fmt"
	"github.com/k8slab/k8slab/internal/kube"

	"sigs.k8s.io/yaml"
)

// Options are the cluster settings the manifest must carry.
type Options struct {
	PodCIDR   string
	BlockSize int
	// Encapsulation is IPIP, VXLAN or None; IPIP and VXLAN run CrossSubnet,
	// so traffic inside a rack is routed natively and only traffic between
	// the lab's L3 subnets is encapsulated.
	Encapsulation string
	// Autodetect is IP_AUTODETECTION_METHOD, e.g. kubernetes-internal-ip.
	Autodetect string
	// Racks, when set, switch BGP to the AS-per-rack model: no node-to-node
	// mesh, one BGPPeer per rack (see Peers).
	Racks []Rack
}

// Modes returns the IPIP and VXLAN pool modes for an encapsulation.
func (o Options) Modes() (ipip, vxlan string, err error) {
	switch o.Encapsulation {
	case "IPIP":
		return "CrossSubnet", "Never", nil
	case "VXLAN":
		return "Never", "CrossSubnet", nil
	case "None":
		return "Never", "Never", nil
	}
	return "", "", fmt.Errorf("calico: encapsulation %q is not IPIP, VXLAN or None", o.Encapsulation)
}

// PatchManifest sets the pod network, encapsulation and address
// autodetection in a release calico.yaml. Each document is decoded and
// changed as data; documents that need no change are passed through
// byte for byte, comments included.
func PatchManifest(in []byte, o Options) ([]byte, error) {
	ipip, vxlan, err := o.Modes()
	if err != nil {
		return nil, err
	}
	env := []envVar{
		{"CALICO_IPV4POOL_CIDR", o.PodCIDR},
		{"CALICO_IPV4POOL_BLOCK_SIZE", fmt.Sprint(o.BlockSize)},
		{"CALICO_IPV4POOL_IPIP", ipip},
		{"CALICO_IPV4POOL_VXLAN", vxlan},
		{"IP_AUTODETECTION_METHOD", o.Autodetect},
	}
	backend := "bird"
	if o.Encapsulation == "VXLAN" {
		// VXLAN-only clusters need no BGP: calico-node's probes must not
		// wait for BIRD (Calico's documented switch to the vxlan backend).
		backend = "vxlan"
	}
	var out bytes.Buffer
	var foundDS, foundCM, foundKC bool
	for i, doc := range kube.SplitDocs(string(in)) {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return nil, fmt.Errorf("calico manifest: %w", err)
		}
		changed := false
		switch {
		case isObject(obj, "DaemonSet", "calico-node"):
			if err := patchDaemonSet(obj, env, backend == "vxlan"); err != nil {
				return nil, err
			}
			foundDS, changed = true, true
		case isObject(obj, "ConfigMap", "calico-config"):
			data, _ := obj["data"].(map[string]any)
			if data == nil {
				return nil, fmt.Errorf("calico manifest: ConfigMap calico-config has no data")
			}
			data["calico_backend"] = backend
			foundCM, changed = true, true
		case isObject(obj, "Deployment", "calico-kube-controllers"):
			if err := patchKubeControllers(obj); err != nil {
				return nil, err
			}
			foundKC, changed = true, true
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		if !changed {
			out.WriteString(doc)
			continue
		}
		b, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		out.Write(b)
	}
	if !foundDS || !foundCM || !foundKC {
		return nil, fmt.Errorf("calico manifest: no calico-node DaemonSet, calico-config ConfigMap or calico-kube-controllers Deployment: is this a Calico calico.yaml?")
	}
	return out.Bytes(), nil
}

type envVar struct{ name, value string }

func isObject(obj map[string]any, kind, name string) bool {
	md, _ := obj["metadata"].(map[string]any)
	return obj["kind"] == kind && md != nil && md["name"] == name
}

// container is the named container of a workload's pod template.
func container(obj map[string]any, workload, name string) (map[string]any, error) {
	containers, err := path[[]any](obj, "spec", "template", "spec", "containers")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", workload, err)
	}
	for _, c := range containers {
		if cm, _ := c.(map[string]any); cm != nil && cm["name"] == name {
			return cm, nil
		}
	}
	return nil, fmt.Errorf("%s has no %s container", workload, name)
}

func patchDaemonSet(ds map[string]any, env []envVar, vxlanOnly bool) error {
	cm, err := container(ds, "calico-node DaemonSet", "calico-node")
	if err != nil {
		return err
	}
	list, _ := cm["env"].([]any)
	for _, e := range env {
		list = setEnv(list, e.name, e.value)
	}
	cm["env"] = list
	port := healthPort(list)
	if err := probeOverHTTP(cm, "livenessProbe", "/liveness", port); err != nil {
		return err
	}
	cm["startupProbe"] = startupProbe(port)
	if vxlanOnly {
		// Without BIRD, readiness is Felix's alone: the same GET the
		// exec'd `calico-node -felix-ready` makes.
		if err := probeOverHTTP(cm, "readinessProbe", "/readiness", port); err != nil {
			return err
		}
	}
	return nil
}

// setEnv replaces an env entry (value or valueFrom) or appends it.
func setEnv(list []any, name, value string) []any {
	for _, e := range list {
		if m, ok := e.(map[string]any); ok && m["name"] == name {
			delete(m, "valueFrom")
			m["value"] = value
			return list
		}
	}
	return append(list, map[string]any{"name": name, "value": value})
}

// probeOverHTTP makes a probe the kubelet's own GET of Felix's health
// endpoint, as Calico's operator renders calico-node's liveness probe,
// instead of an exec of `calico-node -felix-...`. Each exec starts the
// 128 MB calico-node binary through runc: 0.66 s of CPU measured on a
// container node; an idle four-node container cluster took 1.6 of the
// workstation's 2 CPUs with the exec probes, 1.1 without. Period, timeout
// and thresholds stay upstream's.
func probeOverHTTP(container map[string]any, probe, path string, port int) error {
	p, _ := container[probe].(map[string]any)
	if p == nil {
		return fmt.Errorf("calico-node container has no %s", probe)
	}
	delete(p, "exec")
	p["httpGet"] = map[string]any{"host": "localhost", "path": path, "port": port}
	return nil
}

// startupProbe holds off calico-node's liveness probe until Felix is
// first ready, for up to 30 minutes: the liveness probe's own allowance
// (10 s, then six misses 10 s apart) is for a Felix that stops answering,
// and on an emulated control plane, where calico-node's start-up took
// over 70 s before Felix answered at all, it killed every start before it
// could finish ("failed liveness probe, will be restarted"). Once Felix
// is ready, upstream's liveness probe applies unchanged. It asks Felix's
// readiness, not its liveness, because the kubelet runs the readiness
// probe at once when the start-up probe passes and otherwise only on its
// own 10 s period: asked for liveness, which Felix answers seconds before
// it is ready, calico-node was marked Ready 8-10 s after Felix was (on a
// container node). A plain GET every 2 s until then.
func startupProbe(port int) map[string]any {
	return map[string]any{
		"httpGet":       map[string]any{"host": "localhost", "path": "/readiness", "port": port},
		"periodSeconds": 2, "timeoutSeconds": 10, "failureThreshold": 900,
	}
}

// patchKubeControllers gives calico-kube-controllers a start-up probe:
// its readiness probe (an exec of check-status every 10 s, upstream's)
// can first run before the controllers are ready and then only 10 s
// later, so on a container node the Deployment became Available up to
// 11 s after the container started (1 s and 11 s in two reinstalls), and
// the install waits for it. The start-up probe runs the same
// check every 5 s until it first passes, then the kubelet runs the
// readiness probe at once and upstream's probes apply unchanged. Every
// 5 s, not faster: while it starts that is as many execs as upstream's
// two probes every 10 s, and on a saturated emulated control plane one
// exec of check-status took over 10 s; 30 minutes at most, as for
// calico-node, then the kubelet restarts it.
func patchKubeControllers(d map[string]any) error {
	cm, err := container(d, "calico-kube-controllers Deployment", "calico-kube-controllers")
	if err != nil {
		return err
	}
	ready, _ := cm["readinessProbe"].(map[string]any)
	if ready == nil || ready["exec"] == nil {
		return fmt.Errorf("calico-kube-controllers container has no exec readinessProbe")
	}
	cm["startupProbe"] = map[string]any{
		"exec":          ready["exec"],
		"periodSeconds": 5, "timeoutSeconds": 10, "failureThreshold": 360,
	}
	return nil
}

// healthPort is Felix's health port: FELIX_HEALTHPORT if the manifest
// sets one, else Felix's default.
func healthPort(env []any) int {
	for _, e := range env {
		if m, ok := e.(map[string]any); ok && m["name"] == "FELIX_HEALTHPORT" {
			if v, ok := m["value"].(string); ok {
				var port int
				if _, err := fmt.Sscan(v, &port); err == nil && port > 0 {
					return port
				}
			}
		}
	}
	return 9099
}

// path walks nested maps and returns the value at keys as T.
func path[T any](m map[string]any, keys ...string) (T, error) {
	var zero T
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return zero, fmt.Errorf("%v: not an object", keys)
		}
		cur = mm[k]
	}
	v, ok := cur.(T)
	if !ok {
		return zero, fmt.Errorf("%v: missing or of another type", keys)
	}
	return v, nil
}
