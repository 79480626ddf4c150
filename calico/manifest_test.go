package calico

import (
	"encoding/json"
	"os"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/k8slab/k8slab/internal/kube"
)

// The upstream release files, unmodified (see testdata/calico/v3.32.1/SOURCE.md).
const fixtures = "../testdata/calico/v3.32.1/"

func release(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(fixtures + "calico.yaml")
	if err != nil {
		t.Fatalf("the Calico v3.32.1 release manifests (testdata/calico/v3.32.1): %v", err)
	}
	return b
}

func docs(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, d := range kube.SplitDocs(string(b)) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func find(t *testing.T, ds []map[string]any, kind, name string) map[string]any {
	t.Helper()
	for _, d := range ds {
		if isObject(d, kind, name) {
			return d
		}
	}
	t.Fatalf("no %s %s", kind, name)
	return nil
}

// nodeEnv returns calico-node's env as name -> value ("<from>" for valueFrom).
func nodeEnv(t *testing.T, ds map[string]any) (map[string]string, map[string]any) {
	cs, err := path[[]any](ds, "spec", "template", "spec", "containers")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		cm := c.(map[string]any)
		if cm["name"] != "calico-node" {
			continue
		}
		env := map[string]string{}
		for _, e := range cm["env"].([]any) {
			em := e.(map[string]any)
			if v, ok := em["value"].(string); ok {
				env[em["name"].(string)] = v
			} else {
				env[em["name"].(string)] = "<from>"
			}
		}
		return env, cm
	}
	t.Fatal("no calico-node container")
	return nil, nil
}

