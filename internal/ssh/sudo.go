package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/k8slab/k8slab/internal/host"
	xssh "golang.org/x/crypto/ssh"
)

type sudoMode int

const (
	sudoUnknown sudoMode = iota // root login, or not yet detected
	sudoNoPassword
	sudoWithPassword
)

// detectSudo finds out once per connection how a non-root user becomes
// root, so every later command is wrapped the same way and a missing
// sudo right fails at connect time, before any step changed anything.
func (p *Pool) detectSudo(ctx context.Context, conn *xssh.Client) (sudoMode, error) {
	if err := runRaw(conn, "sudo -n true", nil); err == nil {
		return sudoNoPassword, nil
	}
	if p.opts.Password == "" {
		return 0, errors.New("sudo: a password is required (give --password or --ask-password, or allow NOPASSWD)")
	}
	// -k ignores cached credentials, so sudo always reads the password
	// line and never hands it to the command as input.
	if err := runRaw(conn, "sudo -k -S -p '' true", strings.NewReader(p.opts.Password+"\n")); err != nil {
		return 0, errors.New("sudo: the password was refused or the user may not run commands as root")
	}
	return sudoWithPassword, nil
}

func runRaw(conn *xssh.Client, cmd string, stdin io.Reader) error {
	s, err := conn.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	var stderr bytes.Buffer
	s.Stdin, s.Stderr = stdin, &stderr
	if err := s.Run(cmd); err != nil {
		return fmt.Errorf("%s: %w: %s", cmd, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// wrap turns a command into what is sent on the wire. The password only
// ever travels on stdin: never in the command line, so never in ps or logs.
func (c *Client) wrap(command string, stdin io.Reader) (string, io.Reader) {
	switch c.sudo {
	case sudoNoPassword:
		return "sudo -n -- sh -c " + host.Quote(command), stdin
	case sudoWithPassword:
		if stdin == nil {
			stdin = strings.NewReader("")
		}
		return "sudo -k -S -p '' -- sh -c " + host.Quote(command),
			io.MultiReader(strings.NewReader(c.pool.opts.Password+"\n"), stdin)
	}
	return command, stdin
}

// scrubSudo removes sudo's own lecture lines from an error message.
func (c *Client) scrubSudo(s string) string {
	if c.sudo != sudoWithPassword {
		return s
	}
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "[sudo]") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}
