package provision

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/k8slab/k8slab/internal/host"
)

// FileSpec is a file a node must have: from a local file (a bundle
// artifact) or generated content.
type FileSpec struct {
	Remote string
	Mode   fs.FileMode
	// Local is read when Content is nil.
	Local   string
	Content []byte
	// SHA256 of the content; computed from Content when empty.
	SHA256 string
	Size   int64
}

// Generated makes a FileSpec from content.
func Generated(remote string, mode fs.FileMode, content string) FileSpec {
	sum := sha256.Sum256([]byte(content))
	return FileSpec{Remote: remote, Mode: mode, Content: []byte(content), SHA256: hex.EncodeToString(sum[:]), Size: int64(len(content))}
}

// SyncFiles makes the node's files match, uploading only those whose
// sha256 differs (one round trip to learn which). It returns the remote
// paths it changed, so callers restart a service only when needed.
func SyncFiles(ctx context.Context, h host.Host, files []FileSpec) ([]string, error) {
	if len(files) == 0 {
		return nil, nil
	}
	var cmd strings.Builder
	cmd.WriteString("for f in")
	for _, f := range files {
		cmd.WriteString(" " + host.Quote(f.Remote))
	}
	// Mode is part of "the same": a binary that lost its x bit is fixed.
	cmd.WriteString(`; do if [ -f "$f" ]; then echo "$(sha256sum "$f" | cut -d' ' -f1) $(stat -c %a "$f") $f"; fi; done`)
	out, err := host.Output(ctx, h, cmd.String())
	if err != nil {
		return nil, fmt.Errorf("checking files: %w", err)
	}
	have := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) == 3 {
			have[f[2]] = f[0] + " " + f[1]
		}
	}
	var changed []string
	for _, f := range files {
		if have[f.Remote] == fmt.Sprintf("%s %o", f.SHA256, f.Mode.Perm()) {
			continue
		}
		if err := upload(ctx, h, f); err != nil {
			return changed, err
		}
		changed = append(changed, f.Remote)
	}
	return changed, nil
}

func upload(ctx context.Context, h host.Host, f FileSpec) error {
	var r io.Reader
	if f.Content != nil {
		r = bytes.NewReader(f.Content)
	} else {
		lf, err := os.Open(f.Local)
		if err != nil {
			return err
		}
		defer lf.Close()
		r = lf
	}
	return h.Upload(ctx, host.File{Path: f.Remote, Mode: f.Mode, Size: f.Size}, r)
}
