package cluster

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// RecordPath is where install records the cluster's configuration on the
// control plane (0600): later runs compare against it, and commands that
// act on an installed cluster read it instead of asking for every flag.
const RecordPath = "/etc/k8slab/cluster.yaml"

// Record is the configuration as recorded: Artifacts is left out, since
// it is a path on one workstation, not a property of the cluster.
func (c *Config) Record() ([]byte, error) {
	r := *c
	r.Artifacts = ""
	b, err := yaml.Marshal(r)
	if err != nil {
		return nil, err
	}
	return append([]byte("# Written by k8slab install; compared on every later install.\n"), b...), nil
}

// Diff lists the settings that differ, as "field: recorded → now".
func (c *Config) Diff(recorded *Config) []string {
	a, b := flatten(recorded), flatten(c)
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		if k == "artifacts" {
			continue
		}
		if a[k] != b[k] {
			out = append(out, fmt.Sprintf("%s: %s → %s", k, orNone(a[k]), orNone(b[k])))
		}
	}
	sort.Strings(out)
	return out
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// flatten turns the config into dotted keys with comparable values.
func flatten(c *Config) map[string]string {
	out := map[string]string{}
	b, _ := json.Marshal(c)
	var m map[string]any
	json.Unmarshal(b, &m)
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, v := range t {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(p, v)
			}
		case []any:
			var parts []string
			for _, e := range t {
				parts = append(parts, fmt.Sprint(e))
			}
			out[prefix] = strings.Join(parts, ",")
		default:
			out[prefix] = fmt.Sprint(t)
		}
	}
	walk("", m)
	return out
}
