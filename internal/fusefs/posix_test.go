package fusefs

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs"
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

// noatime mounts without atime updates, for tests that read files whose
// atimes they compare.
func noatime(c *mountConfig) { c.engine.Atime = reflinkfs.AtimeNever }

// statAtime returns stat(1)'s atime of path, in nanoseconds as text.
func statAtime(t *testing.T, path string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "stat", "-c", "%.9X", path))
}

// Reads through the mount (cat of a file, ls of a directory) update atime
// by the engine's policy, and stat(1) sees it at once.
func TestAtimeThroughMount(t *testing.T) {
	for _, c := range []struct {
		name          string
		policy        reflinkfs.AtimePolicy
		first, repeat bool // does the first read (atime <= mtime) / a repeated read update?
	}{
		{"relatime", reflinkfs.AtimeRelative, true, false},
		{"strictatime", reflinkfs.AtimeStrict, true, true},
		{"noatime", reflinkfs.AtimeNever, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mountFresh(t, func(cfg *mountConfig) { cfg.engine.Atime = c.policy })
			f, d := m.path("f"), m.path("d")
			writeFile(t, f, []byte("some data"))
			sh(t, "mkdir "+d+" && echo x >"+d+"/x")
			for _, r := range []struct {
				path string
				read []string
			}{{f, []string{"cat", f}}, {d, []string{"ls", d}}} {
				before := statAtime(t, r.path)
				run(t, r.read[0], r.read[1:]...)
				first := statAtime(t, r.path)
				run(t, r.read[0], r.read[1:]...)
				second := statAtime(t, r.path)
				if (first != before) != c.first {
					t.Errorf("%s: atime %s -> %s after the first read; want updated %v", r.read[0], before, first, c.first)
				}
				if (second != first) != c.repeat {
					t.Errorf("%s: atime %s -> %s after a second read; want updated %v", r.read[0], first, second, c.repeat)
				}
				// A read through a descriptor opened with O_NOATIME never updates.
				sh(t, "touch -a -d @0 "+r.path) // atime older than mtime: due by every policy
				old := statAtime(t, r.path)
				fd, err := unix.Open(r.path, unix.O_RDONLY|unix.O_NOATIME, 0)
				if err != nil {
					t.Fatal(err)
				}
				if r.path == d {
					_, err = unix.Getdents(fd, make([]byte, 4096))
				} else {
					_, err = unix.Read(fd, make([]byte, 64))
				}
				unix.Close(fd)
				if err != nil {
					t.Fatal(err)
				}
				if got := statAtime(t, r.path); got != old {
					t.Errorf("%s with O_NOATIME: atime %s -> %s", r.read[0], old, got)
				}
			}
		})
	}
}

// O_TMPFILE: an unnamed file that linkat(2) can name (by AT_EMPTY_PATH or
// through /proc/self/fd), or that vanishes with its space at close.
func TestTmpfileThroughMount(t *testing.T) {
	requireTool(t, "xfs_io")
	m := mountFresh(t)
	sh(t, "mkdir "+m.path("d"))
	// xfs_io -T opens the directory with O_TMPFILE; flink links it.
	run(t, "xfs_io", "-T", "-c", "pwrite -q -S 0x61 0 64k", "-c", "flink "+m.path("d/linked"), m.path("d"))
	if got := readFile(t, m.path("d/linked")); len(got) != 64<<10 || got[0] != 'a' || got[len(got)-1] != 'a' {
		t.Errorf("linked tmpfile holds %d bytes", len(got))
	}
	fd, err := unix.Open(m.path("d"), unix.O_TMPFILE|unix.O_RDWR, 0o640)
	if err != nil {
		t.Fatalf("open O_TMPFILE: %v", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Pwrite(fd, []byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	if st.Nlink != 0 || st.Size != 5 || st.Mode != unix.S_IFREG|0o640 {
		t.Errorf("tmpfile fstat: nlink %d size %d mode %o", st.Nlink, st.Size, st.Mode)
	}
	if ents, err := os.ReadDir(m.path("d")); err != nil || len(ents) != 1 {
		t.Errorf("directory lists %v (%v); want only the linked file", ents, err)
	}
	if err := unix.Linkat(fd, "", unix.AT_FDCWD, m.path("d/byfd"), unix.AT_EMPTY_PATH); err != nil {
		t.Fatalf("linkat AT_EMPTY_PATH: %v", err)
	}
	if got := string(readFile(t, m.path("d/byfd"))); got != "hello" {
		t.Errorf("linked by fd: %q", got)
	}
	if err := unix.Fstat(fd, &st); err != nil || st.Nlink != 1 {
		t.Errorf("after linkat: nlink %d, err %v", st.Nlink, err)
	}

	// Through /proc/self/fd, as glibc's programs do without CAP_DAC_READ_SEARCH.
	fd2, err := unix.Open(m.path("d"), unix.O_TMPFILE|unix.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd2)
	if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd2), unix.AT_FDCWD, m.path("d/byproc"), unix.AT_SYMLINK_FOLLOW); err != nil {
		t.Fatalf("linkat via /proc/self/fd: %v", err)
	}

	// O_EXCL: never linkable.
	fd3, err := unix.Open(m.path("d"), unix.O_TMPFILE|unix.O_WRONLY|unix.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd3)
	if err := unix.Linkat(fd3, "", unix.AT_FDCWD, m.path("d/excl"), unix.AT_EMPTY_PATH); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("linkat of an O_EXCL tmpfile: %v, want ENOENT", err)
	}

	// Never linked: its space comes back at close.
	base := m.fsys.Stats().UsedBytes
	fd4, err := unix.Open(m.path("d"), unix.O_TMPFILE|unix.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(fd4, make([]byte, 4<<20), 0); err != nil {
		t.Fatal(err)
	}
	if used := m.fsys.Stats().UsedBytes; used < base+4<<20 {
		t.Errorf("used %d after writing 4 MiB to a tmpfile, %d before", used, base)
	}
	unix.Close(fd4)
	// The kernel sends RELEASE after close returns, asynchronously.
	for i := 0; ; i++ {
		if err := m.fsys.Sync(); err != nil {
			t.Fatal(err)
		}
		used := m.fsys.Stats().UsedBytes
		if used <= base {
			break
		}
		if i == 500 {
			t.Fatalf("used %d 5s after closing the unlinked tmpfile, %d before", used, base)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fsckClean(t, m)
}
