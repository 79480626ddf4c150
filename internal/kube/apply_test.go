package kube

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
)

// fakeAPI is an API server that knows a few kinds and serves a CRD's
// group only some discovery rounds after the CRD was applied, as a
// loaded API server does.
type fakeAPI struct {
	mu          sync.Mutex
	lateRounds  int // discovery rounds between a CRD's apply and its kind being served
	crdApplied  bool
	roundsSince int
	applied     []string // kind/name in the order the PATCHes arrived
	inFlight    int
	maxInFlight int
}

func (f *fakeAPI) served() bool { return f.crdApplied && f.roundsSince > f.lateRounds }

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	resources := func(gv string, rs ...string) string {
		var out []string
		for _, r := range rs {
			name, kind, _ := strings.Cut(r, ":")
			kind, ns, _ := strings.Cut(kind, ":")
			out = append(out, `{"name":"`+name+`","kind":"`+kind+`","namespaced":`+map[bool]string{true: "true", false: "false"}[ns == "ns"]+`,"verbs":["get","patch"]}`)
		}
		return `{"kind":"APIResourceList","groupVersion":"` + gv + `","resources":[` + strings.Join(out, ",") + `]}`
	}
	f.mu.Lock()
	switch r.URL.Path {
	case "/api":
		if f.crdApplied {
			f.roundsSince++
		}
		f.mu.Unlock()
		io.WriteString(w, `{"kind":"APIVersions","versions":["v1"]}`)
		return
	case "/api/v1":
		f.mu.Unlock()
		io.WriteString(w, resources("v1", "serviceaccounts:ServiceAccount:ns", "namespaces:Namespace:"))
		return
	case "/apis":
		groups := []string{`{"name":"apiextensions.k8s.io","versions":[{"groupVersion":"apiextensions.k8s.io/v1","version":"v1"}],"preferredVersion":{"groupVersion":"apiextensions.k8s.io/v1","version":"v1"}}`,
			`{"name":"apps","versions":[{"groupVersion":"apps/v1","version":"v1"}],"preferredVersion":{"groupVersion":"apps/v1","version":"v1"}}`}
		if f.served() {
			groups = append(groups, `{"name":"crd.projectcalico.org","versions":[{"groupVersion":"crd.projectcalico.org/v1","version":"v1"}],"preferredVersion":{"groupVersion":"crd.projectcalico.org/v1","version":"v1"}}`)
		}
		f.mu.Unlock()
		io.WriteString(w, `{"kind":"APIGroupList","groups":[`+strings.Join(groups, ",")+`]}`)
		return
	case "/apis/apiextensions.k8s.io/v1":
		f.mu.Unlock()
		io.WriteString(w, resources("apiextensions.k8s.io/v1", "customresourcedefinitions:CustomResourceDefinition:"))
		return
	case "/apis/apps/v1":
		f.mu.Unlock()
		io.WriteString(w, resources("apps/v1", "daemonsets:DaemonSet:ns"))
		return
	case "/apis/crd.projectcalico.org/v1":
		f.mu.Unlock()
		io.WriteString(w, resources("crd.projectcalico.org/v1", "ippools:IPPool:", "felixconfigurations:FelixConfiguration:"))
		return
	}
	if r.Method != http.MethodPatch {
		f.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var o map[string]any
	json.Unmarshal(body, &o)
	kind := o["kind"].(string)
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	f.mu.Unlock()
	// Long enough for the other requests of a wave to arrive meanwhile.
	time.Sleep(20 * time.Millisecond)
	f.mu.Lock()
	f.inFlight--
	f.applied = append(f.applied, kind+"/"+o["metadata"].(map[string]any)["name"].(string))
	if kind == "CustomResourceDefinition" {
		f.crdApplied = true
	}
	f.mu.Unlock()
	w.Write(body)
}

func obj(apiVersion, kind, name, ns string) *unstructured.Unstructured {
	md := map[string]any{"name": name}
	if ns != "" {
		md["namespace"] = ns
	}
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind, "metadata": md}}
}

func TestApply(t *testing.T) {
	var objs []*unstructured.Unstructured
	objs = append(objs, obj("v1", "ServiceAccount", "calico-node", "kube-system"),
		obj("crd.projectcalico.org/v1", "IPPool", "default-ipv4-ippool", ""),
		obj("apps/v1", "DaemonSet", "calico-node", "kube-system"))
	for _, n := range []string{"ippools", "felixconfigurations", "bgppeers", "tiers", "networkpolicies", "hostendpoints"} {
		objs = append(objs, obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", n+".crd.projectcalico.org", ""))
	}
	objs = append(objs, obj("crd.projectcalico.org/v1", "FelixConfiguration", "default", ""),
		obj("v1", "Namespace", "calico-system", ""))

	for _, tt := range []struct {
		name       string
		lateRounds int
	}{
		{"CRD kinds served at once", 0},
		{"CRD kinds served three discovery rounds later", 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAPI{lateRounds: tt.lateRounds}
			srv := httptest.NewServer(f)
			defer srv.Close()
			c, err := newClient(&rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			c.poll = 10 * time.Millisecond
			var reported []int
			err = c.Apply(context.Background(), objs, func(done, total int, o *unstructured.Unstructured, took time.Duration) {
				if total != len(objs) {
					t.Errorf("total %d, want %d", total, len(objs))
				}
				reported = append(reported, done)
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(f.applied) != len(objs) {
				t.Fatalf("applied %d objects, want %d: %v", len(f.applied), len(objs), f.applied)
			}
			// CRDs and Namespaces first: the rest may need them.
			for i, a := range f.applied {
				first := strings.HasPrefix(a, "CustomResourceDefinition/") || strings.HasPrefix(a, "Namespace/")
				if first != (i < 7) {
					t.Errorf("apply order %v: %s at %d", f.applied, a, i)
				}
			}
			for i, d := range reported {
				if d != i+1 {
					t.Errorf("progress %v, want 1..%d", reported, len(objs))
					break
				}
			}
			if f.maxInFlight < 2 || f.maxInFlight > applyParallel {
				t.Errorf("at most %d applies in flight, want 2..%d", f.maxInFlight, applyParallel)
			}
		})
	}
}

// A kind no CRD brings is reported with its object once the wait is over.
func TestApplyUnservedKind(t *testing.T) {
	f := &fakeAPI{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c, err := newClient(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	c.poll, c.servedWithin = time.Millisecond, 20*time.Millisecond
	err = c.Apply(context.Background(), []*unstructured.Unstructured{obj("example.com/v1", "Widget", "w", "")}, nil)
	if err == nil || !strings.Contains(err.Error(), "Widget w") || len(f.applied) != 0 {
		t.Fatalf("Apply of an unserved kind: %v, applied %v", err, f.applied)
	}
}
