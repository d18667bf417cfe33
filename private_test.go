package reflinkfs_test

import (
	"bytes"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

// wideModes lists the entries of an image directory that group or others
// may use.
func wideModes(t *testing.T, dir string) []string {
	t.Helper()
	var wide []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o077 != 0 {
			wide = append(wide, p+" "+info.Mode().String())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return wide
}

// An image is its owner's only, whatever the umask: Create makes it so,
// and Open fixes an image with wider modes, saying so once.
func TestImageDirectoryIsPrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "img")
	var log bytes.Buffer
	opt := reflinkfs.Options{Size: 64 << 20, CacheSize: 1 << 20, Logger: slog.New(slog.NewTextHandler(&log, nil))}
	openAt := dir
	session := func() {
		t.Helper()
		fsys, err := reflinkfs.Open(openAt, opt)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"a-secret-name", "another-secret-name"} {
			f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
			if err == nil {
				_, err = f.WriteAt([]byte("x"), 0)
				f.Close()
			}
			if err != nil && !os.IsExist(err) {
				t.Fatal(err)
			}
		}
		if err := fsys.Close(); err != nil {
			t.Fatal(err)
		}
	}
	fsys, err := reflinkfs.Create(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	fsys.Close()
	session()
	if wide := wideModes(t, dir); len(wide) > 0 {
		t.Errorf("a new image is readable by others:\n%s", strings.Join(wide, "\n"))
	}
	if strings.Contains(log.String(), "removed group and other permissions") {
		t.Errorf("a new image needed fixing:\n%s", log.String())
	}

	// An image from before: 0755 directories, 0644 files.
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(p, 0o755)
		}
		return os.Chmod(p, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	openAt = filepath.Join(t.TempDir(), "link") // the image's path may be a symlink
	if err := os.Symlink(dir, openAt); err != nil {
		t.Fatal(err)
	}
	session()
	session()
	if wide := wideModes(t, dir); len(wide) > 0 {
		t.Errorf("open left the image readable by others:\n%s", strings.Join(wide, "\n"))
	}
	if n := strings.Count(log.String(), "removed group and other permissions"); n != 1 {
		t.Errorf("the log says %d times that the modes were fixed, want once:\n%s", n, log.String())
	}
}
