package fsatomic

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a", "b", "file")
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	if err := WriteFile(p, strings.NewReader("hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	st, _ := os.Stat(p)
	if err != nil || string(b) != "hello" || st.Mode().Perm() != 0o755 {
		t.Fatalf("read %q %v, mode %v", b, err, st.Mode())
	}
	// A failed copy leaves the old file as it was and no temporary file.
	err = WriteFile(p, io.MultiReader(strings.NewReader("partial"), errReader{}), 0o644)
	if err == nil {
		t.Fatal("a failing reader was written")
	}
	if b, _ := os.ReadFile(p); string(b) != "hello" {
		t.Errorf("the file was changed by a failed write: %q", b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(p)); len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("cut short") }
