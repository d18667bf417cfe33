package fusefs

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMountShowsInProcMounts(t *testing.T) {
	m := mountFresh(t)
	mounts := string(readFile(t, "/proc/self/mounts"))
	want := m.image + " " + m.dir + " fuse.reflinkfs "
	if !strings.Contains(mounts, want) {
		t.Fatalf("/proc/self/mounts lacks %q", want)
	}
	line := mounts[strings.Index(mounts, want):]
	line = line[:strings.IndexByte(line, '\n')]
	for _, opt := range []string{"default_permissions", "allow_other"} {
		if !strings.Contains(line, opt) {
			t.Errorf("mount options %q lack %s", line, opt)
		}
	}
}

func TestWriteReadStat(t *testing.T) {
	m := mountFresh(t)
	data := pattern(1, 3<<20+123)
	p := m.path("f")
	writeFile(t, p, data)
	if got := readFile(t, p); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, differ from the %d written", len(got), len(data))
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != int64(len(data)) || st.Nlink != 1 || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o777 != 0o644 {
		t.Fatalf("stat: size %d nlink %d mode %o", st.Size, st.Nlink, st.Mode)
	}
	if st.Blocks*512 < int64(len(data)) {
		t.Errorf("st_blocks %d covers less than the %d bytes written", st.Blocks, len(data))
	}
	if st.Blksize != preferredIOSize {
		t.Errorf("st_blksize %d, want %d", st.Blksize, preferredIOSize)
	}
	if st.Uid != 0 || st.Gid != 0 {
		t.Errorf("owner %d:%d, want the caller's 0:0", st.Uid, st.Gid)
	}
	// O_TRUNC on an existing file (the kernel sends a setattr).
	writeFile(t, p, []byte("short"))
	if got := string(readFile(t, p)); got != "short" {
		t.Errorf("after rewrite with O_TRUNC: %d bytes", len(got))
	}
	// O_APPEND writes land at the end.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(" and appended")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := string(readFile(t, p)); got != "short and appended" {
		t.Errorf("after O_APPEND write: %q", got)
	}
}

// Size, nlink, mtime and ctime are exact through every path right after
// each change, despite long attribute timeouts.
func TestAttributesExactAfterChanges(t *testing.T) {
	m := mountFresh(t)
	p := m.path("a")
	writeFile(t, p, []byte("hello"))
	f1, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	f2, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()

	before := statOf(t, p)
	time.Sleep(10 * time.Millisecond) // let the clock move so times differ
	if _, err := f1.WriteAt(bytes.Repeat([]byte("x"), 10000), 100); err != nil {
		t.Fatal(err)
	}
	fi, err := f2.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 10100 {
		t.Fatalf("size seen through another descriptor %d, want 10100", fi.Size())
	}
	after := statOf(t, p)
	if !tsAfter(after.Mtim, before.Mtim) || !tsAfter(after.Ctim, before.Ctim) {
		t.Errorf("mtime/ctime not advanced by write: before %v/%v after %v/%v", before.Mtim, before.Ctim, after.Mtim, after.Ctim)
	}

	if err := os.Link(p, m.path("b")); err != nil {
		t.Fatal(err)
	}
	if st := statOf(t, p); st.Nlink != 2 || !tsAfter(st.Ctim, after.Ctim) && st.Ctim != after.Ctim {
		t.Errorf("after link: nlink %d ctime %v", st.Nlink, st.Ctim)
	}
	if st := statOf(t, m.path("b")); st.Nlink != 2 {
		t.Errorf("after link: other name nlink %d", st.Nlink)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if st := statOf(t, m.path("b")); st.Nlink != 1 {
		t.Errorf("after unlink: nlink %d, want 1", st.Nlink)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f1.Fd()), &st); err != nil || st.Nlink != 1 {
		t.Errorf("fstat of open file after unlink: nlink %d err %v", st.Nlink, err)
	}
	if err := f1.Truncate(50); err != nil {
		t.Fatal(err)
	}
	if st := statOf(t, m.path("b")); st.Size != 50 {
		t.Errorf("after ftruncate: size %d, want 50", st.Size)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of removed name: %v", err)
	}
	writeFile(t, p, []byte("again"))
	if got := string(readFile(t, p)); got != "again" {
		t.Errorf("recreated file reads %q", got)
	}
}

func statOf(t testing.TB, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func tsAfter(a, b unix.Timespec) bool {
	return a.Sec > b.Sec || a.Sec == b.Sec && a.Nsec > b.Nsec
}

func TestDirectories(t *testing.T) {
	m := mountFresh(t)
	if err := os.MkdirAll(m.path("d/e/f"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		writeFile(t, m.path("d/file"+strings.Repeat("x", i%50)+string(rune('a'+i%26))+itoa(i)), []byte{byte(i)})
	}
	ents, err := os.ReadDir(m.path("d"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 301 {
		t.Fatalf("readdir: %d entries, want 301", len(ents))
	}
	if err := os.Remove(m.path("d/e")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir of non-empty directory: %v", err)
	}
	if err := os.Remove(m.path("d/e/f")); err != nil {
		t.Fatal(err)
	}
	if st := statOf(t, m.path("d")); st.Nlink != 3 {
		t.Errorf("directory nlink %d, want 3", st.Nlink)
	}
	// fsync of a directory commits the whole filesystem.
	d, err := os.Open(m.path("d"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Errorf("fsync of a directory: %v", err)
	}
	d.Close()
	// ls -l goes through READDIRPLUS.
	out := run(t, "ls", "-la", m.path("d"))
	if n := strings.Count(out, "\n"); n != 304 { // total, ., .., e, 300 files
		t.Errorf("ls -la printed %d lines, want 304", n)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}
