package ssh

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/pkg/sftp"
)

// Upload writes r to f.Path atomically: readers of f.Path see the old file
// or the whole new one, never half a binary. A seekable r is sent once
// more over a new connection when the first dies under the transfer: a
// provisioning run lost a 40 MB binary that way on a starved VM.
func (c *Client) Upload(ctx context.Context, f host.File, r io.Reader) error {
	defer c.use()()
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	s, seekable := r.(io.Seeker)
	var from int64
	if seekable {
		if from, err = s.Seek(0, io.SeekCurrent); err != nil {
			seekable = false
		}
	}
	err = c.upload(ctx, f, r)
	if err == nil || !seekable || ctx.Err() != nil || !lost(err) {
		return err
	}
	c.drop(conn)
	if _, serr := s.Seek(from, io.SeekStart); serr != nil {
		return err
	}
	if rerr := c.upload(ctx, f, r); rerr != nil {
		return fmt.Errorf("%w (the first attempt lost its connection: %v)", rerr, err)
	}
	return nil
}

// lost: the error says the transport went away, not that the node refused.
func lost(err error) bool {
	return errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, ErrConnectionLost)
}

func (c *Client) upload(ctx context.Context, f host.File, r io.Reader) error {
	if f.Mode == 0 {
		f.Mode = 0o644
	}
	if c.ep.User != "root" {
		return c.uploadViaSudo(ctx, f, r)
	}
	sc, err := c.sftpClient(ctx)
	if err != nil {
		return err
	}
	dir := path.Dir(f.Path)
	if err := sc.MkdirAll(dir); err != nil {
		return fmt.Errorf("upload %s: mkdir %s: %w", f.Path, dir, err)
	}
	tmp := path.Join(dir, "."+path.Base(f.Path)+".k8slab-"+randSuffix())
	if err := c.copyTo(ctx, tmp, f, r); err != nil {
		sc.Remove(tmp)
		return fmt.Errorf("upload %s: %w", f.Path, err)
	}
	fail := func(step string, err error) error {
		sc.Remove(tmp)
		return fmt.Errorf("upload %s: %s: %w", f.Path, step, err)
	}
	if err := sc.Chmod(tmp, f.Mode); err != nil {
		return fail("chmod", err)
	}
	if f.UID != 0 || f.GID != 0 {
		if err := sc.Chown(tmp, f.UID, f.GID); err != nil {
			return fail("chown", err)
		}
	}
	if err := sc.PosixRename(tmp, f.Path); err != nil {
		return fail("rename", err)
	}
	return nil
}

// uploadViaSudo stages the file where the login user may write, then
// moves it into place as root; the final rename is in the target directory
// so it stays atomic.
func (c *Client) uploadViaSudo(ctx context.Context, f host.File, r io.Reader) error {
	sc, err := c.sftpClient(ctx)
	if err != nil {
		return err
	}
	stage := "/tmp/.k8slab-upload-" + randSuffix()
	if err := c.copyTo(ctx, stage, f, r); err != nil {
		sc.Remove(stage)
		return fmt.Errorf("upload %s: %w", f.Path, err)
	}
	tmp := path.Join(path.Dir(f.Path), "."+path.Base(f.Path)+".k8slab-"+randSuffix())
	script := fmt.Sprintf("set -e; trap 'rm -f %[1]s' EXIT; mkdir -p %[2]s; cp %[1]s %[3]s; chmod %#[4]o %[3]s; chown %[5]d:%[6]d %[3]s; mv -f %[3]s %[7]s",
		host.Quote(stage), host.Quote(path.Dir(f.Path)), host.Quote(tmp), f.Mode.Perm(), f.UID, f.GID, host.Quote(f.Path))
	if err := c.Run(ctx, host.Cmd{Command: script}); err != nil {
		return fmt.Errorf("upload %s: %w", f.Path, err)
	}
	return nil
}

// copyTo streams r into a new remote file, reporting progress for large
// files; ctx cancels the transfer.
func (c *Client) copyTo(ctx context.Context, remote string, f host.File, r io.Reader) error {
	sc, err := c.sftpClient(ctx)
	if err != nil {
		return err
	}
	w, err := sc.OpenFile(remote, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return err
	}
	defer w.Close()
	if p := c.pool.opts.Progress; p != nil && f.Size >= c.pool.opts.ProgressMin {
		pr := &progressReader{r: r}
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					p(c.Name(), f.Path, pr.n.Load(), f.Size)
					return
				case <-t.C:
					p(c.Name(), f.Path, pr.n.Load(), f.Size)
				}
			}
		}()
		r = pr
	}
	done := make(chan error, 1)
	go func() {
		_, err := w.ReadFrom(r)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
		return w.Close()
	case <-ctx.Done():
		w.Close()
		c.Close()
		return ctx.Err()
	}
}

type progressReader struct {
	r io.Reader
	n atomic.Int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}

// ReadFile reads a remote file; non-root users read through sudo so that
// root-only files such as admin.conf are reachable.
func (c *Client) ReadFile(ctx context.Context, p string) ([]byte, error) {
	defer c.use()()
	if c.ep.User != "root" {
		var out bytes.Buffer
		if err := c.Run(ctx, host.Cmd{Command: "cat " + host.Quote(p), Stdout: &out}); err != nil {
			// As over SFTP: callers tell a missing file from a failed read.
			var exit *host.ExitError
			if errors.As(err, &exit) && strings.Contains(exit.Stderr, "No such file or directory") {
				return nil, fmt.Errorf("read %s: %w", p, fs.ErrNotExist)
			}
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		return out.Bytes(), nil
	}
	sc, err := c.sftpClient(ctx)
	if err != nil {
		return nil, err
	}
	f, err := sc.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return b, nil
}

func randSuffix() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
