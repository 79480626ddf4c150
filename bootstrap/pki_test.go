package bootstrap

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
)

func parse(t *testing.T, kp KeyPair) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(kp.Cert)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var labEtcd = []EtcdMember{
	{"kube-node1", net.ParseIP("172.31.3.11")}, {"kube-node2", net.ParseIP("172.31.3.12")}, {"kube-node3", net.ParseIP("172.31.4.11")},
}

func TestEtcdPKI(t *testing.T) {
	ca, err := NewCA("etcd-ca")
	if err != nil {
		t.Fatal(err)
	}
	// A re-run reloads the same CA from the node.
	again, err := LoadCA(ca.KeyPair)
	if err != nil || string(again.Cert) != string(ca.Cert) {
		t.Fatalf("LoadCA: %v", err)
	}
	p, err := NewEtcdPKI(again, labEtcd)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.Cert)
	verify := func(kp KeyPair, name string, usage x509.ExtKeyUsage) error {
		_, err := parse(t, kp).Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}
	tests := []struct {
		what  string
		kp    KeyPair
		name  string
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{"server by IP", p.Server["kube-node2"], "172.31.3.12", x509.ExtKeyUsageServerAuth, true},
		{"server by hostname", p.Server["kube-node2"], "kube-node2", x509.ExtKeyUsageServerAuth, true},
		{"server for etcdctl on the node", p.Server["kube-node2"], "127.0.0.1", x509.ExtKeyUsageServerAuth, true},
		{"server is not another member", p.Server["kube-node2"], "172.31.3.11", x509.ExtKeyUsageServerAuth, false},
		{"peer as server", p.Peer["kube-node3"], "172.31.4.11", x509.ExtKeyUsageServerAuth, true},
		{"peer as client", p.Peer["kube-node3"], "", x509.ExtKeyUsageClientAuth, true},
		{"apiserver client", p.APIServerClient, "", x509.ExtKeyUsageClientAuth, true},
		{"apiserver client cannot serve", p.APIServerClient, "", x509.ExtKeyUsageServerAuth, false},
		{"health client", p.HealthClient, "", x509.ExtKeyUsageClientAuth, true},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			err := verify(tt.kp, tt.name, tt.usage)
			if (err == nil) != tt.ok {
				t.Errorf("verify: %v, want ok=%v", err, tt.ok)
			}
		})
	}
	other, _ := NewCA("other")
	if _, err := parse(t, p.HealthClient).Verify(x509.VerifyOptions{Roots: func() *x509.CertPool {
		r := x509.NewCertPool()
		r.AppendCertsFromPEM(other.Cert)
		return r
	}(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("a certificate verified under a foreign CA")
	}
}

func TestEtcdEnv(t *testing.T) {
	in := EtcdClusterInput{Token: "k8slab-lab", Members: labEtcd}
	env, err := EtcdEnv(in, "kube-node2")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ETCD_NAME=kube-node2\n",
		"ETCD_LISTEN_CLIENT_URLS=https://172.31.3.12:2379\n",
		"ETCD_INITIAL_CLUSTER=kube-node1=https://172.31.3.11:2380,kube-node2=https://172.31.3.12:2380,kube-node3=https://172.31.4.11:2380\n",
		"ETCD_CLIENT_CERT_AUTH=true\n", "ETCD_PEER_CLIENT_CERT_AUTH=true\n",
		"ETCD_TRUSTED_CA_FILE=/etc/etcd/pki/ca.crt\n", "ETCD_INITIAL_CLUSTER_TOKEN=k8slab-lab\n",
		"ETCD_WARNING_APPLY_DURATION=1s\n", "ETCD_WARNING_UNARY_REQUEST_DURATION=2s\n",
	} {
		if !strings.Contains(env, want) {
			t.Errorf("env lacks %q:\n%s", want, env)
		}
	}
	if _, err := EtcdEnv(in, "kube-node4"); err == nil {
		t.Error("a non-member got an env file")
	}
	if got := strings.Join(in.ClientEndpoints(), ","); got != "https://172.31.3.11:2379,https://172.31.3.12:2379,https://172.31.4.11:2379" {
		t.Errorf("endpoints: %s", got)
	}
}
