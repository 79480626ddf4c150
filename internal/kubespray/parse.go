// Package kubespray reads a kubespray inventory as the user has it — INI
// (inventory.cfg, hosts.ini) or YAML (hosts.yaml), old and new group
// names, the group_vars beside it — into k8slab's cluster description.
// Every variable k8slab does not use is listed with why; one that would
// change the cluster in a way k8slab cannot honour is refused, naming its
// file and line.
package kubespray

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Pos is where something was written.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Value is a variable's value as written, with its place.
type Value struct {
	Raw string
	Pos Pos
}

// Host is one inventory host, in the order the inventory names them.
type Host struct {
	Name string
	Vars map[string]Value
	Pos  Pos
}

// Group is an inventory group, its name normalized (kube-master →
// kube_control_plane, k8s-cluster → k8s_cluster, ...).
type Group struct {
	Name     string
	Hosts    []string
	Children []string
	Vars     map[string]Value
	Pos      Pos
}

// Inventory is what was read, before it is judged.
type Inventory struct {
	Hosts  []*Host
	Groups map[string]*Group
	// GroupVars are the variables of group_vars files, by group.
	GroupVars map[string]map[string]Value
	problems  []string
	calico    calicoVars
}

func (inv *Inventory) refuse(p Pos, format string, args ...any) {
	inv.problems = append(inv.problems, p.String()+": "+fmt.Sprintf(format, args...))
}

// groupAliases are kubespray's old group names and their current ones.
var groupAliases = map[string]string{
	"kube-master": "kube_control_plane", "kube_master": "kube_control_plane",
	"kube-node": "kube_node", "k8s-cluster": "k8s_cluster", "calico-rr": "calico_rr",
}

func normGroup(name string) string {
	if n, ok := groupAliases[name]; ok {
		return n
	}
	return name
}

func (inv *Inventory) host(name string, p Pos) *Host {
	for _, h := range inv.Hosts {
		if h.Name == name {
			return h
		}
	}
	h := &Host{Name: name, Vars: map[string]Value{}, Pos: p}
	inv.Hosts = append(inv.Hosts, h)
	return h
}

func (inv *Inventory) group(name string, p Pos) *Group {
	name = normGroup(name)
	g, ok := inv.Groups[name]
	if !ok {
		g = &Group{Name: name, Vars: map[string]Value{}, Pos: p}
		inv.Groups[name] = g
	}
	return g
}

// Read parses an inventory file (INI or YAML, by content) and the
// group_vars directory beside it.
func Read(path string) (*Inventory, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	inv := &Inventory{Groups: map[string]*Group{}, GroupVars: map[string]map[string]Value{}}
	if isYAML(path, b) {
		inv.readYAML(path, b)
	} else {
		inv.readINI(path, b)
	}
	if err := inv.readGroupVars(filepath.Join(filepath.Dir(path), "group_vars")); err != nil {
		return nil, err
	}
	if err := inv.readHostVars(filepath.Join(filepath.Dir(path), "host_vars")); err != nil {
		return nil, err
	}
	return inv, nil
}

func isYAML(path string, b []byte) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		return true
	case ".ini", ".cfg":
		return false
	}
	trimmed := bytes.TrimSpace(b)
	return bytes.HasPrefix(trimmed, []byte("all:")) || bytes.HasPrefix(trimmed, []byte("---"))
}

// readINI reads Ansible's INI inventory: [group], [group:children],
// [group:vars], host lines with key=value variables.
func (inv *Inventory) readINI(path string, b []byte) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	section, kind := "ungrouped", ""
	seen := map[string]map[string]int{} // section -> host -> line
	for line := 1; sc.Scan(); line++ {
		p := Pos{path, line}
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") || strings.HasPrefix(text, ";") {
			continue
		}
		if strings.HasPrefix(text, "[") {
			if !strings.HasSuffix(text, "]") {
				inv.refuse(p, "malformed section header %q", text)
				continue
			}
			section, kind, _ = strings.Cut(text[1:len(text)-1], ":")
			if kind != "" && kind != "children" && kind != "vars" {
				inv.refuse(p, "section [%s:%s]: only :children and :vars are inventory sections", section, kind)
			}
			inv.group(section, p)
			continue
		}
		fields := strings.Fields(text)
		g := inv.group(section, p)
		switch kind {
		case "children":
			g.Children = append(g.Children, normGroup(fields[0]))
		case "vars":
			k, v, ok := strings.Cut(text, "=")
			if !ok {
				inv.refuse(p, "[%s:vars]: %q is not key=value", section, text)
				continue
			}
			g.Vars[strings.TrimSpace(k)] = Value{unquote(strings.TrimSpace(v)), p}
		default:
			name := fields[0]
			if strings.ContainsAny(name, "[]") {
				inv.refuse(p, "host pattern %q: list the hosts one per line", name)
				continue
			}
			if seen[section] == nil {
				seen[section] = map[string]int{}
			}
			if first, dup := seen[section][name]; dup {
				inv.refuse(p, "host %s is listed twice in [%s] (first on line %d)", name, section, first)
				continue
			}
			seen[section][name] = line
			h := inv.host(name, p)
			for _, f := range fields[1:] {
				k, v, ok := strings.Cut(f, "=")
				if !ok {
					inv.refuse(p, "host %s: %q is not key=value", name, f)
					continue
				}
				if old, dup := h.Vars[k]; dup && old.Raw != unquote(v) {
					inv.refuse(p, "host %s: %s=%s, but %s set %s", name, k, unquote(v), old.Pos, old.Raw)
				}
				h.Vars[k] = Value{unquote(v), p}
			}
			g.Hosts = append(g.Hosts, name)
		}
	}
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}

