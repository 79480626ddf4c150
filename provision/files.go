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
	nodescript "github.com/k8slab/k8slab/scripts/node"
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
	// IfMissing: k8slab installs the file only where there is none, and
	// leaves whatever version is there alone. Calico's install-cni
	// replaces the CNI plugins it ships (host-local, loopback, portmap)
	// with its own build; restoring k8slab's on every run made a no-op
	// re-run upload them and restart containerd, and calico-node's next
	// start put its own back.
	IfMissing bool
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
	out, err := host.Output(ctx, h, FileCheckScript(files))
	if err != nil {
		return nil, fmt.Errorf("checking files: %w", err)
	}
	return ApplyFiles(ctx, h, files, ParseFileCheck(out))
}

// FileCheckScript checks files on a node (scripts/node/file-check.sh),
// in a subshell so that callers can fold it into a larger script and
// save a round trip.
func FileCheckScript(files []FileSpec) string {
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = f.Remote
	}
	return nodescript.Subshell("file-check.sh", paths...) + "\n"
}

// FileState is what a node has at a path.
type FileState struct {
	SHA256, Mode string
	// Recorded: the sum came from k8slab's record (size and mtime
	// matched), so the record needs no rewrite.
	Recorded bool
}

// ParseFileCheck reads FileCheckScript's lines out of any output.
func ParseFileCheck(out string) map[string]FileState {
	have := map[string]FileState{}
	for _, v := range nodescript.Parse(out).All("file") {
		if f := strings.SplitN(v, " ", 4); len(f) == 4 {
			have[f[3]] = FileState{SHA256: f[0], Mode: f[1], Recorded: f[2] == "recorded"}
		}
	}
	return have
}

// ApplyFiles uploads the files whose state differs from have and
// returns their paths. A node where every file matched its record is not
// touched at all (a no-op re-run costs only the check).
func ApplyFiles(ctx context.Context, h host.Host, files []FileSpec, have map[string]FileState) ([]string, error) {
	var changed []string
	var record strings.Builder
	rewrite := false
	for _, f := range files {
		if differs(f, have) {
			if err := upload(ctx, h, f); err != nil {
				return changed, err
			}
			changed = append(changed, f.Remote)
			rewrite = true
		} else if !have[f.Remote].Recorded {
			rewrite = true
		}
		fmt.Fprintf(&record, "echo \"%s|%s|$(stat -c '%%s|%%Y' %s)|\"; ", f.SHA256, f.Remote, host.Quote(f.Remote))
	}
	if !rewrite {
		return nil, nil
	}
	// Record every file (now all correct) for the next quick check,
	// keeping one line per path.
	_, err := host.Output(ctx, h, fmt.Sprintf(`mkdir -p %[1]s && { cat %[2]s 2>/dev/null; %[3]s } | awk -F'|' '{last[$2]=$0} END {for (p in last) print last[p]}' > %[2]s.tmp && mv %[2]s.tmp %[2]s`,
		stateDir, stateFile, record.String()))
	if err != nil {
		return changed, fmt.Errorf("recording installed files: %w", err)
	}
	return changed, nil
}

func differs(f FileSpec, have map[string]FileState) bool {
	st, ok := have[f.Remote]
	if ok && f.IfMissing {
		return false
	}
	return !ok || st.SHA256 != f.SHA256 || st.Mode != fmt.Sprintf("%o", f.Mode.Perm())
}

// Differing counts the files ApplyFiles would upload.
func Differing(files []FileSpec, have map[string]FileState) int {
	n := 0
	for _, f := range files {
		if differs(f, have) {
			n++
		}
	}
	return n
}

// stateDir holds k8slab's records on a node, as a shell expression: tests
// on the local machine point K8SLAB_STATE_DIR elsewhere.
const stateDir = `"${K8SLAB_STATE_DIR:-/var/lib/k8slab}"`

// stateFile records sha256|path|size|mtime| of every file k8slab installed.
const stateFile = `"${K8SLAB_STATE_DIR:-/var/lib/k8slab}/files.state"`

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
