// Package fsatomic writes a file so that it appears whole or not at all.
package fsatomic

import (
	"io"
	"os"
	"path/filepath"
)

// WriteFile writes r to path through a temporary file beside it, then
// renames it into place: a stopped write (an interrupted bundle build, a
// download cut short) never leaves a half-written file under the final
// name. Parent directories are created; mode is set exactly, whatever
// the umask.
func WriteFile(path string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".k8slab-tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
