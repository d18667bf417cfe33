package fusefs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs/ioctl"
)

func openRW(t testing.TB, p string) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func openRO(t testing.TB, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func allShared(exts []ioctl.Extent) bool {
	if len(exts) == 0 {
		return false
	}
	for _, e := range exts {
		if !e.Shared {
			return false
		}
	}
	return true
}

func TestIoctlCloneAndFiemap(t *testing.T) {
	m := mountFresh(t)
	data := pattern(11, 1<<20+100) // unaligned tail
	writeFile(t, m.path("src"), data)
	writeFile(t, m.path("dst"), bytes.Repeat([]byte("old"), 1<<20))
	if err := m.fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	used := m.fsys.Stats().UsedBytes
	src, dst := openRO(t, m.path("src")), openRW(t, m.path("dst"))

	if err := ioctl.Clone(dst, src); err != nil {
		t.Fatalf("Clone: %v", err)
	}
	if fi, _ := dst.Stat(); fi.Size() != int64(len(data)) {
		t.Errorf("clone: dst size %d, want %d", fi.Size(), len(data))
	}
	if got := readFile(t, m.path("dst")); !bytes.Equal(got, data) {
		t.Fatalf("clone: dst content differs")
	}
	se, err := ioctl.Fiemap(src)
	if err != nil {
		t.Fatalf("Fiemap: %v", err)
	}
	de, err := ioctl.Fiemap(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !allShared(se) || !allShared(de) {
		t.Errorf("after clone extents not shared: src %+v dst %+v", se, de)
	}
	var mapped int64
	for i, e := range de {
		mapped += e.Length
		if e.Physical != se[i].Physical {
			t.Errorf("extent %d: dst physical %d, src %d", i, e.Physical, se[i].Physical)
		}
	}
	if mapped < int64(len(data)) {
		t.Errorf("dst extents map %d bytes, want ≥ %d", mapped, len(data))
	}
	if err := m.fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	// The old dst blocks were freed, the clone added none.
	if after := m.fsys.Stats().UsedBytes; after > used {
		t.Errorf("used bytes grew from %d to %d by a clone", used, after)
	}

	// Clone a middle range to another offset; length 0 = to EOF.
	d2 := openRW(t, m.path("d2"))
	if err := ioctl.CloneRange(d2, src, 4096, 8192, 65536); err != nil {
		t.Fatalf("CloneRange: %v", err)
	}
	got := readFile(t, m.path("d2"))
	if len(got) != 65536+8192 || !bytes.Equal(got[65536:], data[4096:4096+8192]) || !bytes.Equal(got[:65536], make([]byte, 65536)) {
		t.Errorf("CloneRange: size %d or content wrong", len(got))
	}
	if err := ioctl.CloneRange(d2, src, 1<<20, 0, 1<<20); err != nil {
		t.Fatalf("CloneRange to EOF: %v", err)
	}
	if got := readFile(t, m.path("d2")); len(got) != 1<<20+100 || !bytes.Equal(got[1<<20:], data[1<<20:]) {
		t.Errorf("CloneRange to EOF: size %d", len(got))
	}
	if err := ioctl.CloneRange(d2, src, 100, 4096, 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("unaligned CloneRange: %v, want EINVAL", err)
	}

	// Access mode and mount checks.
	wo, err := os.OpenFile(m.path("src"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer wo.Close()
	if err := ioctl.CloneRange(d2, wo, 0, 4096, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("source open write-only: %v, want EBADF", err)
	}
	// O_PATH needs no read permission, so it must not serve as a source.
	pfd, err := unix.Open(m.path("src"), unix.O_PATH, 0)
	if err != nil {
		t.Fatal(err)
	}
	opath := os.NewFile(uintptr(pfd), m.path("src"))
	defer opath.Close()
	if err := ioctl.CloneRange(d2, opath, 0, 4096, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("source opened O_PATH: %v, want EBADF", err)
	}
	if err := ioctl.CloneRange(src, src, 0, 4096, 8192); !errors.Is(err, unix.EBADF) {
		t.Errorf("destination open read-only: %v, want EBADF", err)
	}
	outside, err := os.CreateTemp(t.TempDir(), "outside")
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	if err := ioctl.CloneRange(d2, outside, 0, 0, 0); !errors.Is(err, unix.EXDEV) {
		t.Errorf("source on another filesystem: %v, want EXDEV", err)
	}
	dirf := openRO(t, m.dir)
	if err := ioctl.CloneRange(d2, dirf, 0, 0, 0); !errors.Is(err, unix.EISDIR) {
		t.Errorf("source is a directory: %v, want EISDIR", err)
	}
}

func TestIoctlDedupeAndUnshare(t *testing.T) {
	m := mountFresh(t)
	data := pattern(12, 2<<20)
	writeFile(t, m.path("a"), data)
	writeFile(t, m.path("b"), data)
	other := append([]byte(nil), data...)
	other[12345] ^= 1
	writeFile(t, m.path("c"), other)
	if err := m.fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	used := m.fsys.Stats().UsedBytes
	a, b, c := openRO(t, m.path("a")), openRW(t, m.path("b")), openRW(t, m.path("c"))

	n, differ, err := ioctl.DedupeRange(b, 0, a, 0, 2<<20)
	if err != nil || differ || n != 2<<20 {
		t.Fatalf("DedupeRange of equal files: %d %v %v", n, differ, err)
	}
	if be, _ := ioctl.Fiemap(b); !allShared(be) {
		t.Errorf("after dedupe b not shared: %+v", be)
	}
	if err := m.fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	if freed := used - m.fsys.Stats().UsedBytes; freed < 2<<20 {
		t.Errorf("dedupe freed %d bytes, want %d", freed, 2<<20)
	}
	n, differ, err = ioctl.DedupeRange(c, 0, a, 0, 2<<20)
	if err != nil || !differ || n != 0 {
		t.Errorf("DedupeRange of differing files: %d %v %v", n, differ, err)
	}
	if got := readFile(t, m.path("c")); !bytes.Equal(got, other) {
		t.Errorf("failed dedupe changed the destination")
	}

	// Unshare gives b private blocks again; content unchanged.
	if err := ioctl.Unshare(b, 0, 1<<20); err != nil {
		t.Fatalf("Unshare: %v", err)
	}
	be, err := ioctl.Fiemap(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range be {
		if e.Logical < 1<<20 && e.Shared {
			t.Errorf("extent %+v still shared after unshare", e)
		}
		if e.Logical >= 1<<20 && !e.Shared {
			t.Errorf("extent %+v outside the unshared range lost sharing", e)
		}
	}
	if got := readFile(t, m.path("b")); !bytes.Equal(got, data) {
		t.Errorf("unshare changed content")
	}
}

// A file with more extents than one ioctl batch is listed completely.
func TestIoctlFiemapManyExtents(t *testing.T) {
	m := mountFresh(t)
	const blocks = 200
	writeFile(t, m.path("f"), pattern(13, blocks*4096))
	f := openRW(t, m.path("f"))
	for i := 1; i < blocks; i += 2 {
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(i)*4096, 4096); err != nil {
			t.Fatal(err)
		}
	}
	exts, err := ioctl.Fiemap(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(exts) != blocks/2 {
		t.Fatalf("fiemap: %d extents, want %d", len(exts), blocks/2)
	}
	for i, e := range exts {
		if e.Logical != int64(2*i)*4096 || e.Length != 4096 || e.Shared || e.Unwritten {
			t.Fatalf("extent %d: %+v", i, e)
		}
	}
}

// The ioctls work from another process (and any of its threads): the
// daemon finds the source descriptor through the caller's pid.
func TestIoctlFromOtherProcess(t *testing.T) {
	requireTool(t, "python3")
	m := mountFresh(t)
	data := pattern(14, 256<<10)
	writeFile(t, m.path("src"), data)
	script := fmt.Sprintf(`
import fcntl, os, struct, threading
src = os.open(%q, os.O_RDONLY)
dst = os.open(%q, os.O_RDWR | os.O_CREAT, 0o644)
def clone():
    fcntl.ioctl(dst, %d, struct.pack("qQQQ", src, 0, 0, 0))
t = threading.Thread(target=clone)  # from a thread that is not the leader
t.start(); t.join()
buf = bytearray(struct.pack("QQIIQ", 0, 0, 0, 0, 0) + bytes(32 * 32))
fcntl.ioctl(dst, %d, buf)
start, nxt, count, flags, _ = struct.unpack_from("QQIIQ", buf)
print(count, flags, os.fstat(dst).st_size)
`, m.path("src"), m.path("dst"), ioctl.IocCloneRange, ioctl.IocFiemap)
	out := strings.TrimSpace(run(t, "python3", "-c", script))
	if out != fmt.Sprintf("1 1 %d", len(data)) {
		t.Errorf("python ioctl printed %q", out)
	}
	if got := readFile(t, filepath.Join(m.dir, "dst")); !bytes.Equal(got, data) {
		t.Errorf("clone from another process: content differs")
	}
}
