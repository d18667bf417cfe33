package main

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/reflinkfs/reflinkfs/internal/testenv"
)

// imageEntries walks an image directory and returns the mode of every
// entry by its path relative to dir (pebble may delete obsolete files
// while the walk runs; those are skipped).
func imageEntries(t *testing.T, dir string) map[string]fs.FileMode {
	t.Helper()
	modes := map[string]fs.FileMode{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		info, err := d.Info()
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		modes[rel] = info.Mode()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return modes
}

// assertPrivate fails for every entry with group or other permissions and
// checks that the image holds every kind of file it should.
func assertPrivate(t *testing.T, dir string) {
	t.Helper()
	modes := imageEntries(t, dir)
	seen := map[string]bool{}
	for rel, mode := range modes {
		if mode.Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want no group or other permissions", rel, mode)
		}
		for _, kind := range []string{".", "meta", ".sst", ".log", "MANIFEST-", "OPTIONS-", "LOCK", "CURRENT", "lock", "data", "daemon.log", "control.sock", "reflinkfs-image"} {
			if rel == kind || strings.HasPrefix(rel, "meta/") && strings.Contains(rel, kind) {
				seen[kind] = true
			}
		}
	}
	if len(seen) != 13 {
		t.Errorf("image directory lacks some kinds of file (has %v):\n%v", seen, modes)
	}
}

// The image directory and everything in it (metadata store, data, log,
// control socket, lock) is for its owner only, whatever the umask; an
// image made with wider modes is fixed at mount, which the log says once.
func TestImageIsPrivate(t *testing.T) {
	testenv.RequireFUSE(t)
	old := syscall.Umask(0o022) // the usual umask, inherited by the daemon
	defer syscall.Umask(old)
	bin := filepath.Join(t.TempDir(), "reflinkfs")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	img, mp := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	t.Cleanup(func() {
		if _, ok := mountedAt(t, mp); ok {
			runBin(t, bin, "umount", "--lazy", "--timeout", "30s", mp)
		}
	})
	writeNames := func(prefix string) {
		t.Helper()
		for i := range 200 {
			p := filepath.Join(mp, prefix+"-secret-name-"+strconv.Itoa(i))
			if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		f, err := os.Open(mp)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Sync(); err != nil { // commits: the WAL holds the names
			t.Fatal(err)
		}
	}

	mustRun(t, bin, "mount", "-d", "--size", "1G", "--cache-size", "64M", img, mp)
	writeNames("a")
	assertPrivate(t, img)
	mustRun(t, bin, "umount", mp)

	// An image from before: directories 0755, files 0644.
	for rel, mode := range imageEntries(t, img) {
		wide := fs.FileMode(0o644)
		if mode.IsDir() {
			wide = 0o755
		}
		if err := os.Chmod(filepath.Join(img, rel), wide); err != nil {
			t.Fatal(err)
		}
	}
	mustRun(t, bin, "mount", "-d", img, mp)
	writeNames("b")
	assertPrivate(t, img)
	mustRun(t, bin, "umount", mp)
	mustRun(t, bin, "mount", "-d", img, mp) // nothing left to fix: no second message
	mustRun(t, bin, "umount", mp)
	log, err := os.ReadFile(filepath.Join(img, daemonLogName))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "removed group and other permissions"); n != 1 {
		t.Errorf("daemon.log says %d times that it fixed the modes, want once:\n%s", n, log)
	}
}