// readYAML reads the YAML inventory: all: {hosts, children, vars},
// children recursively.
func (inv *Inventory) readYAML(path string, b []byte) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		inv.refuse(Pos{path, 1}, "not a YAML inventory: %v", err)
		return
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		inv.refuse(Pos{path, 1}, "a YAML inventory is a mapping with the group all")
		return
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		inv.yamlGroup(path, root.Content[i].Value, root.Content[i], root.Content[i+1])
	}
}

func (inv *Inventory) yamlGroup(path, name string, key, body *yaml.Node) {
	g := inv.group(name, Pos{path, key.Line})
	if body.Kind != yaml.MappingNode {
		return // "kube_node:" with nothing under it
	}
	for i := 0; i+1 < len(body.Content); i += 2 {
		k, v := body.Content[i], body.Content[i+1]
		p := Pos{path, k.Line}
		switch k.Value {
		case "hosts":
			if v.Kind != yaml.MappingNode {
				continue
			}
			seen := map[string]int{}
			for j := 0; j+1 < len(v.Content); j += 2 {
				hk, hv := v.Content[j], v.Content[j+1]
				hp := Pos{path, hk.Line}
				if first, dup := seen[hk.Value]; dup {
					inv.refuse(hp, "host %s is listed twice in %s (first on line %d)", hk.Value, g.Name, first)
					continue
				}
				seen[hk.Value] = hk.Line
				h := inv.host(hk.Value, hp)
				for name, val := range yamlVars(path, hv) {
					if old, dup := h.Vars[name]; dup && old.Raw != val.Raw {
						inv.refuse(val.Pos, "host %s: %s=%s, but %s set %s", h.Name, name, val.Raw, old.Pos, old.Raw)
					}
					h.Vars[name] = val
				}
				g.Hosts = append(g.Hosts, hk.Value)
			}
		case "children":
			if v.Kind != yaml.MappingNode {
				continue
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				g.Children = append(g.Children, normGroup(v.Content[j].Value))
				inv.yamlGroup(path, v.Content[j].Value, v.Content[j], v.Content[j+1])
			}
		case "vars":
			for name, val := range yamlVars(path, v) {
				g.Vars[name] = val
			}
		default:
			inv.refuse(p, "group %s: %q is not hosts, children or vars", g.Name, k.Value)
		}
	}
}

// yamlVars are a mapping's scalar values (others kept as YAML text).
func yamlVars(path string, n *yaml.Node) map[string]Value {
	out := map[string]Value{}
	if n == nil || n.Kind != yaml.MappingNode {
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		raw := v.Value
		if v.Kind != yaml.ScalarNode {
			b, _ := yaml.Marshal(v)
			raw = strings.TrimSpace(string(b))
		}
		out[k.Value] = Value{raw, Pos{path, k.Line}}
	}
	return out
}

// readGroupVars reads group_vars/<group>.yml and group_vars/<group>/*.yml.
func (inv *Inventory) readGroupVars(dir string) error {
	return readVarsDir(inv, dir, func(group string, vars map[string]Value) {
		group = normGroup(group)
		if inv.GroupVars[group] == nil {
			inv.GroupVars[group] = map[string]Value{}
		}
		for k, v := range vars {
			inv.GroupVars[group][k] = v
		}
	})
}

// readHostVars reads host_vars/<host>.yml and host_vars/<host>/*.yml.
func (inv *Inventory) readHostVars(dir string) error {
	return readVarsDir(inv, dir, func(name string, vars map[string]Value) {
		for _, h := range inv.Hosts {
			if h.Name == name {
				for k, v := range vars {
					h.Vars[k] = v
				}
				return
			}
		}
		for _, v := range vars {
			inv.refuse(v.Pos, "host_vars for %s, which the inventory does not list", name)
			return
		}
	})
}

// readVarsDir reads Ansible's <dir>/<name>.yml and <dir>/<name>/*.yml,
// in name order, handing each file's variables to add.
func readVarsDir(inv *Inventory, dir string, add func(name string, vars map[string]Value)) error {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	type file struct{ name, path string }
	var files []file
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			sub, err := os.ReadDir(filepath.Join(dir, name))
			if err != nil {
				return err
			}
			for _, f := range sub {
				if isVarsFile(f.Name()) {
					files = append(files, file{name, filepath.Join(dir, name, f.Name())})
				}
			}
		} else if isVarsFile(name) {
			files = append(files, file{strings.TrimSuffix(strings.TrimSuffix(name, ".yml"), ".yaml"), filepath.Join(dir, name)})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	for _, f := range files {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return err
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(b, &doc); err != nil {
			inv.refuse(Pos{f.path, 1}, "not YAML: %v", err)
			continue
		}
		if len(doc.Content) == 0 {
			continue // empty or comments only
		}
		add(f.name, yamlVars(f.path, doc.Content[0]))
	}
	return nil
}

func isVarsFile(name string) bool {
	return strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, ".yaml")
}
