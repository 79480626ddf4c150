package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/ssh/sshtest"
	xssh "golang.org/x/crypto/ssh"
)

// BenchmarkExecOpenSSH200 is what one host costs the workstation's CPU
// against real servers: `k8slab exec -- hostname` on 200 OpenSSH sshd
// processes on loopback, against a plain x/crypto/ssh fan-out (the same
// library, key and parallelism, nothing else: the floor k8slab builds
// on) in the same run, each a child process measured by its rusage. CPU
// time, not wall time: the wall is set by 200 sshd logins sharing the
// machine's cores. Target: k8slab within 1.5× the plain fan-out.
func BenchmarkExecOpenSSH200(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("real sshd needs root")
	}
	// K8SLAB_BENCH_HOSTS lowers the count: each login runs the user's
	// shell start-up files on the server, which on this workstation
	// (root's bashrc runs pyenv) cost seconds of CPU per login.
	hosts := 200
	if n, err := strconv.Atoi(os.Getenv("K8SLAB_BENCH_HOSTS")); err == nil && n > 0 {
		hosts = n
	}
	dir := b.TempDir()
	srv, err := sshtest.StartOpenSSH(hosts, dir)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	env := append(os.Environ(),
		"K8SLAB_NODES="+strings.Join(srv.Addrs, ","),
		"K8SLAB_SSH_KEY="+srv.KeyFile,
		"K8SLAB_KNOWN_HOSTS="+filepath.Join(dir, "known_hosts"),
		"K8SLAB_LOG_DIR="+filepath.Join(dir, "logs"),
		"SSH_AUTH_SOCK=",
	)
	cpu := func(argv []string, extra ...string) time.Duration {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(env, extra...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", argv[0], err, tail(string(out), 10))
		}
		return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	k8slabRun := []string{binPath, "exec", "--output", "json", "--", "hostname"}
	plainRun := []string{os.Args[0], "-test.run", "^$"}
	// The first run records 200 host keys; users' later runs check them.
	cpu(k8slabRun)
	var k, p []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k = append(k, cpu(k8slabRun))
		p = append(p, cpu(plainRun, "K8SLAB_PLAIN_FANOUT=1"))
	}
	b.StopTimer()
	km, pm := median(k), median(p)
	b.ReportMetric(float64(km.Microseconds())/1000/float64(hosts), "k8slab-cpu-ms/host")
	b.ReportMetric(float64(pm.Microseconds())/1000/float64(hosts), "plain-cpu-ms/host")
	b.ReportMetric(km.Seconds()/pm.Seconds(), "ratio")
	if km > pm*3/2 {
		b.Errorf("k8slab used %s of CPU for %d hosts, more than 1.5× the plain fan-out's %s", km, hosts, pm)
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// plainFanout is the benchmark's floor, run as a child process of the
// test binary (K8SLAB_PLAIN_FANOUT): connect, authenticate with the key,
// run hostname and read its output on every node, 32 at a time as
// k8slab's default --parallel, host keys not checked.
func plainFanout() int {
	key, err := os.ReadFile(os.Getenv("K8SLAB_SSH_KEY"))
	if err != nil {
		return 1
	}
	signer, err := xssh.ParsePrivateKey(key)
	if err != nil {
		return 1
	}
	cfg := &xssh.ClientConfig{User: "root", Auth: []xssh.AuthMethod{xssh.PublicKeys(signer)},
		HostKeyCallback: xssh.InsecureIgnoreHostKey(), Timeout: time.Minute}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for _, addr := range strings.Split(os.Getenv("K8SLAB_NODES"), ",") {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := func() error {
				c, err := xssh.Dial("tcp", addr, cfg)
				if err != nil {
					return err
				}
				defer c.Close()
				s, err := c.NewSession()
				if err != nil {
					return err
				}
				defer s.Close()
				_, err = s.Output("hostname")
				return err
			}()
			if err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed > 0 {
		return 1
	}
	return 0
}
