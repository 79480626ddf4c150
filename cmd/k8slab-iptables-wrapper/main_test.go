package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDecide feeds decide what each variant's save would print.
func TestDecide(t *testing.T) {
	const hint = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
	const rules = "*filter\n-A INPUT -j ACCEPT\n-A FORWARD -j DROP\nCOMMIT\n"
	cases := []struct {
		name         string
		legacy, nft  string // what save prints for the filter / all tables
		legacyMangle string
		nftMangle    string
		want         string
	}{
		{"nothing anywhere: nft", "", "", "", "", "nft"},
		{"the kubelet's hint in nft", rules + rules, "", "", hint, "nft"},
		{"the kubelet's hint in legacy, more nft rules", "", rules, hint, "", "legacy"},
		{"no hint, legacy has more rules", rules, "", "", "", "legacy"},
		{"no hint, as many rules: nft", rules, rules, "", "", "nft"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			save := func(variant, family, table string) string {
				if family != "iptables" {
					return ""
				}
				switch {
				case variant == "legacy" && table == "mangle":
					return c.legacyMangle
				case variant == "nft" && table == "mangle":
					return c.nftMangle
				case variant == "legacy":
					return c.legacy
				}
				return c.nft
			}
			if got := decide(save); got != c.want {
				t.Errorf("decide = %s, want %s", got, c.want)
			}
		})
	}
}

// TestPoint replaces the names (the wrapper itself at first) with links
// to the chosen variant.
func TestPoint(t *testing.T) {
	dir := t.TempDir()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("wrapper"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := point(dir, "legacy"); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if l, err := os.Readlink(filepath.Join(dir, n)); err != nil || l != "xtables-legacy-multi" {
			t.Errorf("%s -> %q (%v)", n, l, err)
		}
	}
}
