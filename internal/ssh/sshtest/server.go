// Package sshtest serves the fan-out benchmarks. Start is a SIMULATED SSH
// endpoint: a minimal in-process x/crypto/ssh server that answers every
// exec request with "ok" (the command "hang" never ends: a stuck node),
// so k8slab's own cost shows without 200 sshd logins loading the
// machine; it proves nothing about real OpenSSH.
// StartOpenSSH runs real sshd processes on loopback, for the CPU each
// host costs the workstation against real servers.
package sshtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	xssh "golang.org/x/crypto/ssh"
)

// Servers is a set of simulated endpoints on loopback sharing one client key.
type Servers struct {
	Addrs   []string
	KeyFile string
	// Keepalives counts the keepalive@openssh.com probes answered.
	Keepalives atomic.Int64
	lns        []net.Listener
	wg         sync.WaitGroup
}

// Start listens on n loopback ports. The client key is written to dir.
func Start(n int, dir string) (*Servers, error) {
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, err := xssh.NewSignerFromKey(hostPriv)
	if err != nil {
		return nil, err
	}
	clientPub, clientPriv, _ := ed25519.GenerateKey(rand.Reader)
	blk, err := xssh.MarshalPrivateKey(clientPriv, "sshtest")
	if err != nil {
		return nil, err
	}
	s := &Servers{KeyFile: filepath.Join(dir, "id_ed25519")}
	if err := os.WriteFile(s.KeyFile, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, err
	}
	authorized, _ := xssh.NewPublicKey(clientPub)
	cfg := &xssh.ServerConfig{
		PublicKeyCallback: func(_ xssh.ConnMetadata, k xssh.PublicKey) (*xssh.Permissions, error) {
			if string(k.Marshal()) == string(authorized.Marshal()) {
				return nil, nil
			}
			return nil, os.ErrPermission
		},
	}
	cfg.AddHostKey(hostSigner)
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			s.Close()
			return nil, err
		}
		s.lns = append(s.lns, ln)
		s.Addrs = append(s.Addrs, ln.Addr().String())
		s.wg.Add(1)
		go s.serve(ln, cfg)
	}
	return s, nil
}

// Close stops listening; open connections end with the process.
func (s *Servers) Close() {
	for _, ln := range s.lns {
		ln.Close()
	}
	s.wg.Wait()
}

func (s *Servers) serve(ln net.Listener, cfg *xssh.ServerConfig) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go s.handle(c, cfg)
	}
}

func (s *Servers) handle(c net.Conn, cfg *xssh.ServerConfig) {
	sc, chans, reqs, err := xssh.NewServerConn(c, cfg)
	if err != nil {
		c.Close()
		return
	}
	defer sc.Close()
	go func() {
		for r := range reqs {
			if r.Type == "keepalive@openssh.com" {
				s.Keepalives.Add(1)
			}
			r.Reply(r.Type == "keepalive@openssh.com", nil)
		}
	}()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(xssh.UnknownChannelType, "session only")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer ch.Close()
			for r := range creqs {
				if r.Type != "exec" {
					r.Reply(false, nil)
					continue
				}
				r.Reply(true, nil)
				if len(r.Payload) > 4 && string(r.Payload[4:]) == "hang" {
					continue // no output, no exit: until the client gives up
				}
				ch.Write([]byte("ok\n"))
				status := make([]byte, 4)
				binary.BigEndian.PutUint32(status, 0)
				ch.SendRequest("exit-status", false, status)
				return
			}
		}()
	}
}
