package fusefs

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// xfs_io's copy_range, fpunch, fzero, falloc and seek reach the engine and
// give the results a local filesystem gives.
func TestXfsIo(t *testing.T) {
	xfsIo := requireTool(t, "xfs_io")
	m := mountFresh(t)
	a, b := m.path("a"), m.path("b")
	data := pattern(3, 4<<20)
	writeFile(t, a, data)

	// copy_range of aligned blocks shares them.
	if err := m.fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	used := m.fsys.Stats().UsedBytes
	run(t, xfsIo, "-f", "-c", "copy_range -s 1048576 -d 0 -l 2097152 "+a, b)
	got := readFile(t, b)
	if !bytes.Equal(got, data[1<<20:3<<20]) {
		t.Fatalf("copy_range: %d bytes, content differs", len(got))
	}
	if err := m.fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	if grew := m.fsys.Stats().UsedBytes - used; grew > 64<<10 {
		t.Errorf("aligned copy_range allocated %d bytes instead of sharing", grew)
	}
	// Unaligned copy_range copies bytes.
	run(t, xfsIo, "-c", "copy_range -s 100 -d 3000000 -l 5000 "+a, b)
	got = readFile(t, b)
	if len(got) != 3000000+5000 || !bytes.Equal(got[3000000:], data[100:5100]) {
		t.Fatalf("unaligned copy_range: size %d or content wrong", len(got))
	}

	// Punch a hole and find it with SEEK_HOLE/SEEK_DATA.
	run(t, xfsIo, "-c", "fpunch 65536 131072", a)
	out := run(t, xfsIo, "-c", "seek -h 0", "-c", "seek -d 65536", a)
	if !strings.Contains(out, "HOLE\t65536") || !strings.Contains(out, "DATA\t196608") {
		t.Errorf("seek after fpunch:\n%s", out)
	}
	got = readFile(t, a)
	if len(got) != len(data) || !bytes.Equal(got[65536:196608], make([]byte, 131072)) ||
		!bytes.Equal(got[:65536], data[:65536]) || !bytes.Equal(got[196608:], data[196608:]) {
		t.Errorf("content after fpunch wrong")
	}
	// SEEK_DATA at end of file: ENXIO.
	f, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Seek(int(f.Fd()), 4<<20, unix.SEEK_DATA); err != unix.ENXIO {
		t.Errorf("SEEK_DATA at EOF: %v, want ENXIO", err)
	}
	if off, err := unix.Seek(int(f.Fd()), 300000, unix.SEEK_HOLE); err != nil || off != 4<<20 {
		t.Errorf("SEEK_HOLE in the last data run: %d %v, want %d (EOF)", off, err, 4<<20)
	}
	f.Close()

	// Zero a range inside (unaligned edges), then past EOF with and without -k.
	run(t, xfsIo, "-c", "fzero 1000 10000", a)
	got = readFile(t, a)
	if !bytes.Equal(got[1000:11000], make([]byte, 10000)) || !bytes.Equal(got[:1000], data[:1000]) || !bytes.Equal(got[11000:65536], data[11000:65536]) {
		t.Errorf("content after fzero wrong")
	}
	run(t, xfsIo, "-c", "fzero -k 4194304 65536", a)
	if fi, _ := os.Stat(a); fi.Size() != 4<<20 {
		t.Errorf("fzero -k past EOF changed size to %d", fi.Size())
	}
	run(t, xfsIo, "-c", "fzero 4194304 65536", a)
	if fi, _ := os.Stat(a); fi.Size() != 4<<20+65536 {
		t.Errorf("fzero past EOF: size %d, want %d", fi.Size(), 4<<20+65536)
	}
	run(t, xfsIo, "-c", "falloc 8388608 1048576", a)
	if fi, _ := os.Stat(a); fi.Size() != 9<<20 {
		t.Errorf("falloc past EOF: size %d, want %d", fi.Size(), 9<<20)
	}
	if st := statOf(t, a); st.Blocks*512 < 5<<20-128<<10 {
		t.Errorf("after falloc st_blocks %d too small", st.Blocks)
	}

	m.remount(t)
	got = readFile(t, a)
	if len(got) != 9<<20 || !bytes.Equal(got[196608:4<<20], data[196608:]) || !bytes.Equal(got[4<<20:], make([]byte, 5<<20)) {
		t.Errorf("after remount: size %d or content wrong", len(got))
	}
}

func run2(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// fallocate(1) modes: default, keep size, punch hole, zero range; collapse
// and insert are refused.
func TestFallocateTool(t *testing.T) {
	fallocate := requireTool(t, "fallocate")
	m := mountFresh(t)
	p := m.path("f")
	run(t, fallocate, "-l", "1MiB", p)
	if st := statOf(t, p); st.Size != 1<<20 || st.Blocks*512 < 1<<20 {
		t.Fatalf("fallocate -l 1MiB: size %d blocks %d", st.Size, st.Blocks)
	}
	if b := readFile(t, p); !bytes.Equal(b, make([]byte, 1<<20)) {
		t.Fatalf("preallocated file does not read as zeros")
	}
	run(t, fallocate, "-n", "-o", "1MiB", "-l", "1MiB", p)
	if st := statOf(t, p); st.Size != 1<<20 || st.Blocks*512 < 2<<20 {
		t.Errorf("fallocate -n: size %d blocks %d", st.Size, st.Blocks)
	}
	writeFile(t, p, pattern(5, 1<<20))
	run(t, fallocate, "-p", "-o", "8192", "-l", "8192", p)
	run(t, fallocate, "-z", "-o", "100000", "-l", "5000", p)
	want := pattern(5, 1<<20)
	copy(want[8192:16384], make([]byte, 8192))
	copy(want[100000:105000], make([]byte, 5000))
	if got := readFile(t, p); !bytes.Equal(got, want) {
		t.Errorf("content after punch and zero wrong")
	}
	if _, err := run2(fallocate, "-c", "-o", "0", "-l", "4096", p); err == nil {
		t.Errorf("fallocate --collapse-range succeeded, want EOPNOTSUPP")
	}
	if _, err := run2(fallocate, "-i", "-o", "0", "-l", "4096", p); err == nil {
		t.Errorf("fallocate --insert-range succeeded, want EOPNOTSUPP")
	}
}

// Programs may open files with O_DIRECT.
func TestODirect(t *testing.T) {
	m := mountFresh(t)
	src := m.path("src")
	writeFile(t, src, pattern(9, 8<<20))
	run(t, "dd", "if="+src, "of="+m.path("dst"), "bs=1M", "iflag=direct", "oflag=direct", "status=none")
	if sha(t, src) != sha(t, m.path("dst")) {
		t.Fatal("O_DIRECT copy differs")
	}
	fd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatalf("open O_DIRECT: %v", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 1<<20+4096)
	off := 4096 - int(uintptr(unsafe.Pointer(&buf[0]))%4096) // aligned buffer
	n, err := unix.Pread(fd, buf[off:off+1<<20], 1<<20)
	if err != nil || n != 1<<20 || !bytes.Equal(buf[off:off+n], pattern(9, 8<<20)[1<<20:2<<20]) {
		t.Fatalf("O_DIRECT pread: %d %v", n, err)
	}
}
