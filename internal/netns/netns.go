// Package netns opens sockets inside a named network namespace without
// moving the process there: lab addresses exist only inside the lab's
// namespaces, and the root namespace never gets a route to them.
package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Path is where iproute2 keeps named namespaces.
func Path(name string) string { return "/run/netns/" + name }

// Dialer dials from inside the namespace at Path.
type Dialer struct {
	Path string
}

// DialContext creates the socket on an OS thread switched into the
// namespace; a socket belongs to the namespace it was created in, so the
// connection stays there after the thread switches back.
func (d Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := Do(d.Path, func() error {
		var nd net.Dialer
		c, err := nd.DialContext(ctx, network, addr)
		conn = c
		return err
	})
	return conn, err
}

// Do runs fn on a thread inside the namespace at path. fn must not start
// goroutines that expect to be in that namespace.
func Do(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", path, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: Go retires it when this goroutine ends,
		// so no other goroutine ever runs in the wrong namespace.
		return fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}