func TestPatchReleaseManifest(t *testing.T) {
	in := release(t)
	tests := []struct {
		encap, ipip, vxlan, backend string
		birdProbes                  bool
	}{
		{"IPIP", "CrossSubnet", "Never", "bird", true},
		{"VXLAN", "Never", "CrossSubnet", "vxlan", false},
		{"None", "Never", "Never", "bird", true},
	}
	for _, tt := range tests {
		t.Run(tt.encap, func(t *testing.T) {
			o := Options{PodCIDR: "172.31.128.0/18", BlockSize: 26, Encapsulation: tt.encap, Autodetect: "kubernetes-internal-ip"}
			out, err := PatchManifest(in, o)
			if err != nil {
				t.Fatal(err)
			}
			before, after := docs(t, in), docs(t, out)
			if len(before) != len(after) {
				t.Fatalf("%d documents became %d", len(before), len(after))
			}
			env, container := nodeEnv(t, find(t, after, "DaemonSet", "calico-node"))
			want := map[string]string{
				"CALICO_IPV4POOL_CIDR": "172.31.128.0/18", "CALICO_IPV4POOL_BLOCK_SIZE": "26",
				"CALICO_IPV4POOL_IPIP": tt.ipip, "CALICO_IPV4POOL_VXLAN": tt.vxlan,
				"IP_AUTODETECTION_METHOD": "kubernetes-internal-ip",
				// untouched upstream settings survive
				"DATASTORE_TYPE": "kubernetes", "CLUSTER_TYPE": "k8s,bgp", "FELIX_IPINIPMTU": "<from>",
			}
			for k, v := range want {
				if env[k] != v {
					t.Errorf("env %s = %q, want %q", k, env[k], v)
				}
			}
			cm := find(t, after, "ConfigMap", "calico-config")
			if got := cm["data"].(map[string]any)["calico_backend"]; got != tt.backend {
				t.Errorf("calico_backend = %v, want %s", got, tt.backend)
			}
			// Liveness is the kubelet's GET of Felix's health endpoint, as
			// Calico's operator renders it; readiness too without BIRD, and
			// with BIRD the release's exec (only it can ask BIRD).
			live, _ := json.Marshal(container["livenessProbe"])
			wantLive := `{"failureThreshold":6,"httpGet":{"host":"localhost","path":"/liveness","port":9099},"initialDelaySeconds":10,"periodSeconds":10,"timeoutSeconds":10}`
			if string(live) != wantLive {
				t.Errorf("livenessProbe\n got %s\nwant %s", live, wantLive)
			}
			// A start-up probe holds the liveness probe off until Felix is
			// first ready, for up to 30 minutes.
			startup, _ := json.Marshal(container["startupProbe"])
			wantStartup := `{"failureThreshold":900,"httpGet":{"host":"localhost","path":"/readiness","port":9099},"periodSeconds":2,"timeoutSeconds":10}`
			if string(startup) != wantStartup {
				t.Errorf("startupProbe\n got %s\nwant %s", startup, wantStartup)
			}
			ready, _ := json.Marshal(container["readinessProbe"])
			wantReady := `{"httpGet":{"host":"localhost","path":"/readiness","port":9099},"periodSeconds":10,"timeoutSeconds":10}`
			if tt.birdProbes {
				wantReady = `{"exec":{"command":["/bin/calico-node","-felix-ready","-bird-ready"]},"periodSeconds":10,"timeoutSeconds":10}`
			}
			if string(ready) != wantReady {
				t.Errorf("readinessProbe\n got %s\nwant %s", ready, wantReady)
			}
			// calico-kube-controllers: a start-up probe runs the release's
			// readiness check every 5 s until it first passes; upstream's
			// probes stay as they are.
			kc := find(t, after, "Deployment", "calico-kube-controllers")
			kcc := kc["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
			kcStartup, _ := json.Marshal(kcc["startupProbe"])
			if want := `{"exec":{"command":["/usr/bin/check-status","-r"]},"failureThreshold":360,"periodSeconds":5,"timeoutSeconds":10}`; string(kcStartup) != want {
				t.Errorf("calico-kube-controllers startupProbe\n got %s\nwant %s", kcStartup, want)
			}
			kcReady, _ := json.Marshal(kcc["readinessProbe"])
			kcLive, _ := json.Marshal(kcc["livenessProbe"])
			if string(kcReady) != `{"exec":{"command":["/usr/bin/check-status","-r"]},"periodSeconds":10}` ||
				string(kcLive) != `{"exec":{"command":["/usr/bin/check-status","-l"]},"failureThreshold":6,"initialDelaySeconds":10,"periodSeconds":10,"timeoutSeconds":10}` {
				t.Errorf("calico-kube-controllers' own probes changed:\n%s\n%s", kcReady, kcLive)
			}
			// Every other document is passed through unchanged, to the byte.
			inDocs, outDocs := kube.SplitDocs(string(in)), kube.SplitDocs(string(out))
			changed := 0
			for i := range inDocs {
				if inDocs[i] != outDocs[i] {
					changed++
				}
			}
			if changed != 3 {
				t.Errorf("%d documents changed, want 3 (calico-node, calico-config, calico-kube-controllers)", changed)
			}
		})
	}
}

func TestPatchRefusesOtherManifests(t *testing.T) {
	op, err := os.ReadFile(fixtures + "tigera-operator.yaml")
	if err != nil {
		t.Fatal(err)
	}
	o := Options{PodCIDR: "10.0.0.0/16", BlockSize: 26, Encapsulation: "IPIP", Autodetect: "first-found"}
	if _, err := PatchManifest(op, o); err == nil || !strings.Contains(err.Error(), "no calico-node DaemonSet") {
		t.Errorf("operator manifest: %v", err)
	}
	o.Encapsulation = "GRE"
	if _, err := PatchManifest(release(t), o); err == nil {
		t.Error("GRE accepted")
	}
}

// TestResourcesMatchTheCRDs checks every field k8slab writes against the
// openAPI schema of the CRDs shipped in the same release manifest.
func TestResourcesMatchTheCRDs(t *testing.T) {
	schemas := map[string]map[string]any{}
	for _, d := range docs(t, release(t)) {
		if d["kind"] != "CustomResourceDefinition" {
			continue
		}
		kind, _ := path[string](d, "spec", "names", "kind")
		group, _ := path[string](d, "spec", "group")
		versions, _ := path[[]any](d, "spec", "versions")
		for _, v := range versions {
			vm := v.(map[string]any)
			if group+"/"+vm["name"].(string) == CRDGroupVersion {
				props, err := path[map[string]any](vm, "schema", "openAPIV3Schema", "properties", "spec", "properties")
				if err != nil {
					t.Fatalf("%s: %v", kind, err)
				}
				schemas[kind] = props
			}
		}
	}
	mesh, err := Resources(Options{PodCIDR: "172.31.128.0/18", BlockSize: 26, Encapsulation: "IPIP", Autodetect: "kubernetes-internal-ip"})
	if err != nil {
		t.Fatal(err)
	}
	racks, err := Resources(Options{PodCIDR: "172.31.128.0/18", BlockSize: 26, Encapsulation: "None", Autodetect: "kubernetes-internal-ip",
		Racks: []Rack{{Name: "leaf1", Router: "172.31.3.1", ASN: 65001}, {Name: "leaf2", Router: "172.31.4.1", ASN: 65002}}})
	if err != nil {
		t.Fatal(err)
	}
	status := CalicoNodeStatus{TypeMeta: TypeMeta{APIVersion: CRDGroupVersion, Kind: "CalicoNodeStatus"}, Metadata: ObjectMeta{Name: "x"},
		Spec: CalicoNodeStatusSpec{Node: "kube-node1", Classes: []string{"BGP"}, UpdatePeriodSeconds: 5}}
	for _, tt := range []struct {
		name  string
		objs  []any
		kinds string
	}{
		{"mesh", mesh, "BGPConfiguration,FelixConfiguration,IPPool"},
		{"as-per-rack", racks, "BGPConfiguration,BGPPeer,BGPPeer,FelixConfiguration,IPPool"},
		{"verify's node status", []any{status}, "CalicoNodeStatus"},
	} {
		var kinds []string
		for _, o := range tt.objs {
			b, _ := json.Marshal(o)
			var m map[string]any
			json.Unmarshal(b, &m)
			kind := m["kind"].(string)
			kinds = append(kinds, kind)
			props, ok := schemas[kind]
			if !ok {
				t.Errorf("%s: no CRD %s in the release manifest", kind, CRDGroupVersion)
				continue
			}
			for field, val := range m["spec"].(map[string]any) {
				schema, ok := props[field].(map[string]any)
				if !ok {
					t.Errorf("%s.spec.%s is not in the CRD schema", kind, field)
					continue
				}
				if typ, _ := schema["type"].(string); typ != "" && !jsonTypeMatches(typ, val) {
					t.Errorf("%s.spec.%s = %v: CRD wants %s", kind, field, val, typ)
				}
				if enum, ok := schema["enum"].([]any); ok && !inEnum(enum, val) {
					t.Errorf("%s.spec.%s = %v: CRD allows only %v", kind, field, val, enum)
				}
				if items, ok := schema["items"].(map[string]any); ok {
					if enum, ok := items["enum"].([]any); ok {
						for _, v := range val.([]any) {
							if !inEnum(enum, v) {
								t.Errorf("%s.spec.%s item %v: CRD allows only %v", kind, field, v, enum)
							}
						}
					}
				}
			}
		}
		sort.Strings(kinds)
		if strings.Join(kinds, ",") != tt.kinds {
			t.Errorf("%s: kinds %v, want %s", tt.name, kinds, tt.kinds)
		}
	}
}

func TestAsPerRackResources(t *testing.T) {
	objs, err := Resources(Options{PodCIDR: "172.31.128.0/18", BlockSize: 26, Encapsulation: "None",
		Racks: []Rack{{Name: "leaf2", Router: "172.31.4.1", ASN: 65002}, {Name: "leaf1", Router: "172.31.3.1", ASN: 65001}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(objs)
	got := string(b)
	for _, want := range []string{
		`"nodeToNodeMeshEnabled":false`,
		`"ipipMode":"Never","vxlanMode":"Never","natOutgoing":true`,
		`{"apiVersion":"crd.projectcalico.org/v1","kind":"BGPPeer","metadata":{"name":"k8slab-rack-leaf1"},"spec":{"nodeSelector":"topology.kubernetes.io/zone == 'leaf1'","peerIP":"172.31.3.1","asNumber":65001}}`,
		`"name":"k8slab-rack-leaf2"},"spec":{"nodeSelector":"topology.kubernetes.io/zone == 'leaf2'","peerIP":"172.31.4.1","asNumber":65002}`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("resources lack %s:\n%s", want, got)
		}
	}
	p, _ := json.Marshal(NodePatch(Rack{Name: "leaf1", Router: "172.31.3.1", ASN: 65001}))
	if string(p) != `{"metadata":{"annotations":{"projectcalico.org/ASNumber":"65001"},"labels":{"topology.kubernetes.io/zone":"leaf1"}}}` {
		t.Errorf("node patch %s", p)
	}
}

func jsonTypeMatches(typ string, v any) bool {
	switch v.(type) {
	case string:
		return typ == "string"
	case bool:
		return typ == "boolean"
	case float64:
		return typ == "integer" || typ == "number"
	}
	return true
}

func inEnum(enum []any, v any) bool {
	for _, e := range enum {
		if e == v {
			return true
		}
	}
	return false
}

// An offline lab's Felix must not try to report usage to projectcalico.org
// (on unless switched off).
func TestFelixReportsNoUsage(t *testing.T) {
	objs, err := Resources(Options{PodCIDR: "172.31.128.0/18", BlockSize: 26, Encapsulation: "VXLAN"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if f, ok := o.(FelixConfiguration); ok {
			b, _ := json.Marshal(f.Spec)
			if !strings.Contains(string(b), `"usageReportingEnabled":false`) {
				t.Errorf("FelixConfiguration spec %s does not switch usage reporting off", b)
			}
			return
		}
	}
	t.Fatal("no FelixConfiguration")
}

// The HTTP probes must ask the port Felix listens on: the manifest's
// FELIX_HEALTHPORT when it sets one, Felix's default otherwise.
func TestHealthPort(t *testing.T) {
	for _, tt := range []struct {
		env  []any
		want int
	}{
		{nil, 9099},
		{[]any{map[string]any{"name": "FELIX_HEALTHENABLED", "value": "true"}}, 9099},
		{[]any{map[string]any{"name": "FELIX_HEALTHPORT", "value": "9199"}}, 9199},
		{[]any{map[string]any{"name": "FELIX_HEALTHPORT", "value": "x"}}, 9099},
	} {
		if got := healthPort(tt.env); got != tt.want {
			t.Errorf("healthPort(%v) = %d, want %d", tt.env, got, tt.want)
		}
	}
}
