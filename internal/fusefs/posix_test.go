package fusefs

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// An open directory stays stat-able after it is removed, with nlink 0, as
// on a local file system: after rmdir and after a rename over it.
func TestFstatRemovedDirectory(t *testing.T) {
	m := mountFresh(t)
	for _, remove := range []struct {
		name string
		fn   func(dir string) error
	}{
		{"rmdir", func(dir string) error { return os.Remove(dir) }},
		{"rename over", func(dir string) error {
			if err := os.Mkdir(dir+".new", 0o755); err != nil {
				return err
			}
			return unix.Rename(dir+".new", dir) // os.Rename refuses a directory target
		}},
	} {
		dir := m.path("d-" + remove.name)
		if err := os.Mkdir(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		closed := false
		t.Cleanup(func() {
			if !closed {
				unix.Close(fd)
			}
		})
		var before unix.Stat_t
		if err := unix.Fstat(fd, &before); err != nil {
			t.Fatal(err)
		}
		if err := remove.fn(dir); err != nil {
			t.Fatalf("%s: %v", remove.name, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatalf("fstat of the open directory after %s: %v", remove.name, err)
		}
		if st.Nlink != 0 || st.Ino != before.Ino || st.Mode != before.Mode {
			t.Errorf("after %s: ino %d nlink %d mode %o; want ino %d nlink 0 mode %o",
				remove.name, st.Ino, st.Nlink, st.Mode, before.Ino, before.Mode)
		}
		// Nothing can be created in it.
		if _, err := unix.Openat(fd, "x", unix.O_CREAT|unix.O_WRONLY, 0o644); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("create in the removed directory after %s: %v, want ENOENT", remove.name, err)
		}
		// Reading it fails as on any Linux file system (the kernel marks it dead).
		if _, err := unix.Getdents(fd, make([]byte, 4096)); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("getdents after %s: %v, want ENOENT", remove.name, err)
		}
		// An open removed directory is an orphan: fsck accepts it.
		fsckClean(t, m)
		unix.Close(fd)
		closed = true
	}
	fsckClean(t, m)
}

func fsckClean(t *testing.T, m *testMount) {
	t.Helper()
	rep, err := m.fsys.Fsck(false)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() {
		t.Fatalf("fsck: %s", strings.Join(rep.Problems, "\n"))
	}
}
