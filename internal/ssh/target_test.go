package ssh

import (
	"strings"
	"testing"

	"github.com/kevinburke/ssh_config"
)

func TestParseTargets(t *testing.T) {
	tests := []struct {
		in      string
		want    []Target
		wantErr string
	}{
		{in: "172.31.3.11,172.31.3.12", want: []Target{{Host: "172.31.3.11"}, {Host: "172.31.3.12"}}},
		{in: " ubuntu@kube-node1:2222 , [fd00::1]:22", want: []Target{{User: "ubuntu", Host: "kube-node1", Port: 2222}, {Host: "fd00::1", Port: 22}}},
		{in: "172.31.3.11,172.31.3.11", wantErr: `node "172.31.3.11" is listed twice`},
		{in: "172.31.3.311", wantErr: `node "172.31.3.311": invalid IPv4 address`},
		{in: "kube_node1", wantErr: "not an IP address or hostname"},
		{in: "host:0", wantErr: "invalid port"},
		{in: "Bad User@host", wantErr: "invalid user name"},
		{in: " , ", wantErr: "no nodes given"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTargets(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v", got)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("[%d] = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestResolvePrecedence(t *testing.T) {
	cfg, err := ssh_config.Decode(strings.NewReader(`
Host lab1
  HostName 172.31.3.11
  User gns3
  Port 2200
  IdentityFile /keys/lab
  ProxyJump admin@172.31.0.2
Host *
  User fallback
`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		target string
		opts   Options
		want   Endpoint
	}{
		{
			name: "ssh_config fills everything", target: "lab1", opts: Options{User: "root", SSHConfig: cfg},
			want: Endpoint{Name: "lab1", Addr: "172.31.3.11:2200", User: "gns3", KeyFiles: []string{"/keys/lab"}, Jump: "admin@172.31.0.2"},
		},
		{
			name: "flags win over ssh_config", target: "lab1",
			opts: Options{User: "ops", UserSet: true, KeyFiles: []string{"/k"}, Jump: "j@1.2.3.4", SSHConfig: cfg},
			want: Endpoint{Name: "lab1", Addr: "172.31.3.11:2200", User: "ops", KeyFiles: []string{"/k"}, Jump: "j@1.2.3.4"},
		},
		{
			name: "the node spec wins over flags", target: "me@lab1:22", opts: Options{User: "ops", UserSet: true, SSHConfig: cfg},
			want: Endpoint{Name: "me@lab1:22", Addr: "172.31.3.11:22", User: "me", KeyFiles: []string{"/keys/lab"}, Jump: "admin@172.31.0.2"},
		},
		{
			name: "default user root unless ssh_config says otherwise", target: "10.0.0.9", opts: Options{User: "root", SSHConfig: cfg},
			want: Endpoint{Name: "10.0.0.9", Addr: "10.0.0.9:22", User: "fallback"},
		},
		{
			name: "no ssh_config", target: "10.0.0.9", opts: Options{User: "root"},
			want: Endpoint{Name: "10.0.0.9", Addr: "10.0.0.9:22", User: "root"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, err := ParseTarget(tt.target)
			if err != nil {
				t.Fatal(err)
			}
			got, err := resolve(tg, &tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want.KeyFiles == nil {
				tt.want.KeyFiles = got.KeyFiles // defaults depend on $HOME
				if len(got.KeyFiles) != 3 || !strings.HasSuffix(got.KeyFiles[0], "/.ssh/id_ed25519") {
					t.Errorf("default keys: %v", got.KeyFiles)
				}
			}
			if got.Name != tt.want.Name || got.Addr != tt.want.Addr || got.User != tt.want.User || got.Jump != tt.want.Jump ||
				strings.Join(got.KeyFiles, ",") != strings.Join(tt.want.KeyFiles, ",") {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseHostKeyPolicy(t *testing.T) {
	for _, ok := range []string{"strict", "accept-new", "insecure"} {
		if _, err := ParseHostKeyPolicy(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "no", "Insecure", "accept_new"} {
		if _, err := ParseHostKeyPolicy(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
