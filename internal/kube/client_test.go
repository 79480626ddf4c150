package kube

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func TestSplitDocs(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"a: 1\n", []string{"a: 1\n"}},
		{"---\na: 1\n---\nb: 2\n", []string{"", "a: 1\n", "b: 2\n"}},
		{"a: 1\n--- \nb: 2", []string{"a: 1\n", "b: 2"}},
		{"a: '---'\n----\n", []string{"a: '---'\n----\n"}},
		{"a: 1\n---", []string{"a: 1\n"}},
	}
	for _, c := range cases {
		if got := SplitDocs(c.in); !slices.Equal(got, c.want) {
			t.Errorf("SplitDocs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// A /readyz that fails names only its failing checks; a server that
// answers nothing useful keeps client-go's error.
func TestReadyzNamesFailingChecks(t *testing.T) {
	body := "[+]ping ok\n[+]etcd ok\n[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\n[+]shutdown ok\n[-]informer-sync failed: not synced\nreadyz check failed\n"
	for _, tt := range []struct {
		code       int
		body, want string
	}{
		{200, "ok", ""},
		{500, body, "not ready: poststarthook/rbac/bootstrap-roles, informer-sync"},
		{503, "[-]\n", "the server is currently unable to handle the request"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tt.code)
			io.WriteString(w, tt.body)
		}))
		c := &Client{Kube: kubernetes.NewForConfigOrDie(&rest.Config{Host: srv.URL})}
		err := c.Readyz(context.Background())
		srv.Close()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("HTTP %d %q: %v, want %q", tt.code, tt.body, err, tt.want)
		}
	}
}
