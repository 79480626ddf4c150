package bootstrap

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// KeyPair is a certificate and its private key, PEM-encoded.
type KeyPair struct {
	Cert []byte
	Key  []byte
}

// CA signs certificates. k8slab generates the etcd PKI itself (as kubespray
// does for host-deployed etcd), so members can be bootstrapped before any
// kubeadm runs.
type CA struct {
	KeyPair
	cert *x509.Certificate
	key  crypto.Signer
}

// Certificate lifetimes, as kubeadm uses them.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
)

// NewCA makes a self-signed CA.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour), // tolerate small clock skew between nodes
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return caFrom(der, key)
}

// LoadCA reads a CA back (a re-run reuses the cluster's CA).
func LoadCA(kp KeyPair) (*CA, error) {
	cb, _ := pem.Decode(kp.Cert)
	kb, _ := pem.Decode(kp.Key)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("CA: not PEM")
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	return caFrom(cb.Bytes, key)
}

func caFrom(der []byte, key *ecdsa.PrivateKey) (*CA, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{
		KeyPair: KeyPair{Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			Key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})},
		cert: cert, key: key,
	}, nil
}

// CertSpec describes a leaf certificate.
type CertSpec struct {
	CommonName   string
	Organization []string
	IPs          []net.IP
	DNSNames     []string
	Server       bool
	Client       bool
}

// Issue signs a new leaf certificate.
func (ca *CA) Issue(s CertSpec) (KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, err
	}
	var usage []x509.ExtKeyUsage
	if s.Server {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	if s.Client {
		usage = append(usage, x509.ExtKeyUsageClientAuth)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.CommonName, Organization: s.Organization},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usage,
		IPAddresses:  s.IPs,
		DNSNames:     s.DNSNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return KeyPair{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return KeyPair{}, err
	}
	return KeyPair{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// EtcdMember is one etcd node's identity.
type EtcdMember struct {
	Name string // hostname
	IP   net.IP
}

// EtcdPKI is everything an external etcd cluster and its clients need.
type EtcdPKI struct {
	CA *CA
	// Server and Peer are per member name.
	Server map[string]KeyPair
	Peer   map[string]KeyPair
	// APIServerClient is kube-apiserver's client certificate.
	APIServerClient KeyPair
	// HealthClient is k8slab's own client, for health and member checks.
	HealthClient KeyPair
}

// NewEtcdPKI issues the etcd certificates for members under ca. Server
// certificates also name localhost, for etcdctl on the node itself; peer
// certificates serve both directions of member-to-member TLS.
func NewEtcdPKI(ca *CA, members []EtcdMember) (*EtcdPKI, error) {
	p := &EtcdPKI{CA: ca, Server: map[string]KeyPair{}, Peer: map[string]KeyPair{}}
	for _, m := range members {
		srv, err := ca.Issue(CertSpec{CommonName: m.Name, IPs: []net.IP{m.IP, net.IPv4(127, 0, 0, 1)},
			DNSNames: []string{m.Name, "localhost"}, Server: true, Client: true})
		if err != nil {
			return nil, err
		}
		peer, err := ca.Issue(CertSpec{CommonName: m.Name, IPs: []net.IP{m.IP}, DNSNames: []string{m.Name}, Server: true, Client: true})
		if err != nil {
			return nil, err
		}
		p.Server[m.Name], p.Peer[m.Name] = srv, peer
	}
	var err error
	if p.APIServerClient, err = ca.Issue(CertSpec{CommonName: "kube-apiserver-etcd-client", Client: true}); err != nil {
		return nil, err
	}
	if p.HealthClient, err = ca.Issue(CertSpec{CommonName: "k8slab-etcd-healthcheck-client", Client: true}); err != nil {
		return nil, err
	}
	return p, nil
}
