package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCalicoImages copies a Calico version's archives into the bundle
// under their image references, and refuses one whose checksum is not the
// folder's SHA256SUMS; a folder without archives adds nothing.
func TestCalicoImages(t *testing.T) {
	src := t.TempDir()
	var sums strings.Builder
	for _, n := range []string{"node", "cni", "kube-controllers"} {
		f := "calico-" + n + "-v3.32.1.tar"
		body := []byte("archive of " + n)
		if err := os.WriteFile(filepath.Join(src, f), body, 0o644); err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(body)
		sums.WriteString(hex.EncodeToString(h[:]) + "  " + f + "\n")
	}
	if err := os.WriteFile(filepath.Join(src, "SHA256SUMS"), []byte(sums.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &builder{out: t.TempDir(), logf: t.Logf}
	got, err := b.calicoImages(src, "v3.32.1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"quay.io/calico/node:v3.32.1":             "images/node_v3.32.1.tar",
		"quay.io/calico/cni:v3.32.1":              "images/cni_v3.32.1.tar",
		"quay.io/calico/kube-controllers:v3.32.1": "images/kube-controllers_v3.32.1.tar",
	}
	for ref, rel := range want {
		if got[ref] != rel {
			t.Errorf("%s: %q, want %q", ref, got[ref], rel)
		}
		if b, err := os.ReadFile(filepath.Join(b.out, rel)); err != nil || !strings.HasPrefix(string(b), "archive of ") {
			t.Errorf("%s: %q %v", rel, b, err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "calico-cni-v3.32.1.tar"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.calicoImages(src, "v3.32.1"); err == nil || !strings.Contains(err.Error(), "SHA256SUMS says") {
		t.Errorf("a changed archive: %v, want a checksum refusal", err)
	}
	if got, err := b.calicoImages(t.TempDir(), "v3.32.1"); err != nil || len(got) != 0 {
		t.Errorf("no archives: %v %v, want none and no error", got, err)
	}
}
