// Command k8slab-probe is the one binary in the k8slab-probe test image
// that `k8slab verify` runs in its test pods: it serves HTTP, fetches a
// URL and resolves a name. It is static (no libc, no shell) so the image
// holds nothing else, and it is built into the offline bundle because a
// lab without internet cannot pull a test image.
//
//	k8slab-probe serve [-port 8080]
//	k8slab-probe get [-want reachable|unreachable] [-for 60s] [-message FILE] URL
//	k8slab-probe resolve [-for 60s] [-message FILE] NAME
//
// get and resolve keep trying until what they want is seen or -for has
// passed: a network policy or a DNS record takes a moment to be programmed,
// and a check must not fail on that moment. The exit code is the verdict
// (0: seen); the last line printed is the reason verify reports, also
// written to -message (the pod's /dev/termination-log, which the kubelet
// puts into the pod's status: verify reads it without fetching logs).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout))
}

func run(ctx context.Context, args []string, out io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(out, "usage: k8slab-probe serve|get|resolve ...")
		return 2
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(out)
	port := fs.Int("port", 8080, "serve: port")
	want := fs.String("want", "reachable", "get: reachable or unreachable")
	wait := fs.Duration("for", 60*time.Second, "get, resolve: keep trying this long")
	message := fs.String("message", "", "get, resolve: also write the verdict's reason to this file")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *message != "" {
		out = &lastLine{w: out, path: *message}
	}
	switch {
	case args[0] == "serve" && fs.NArg() == 0:
		return serve(ctx, fmt.Sprintf(":%d", *port), out, nil)
	case args[0] == "get" && fs.NArg() == 1 && (*want == "reachable" || *want == "unreachable"):
		return retry(ctx, *wait, out, func(ctx context.Context) (bool, string) {
			msg, err := get(ctx, fs.Arg(0))
			if err != nil {
				return *want == "unreachable", fmt.Sprintf("%s unreachable: %v", fs.Arg(0), err)
			}
			return *want == "reachable", fmt.Sprintf("%s answered: %s", fs.Arg(0), msg)
		})
	case args[0] == "resolve" && fs.NArg() == 1:
		return retry(ctx, *wait, out, func(ctx context.Context) (bool, string) {
			addrs, err := net.DefaultResolver.LookupHost(ctx, fs.Arg(0))
			if err != nil {
				return false, fmt.Sprintf("%s: %v", fs.Arg(0), err)
			}
			return true, fmt.Sprintf("%s resolves to %s", fs.Arg(0), strings.Join(addrs, ", "))
		})
	}
	fmt.Fprintf(out, "k8slab-probe: bad arguments %q\n", args)
	return 2
}

// lastLine passes output on and keeps the last line in a file.
type lastLine struct {
	w    io.Writer
	path string
}

func (l *lastLine) Write(p []byte) (int, error) {
	if line := strings.TrimSpace(string(p)); line != "" {
		os.WriteFile(l.path, []byte(line), 0o644)
	}
	return l.w.Write(p)
}

// serve answers every request with the pod's hostname, so a client's
// output names the pod that answered.
func serve(ctx context.Context, addr string, out io.Writer, ready chan<- net.Addr) int {
	name, _ := os.Hostname()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(out, err)
		return 1
	}
	if ready != nil {
		ready <- l.Addr()
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "k8slab-probe %s\n", name)
	})}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Fprintf(out, "serving on %s\n", l.Addr())
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(out, err)
		return 1
	}
	return 0
}

func get(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return strings.TrimSpace(string(b)), nil
}

// retry calls try every second until it reports what is wanted or wait
// has passed, and prints the last reason.
func retry(ctx context.Context, wait time.Duration, out io.Writer, try func(context.Context) (bool, string)) int {
	deadline := time.Now().Add(wait)
	for {
		ok, reason := try(ctx)
		if ok {
			fmt.Fprintln(out, reason)
			return 0
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			fmt.Fprintln(out, reason)
			return 1
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
