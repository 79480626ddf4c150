package install

import (
	"reflect"
	"strings"
	"testing"
)

// TestPhasesShareTheControlPlaneAccess: every phase after control-plane
// takes what it needs from the one Access control-plane fills (its
// declared Access field), and a run without control-plane says which
// phase must run first.
func TestPhasesShareTheControlPlaneAccess(t *testing.T) {
	var made *Access
	var users []string
	for _, p := range Phases(&Context{}) {
		f := reflect.ValueOf(p).Elem().FieldByName("Access")
		if !f.IsValid() {
			continue
		}
		a := f.Interface().(*Access)
		if _, ok := p.(*ControlPlane); ok {
			made = a
			continue
		}
		if made == nil || a != made {
			t.Errorf("%s does not take control-plane's Access", p.Name())
		}
		users = append(users, p.Name())
	}
	if got := strings.Join(users, " "); got != "dns calico join peering rollout kubeconfig" {
		t.Errorf("phases taking the Access: %s", got)
	}
	if _, _, err := (&Access{}).join(); err == nil || !strings.Contains(err.Error(), "control-plane phase must run first") {
		t.Errorf("join credentials before control-plane: %v", err)
	}
	a := &Access{}
	a.set([]byte("admin"), "sha256:x", "")
	if hash, token, err := a.join(); err != nil || hash != "sha256:x" || token != "" {
		t.Errorf("join() = %q, %q, %v", hash, token, err)
	}
}
