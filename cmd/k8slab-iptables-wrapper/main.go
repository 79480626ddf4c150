// Command k8slab-iptables-wrapper stands for iptables, iptables-save,
// iptables-restore and their ip6tables twins in the bundle's kube-proxy
// image, as upstream's image's iptables-wrapper does: the first call
// decides which iptables the node uses (legacy or nft) from the rules
// already there, points those six names at that variant for every later
// call, and runs it. kube-proxy must write its rules where the node's
// other programs (the kubelet, Calico) write theirs: rules split across
// both would not see each other.
//
// Decision, as upstream's: the kubelet's hint chains (KUBE-IPTABLES-HINT,
// KUBE-KUBELET-CANARY) in one variant's mangle table decide; without
// them, the variant holding more rules; nft when neither has any.
package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// sbin is where the image keeps the names and the two variants.
const sbin = "/usr/sbin"

var names = []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"}

func main() {
	self := filepath.Base(os.Args[0])
	mode := decide(save)
	if err := point(sbin, mode); err != nil {
		fmt.Fprintf(os.Stderr, "k8slab-iptables-wrapper: %v\n", err)
		os.Exit(1)
	}
	cmd := exec.Command(filepath.Join(sbin, self), os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintf(os.Stderr, "k8slab-iptables-wrapper: %v\n", err)
		os.Exit(1)
	}
}

// save runs one variant's iptables-save or ip6tables-save (of one table,
// or all when table is ""); a variant that cannot read answers nothing.
func save(variant, family, table string) string {
	args := []string{family + "-save"}
	if table != "" {
		args = append(args, "-t", table)
	}
	var out bytes.Buffer
	cmd := exec.Command(filepath.Join(sbin, "xtables-"+variant+"-multi"), args...)
	cmd.Stdout = &out
	cmd.Run()
	return out.String()
}

// decide picks "legacy" or "nft" from what each variant's save prints.
func decide(save func(variant, family, table string) string) string {
	hints := func(variant string) int {
		n := 0
		for _, fam := range []string{"iptables", "ip6tables"} {
			for _, l := range strings.Split(save(variant, fam, "mangle"), "\n") {
				if strings.Contains(l, "KUBE-IPTABLES-HINT") || strings.Contains(l, "KUBE-KUBELET-CANARY") {
					n++
				}
			}
		}
		return n
	}
	if hints("nft") > 0 {
		return "nft"
	}
	if hints("legacy") > 0 {
		return "legacy"
	}
	rules := func(variant string) int {
		n := 0
		for _, fam := range []string{"iptables", "ip6tables"} {
			for _, l := range strings.Split(save(variant, fam, ""), "\n") {
				if strings.HasPrefix(l, "-") {
					n++
				}
			}
		}
		return n
	}
	if rules("legacy") > rules("nft") {
		return "legacy"
	}
	return "nft"
}

// point replaces the six names with links to the chosen variant.
func point(dir, mode string) error {
	for _, n := range names {
		p := filepath.Join(dir, n)
		tmp := p + ".k8slab-wrapper"
		os.Remove(tmp)
		if err := os.Symlink("xtables-"+mode+"-multi", tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, p); err != nil {
			return err
		}
	}
	return nil
}
