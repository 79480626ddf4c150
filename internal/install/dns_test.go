package install

import (
	"strings"
	"testing"
)

// kubeadm v1.37's Corefile, as read from a cluster it installed.
const kubeadmCorefile = `.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
`

func TestWithoutForward(t *testing.T) {
	got := WithoutForward(kubeadmCorefile)
	if strings.Contains(got, "forward") || strings.Contains(got, "max_concurrent") {
		t.Errorf("forward left in:\n%s", got)
	}
	for _, keep := range []string{"kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure", "cache 30 {\n       disable success cluster.local", "loop\n    reload\n    loadbalance\n}"} {
		if !strings.Contains(got, keep) {
			t.Errorf("lost %q:\n%s", keep, got)
		}
	}
	if got := WithoutForward("    forward . 8.8.8.8\n    cache 30\n"); got != "    cache 30\n" {
		t.Errorf("one-line forward: %q", got)
	}
	if WithoutForward(got) != got {
		t.Error("not idempotent")
	}
}
