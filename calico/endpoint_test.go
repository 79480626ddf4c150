package calico

import (
	"encoding/json"
	"testing"
)

// The ConfigMap only works while the release's calico-node reads it: each
// container that talks to the API server (upgrade-ipam, install-cni,
// calico-node) must take its environment from it.
func TestServicesEndpointIsWhatTheReleaseReads(t *testing.T) {
	ds := find(t, docs(t, release(t)), "DaemonSet", "calico-node")
	for _, list := range []string{"initContainers", "containers"} {
		cs, err := path[[]any](ds, "spec", "template", "spec", list)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			cm := c.(map[string]any)
			name := cm["name"].(string)
			if name == "ebpf-bootstrap" || name == "mount-bpffs" {
				continue // touches only the node's files
			}
			found := false
			from, _ := cm["envFrom"].([]any)
			for _, f := range from {
				if ref, _ := f.(map[string]any)["configMapRef"].(map[string]any); ref != nil && ref["name"] == ServicesEndpointName {
					found = true
				}
			}
			if !found {
				t.Errorf("%s %s: no envFrom configMapRef %s", list, name, ServicesEndpointName)
			}
		}
	}

	cm, err := ServicesEndpoint("172.31.3.11", 6443)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cm)
	want := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"kubernetes-services-endpoint","namespace":"kube-system"},"data":{"KUBERNETES_SERVICE_HOST":"172.31.3.11","KUBERNETES_SERVICE_PORT":"6443"}}`
	if string(b) != want {
		t.Errorf("ConfigMap\n got %s\nwant %s", b, want)
	}
	for _, bad := range []struct {
		host string
		port int
	}{{"", 6443}, {"172.31.3.11", 0}, {"172.31.3.11", 70000}} {
		if _, err := ServicesEndpoint(bad.host, bad.port); err == nil {
			t.Errorf("ServicesEndpoint(%q, %d): no error", bad.host, bad.port)
		}
	}
}
