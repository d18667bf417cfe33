package device

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// hostSupportsODirect probes the test directory's filesystem directly.
func hostSupportsODirect(t *testing.T, dir string) bool {
	p := filepath.Join(dir, "probe")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

func TestFileDirectSemantics(t *testing.T) {
	dir := t.TempDir()
	f, err := OpenFile(filepath.Join(dir, "img"), testSize, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := hostSupportsODirect(t, dir); f.DirectIO() != want {
		t.Fatalf("DirectIO = %v, but the filesystem's O_DIRECT support is %v", f.DirectIO(), want)
	}
	if !f.DirectIO() {
		t.Log("filesystem of the temp dir refuses O_DIRECT; testing the buffered fallback")
	}
	deviceSemantics(t, f)
}

func TestFileBufferedSemantics(t *testing.T) {
	f, err := openFile(filepath.Join(t.TempDir(), "img"), testSize, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if f.DirectIO() {
		t.Fatal("buffered open reports DirectIO")
	}
	deviceSemantics(t, f)
}

func TestFileFallsBackWhenODirectRefused(t *testing.T) {
	defer func(orig func(string, int, uint32) (int, error)) { sysOpen = orig }(sysOpen)
	directTried := false
	sysOpen = func(path string, flags int, mode uint32) (int, error) {
		if flags&unix.O_DIRECT != 0 {
			directTried = true
			return -1, unix.EINVAL
		}
		return unix.Open(path, flags, mode)
	}
	f, err := OpenFile(filepath.Join(t.TempDir(), "img"), testSize, true)
	if err != nil {
		t.Fatal(err)
	}
	if !directTried || f.DirectIO() {
		t.Fatalf("O_DIRECT tried: %v, DirectIO: %v; want a buffered fallback after trying", directTried, f.DirectIO())
	}
	deviceSemantics(t, f)
}

func blocksOnDisk(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestFileCreateIsSparseAndExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	f, err := OpenFile(path, 1<<30, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 1<<30 || f.Size() != 1<<30 {
		t.Errorf("file size %d, device size %d; want %d", fi.Size(), f.Size(), 1<<30)
	}
	if used := blocksOnDisk(t, path); used > 1<<20 {
		t.Errorf("new image uses %d bytes on disk; want it sparse", used)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("image mode %v, want 0600", fi.Mode().Perm())
	}

	_, err = OpenFile(path, 1<<20, true)
	if !errors.Is(err, os.ErrExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("create over an existing file: %v; want an error naming the file and wrapping EEXIST", err)
	}
	for _, size := range []int64{0, -BlockSize, 1000} {
		if _, err := OpenFile(filepath.Join(t.TempDir(), "x"), size, true); err == nil {
			t.Errorf("create with size %d succeeded", size)
		}
	}
	if _, err := OpenFile(filepath.Join(t.TempDir(), "missing"), 0, false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("open of a missing file: %v, want ENOENT", err)
	}
}

func TestFilePersistsAndReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	f, err := OpenFile(path, 64*BlockSize, true)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(3*BlockSize, 11)
	if err := f.WriteBlocks([][]byte{data}, 10*BlockSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// Size 0 takes the file's size; a smaller size uses a prefix.
	for _, c := range []struct{ size, want int64 }{
		{0, 64 * BlockSize},
		{64 * BlockSize, 64 * BlockSize},
		{16 * BlockSize, 16 * BlockSize},
	} {
		f, err := OpenFile(path, c.size, false)
		if err != nil {
			t.Fatal(err)
		}
		if f.Size() != c.want {
			t.Errorf("open with size %d: Size = %d, want %d", c.size, f.Size(), c.want)
		}
		if got := readAll(t, f, 10*BlockSize, 3*BlockSize); !bytes.Equal(got, data) {
			t.Errorf("open with size %d: data not persisted", c.size)
		}
		f.Close()
	}

	// A file shorter than the expected size is a truncated image.
	_, err = OpenFile(path, 128*BlockSize, false)
	if err == nil || !strings.Contains(err.Error(), "truncated") || !strings.Contains(err.Error(), path) {
		t.Errorf("open expecting a larger file: %v; want a truncated-image error naming the file", err)
	}
}

// A file that became shorter than the device (truncated under us) reads as
// zeros past its end, including a partial last block.
func TestFileReadsPastEOFAsZeros(t *testing.T) {
	for _, direct := range []bool{true, false} {
		path := filepath.Join(t.TempDir(), "img")
		f, err := openFile(path, 16*BlockSize, true, direct)
		if err != nil {
			t.Fatal(err)
		}
		data := pattern(4*BlockSize, 21)
		if err := f.WriteBlocks([][]byte{data}, 0); err != nil {
			t.Fatal(err)
		}
		const eof = 2*BlockSize + 100
		if err := os.Truncate(path, eof); err != nil {
			t.Fatal(err)
		}
		got := readAll(t, f, 0, 6*BlockSize)
		if !bytes.Equal(got[:eof], data[:eof]) || !isZero(got[eof:]) {
			t.Errorf("direct=%v: bytes before EOF differ or bytes after it are not zero", direct)
		}
		got = readAll(t, f, 8*BlockSize, 2*BlockSize)
		if !isZero(got) {
			t.Errorf("direct=%v: read wholly past EOF is not zero", direct)
		}
		f.Close()
	}
}

func TestFilePunchReleasesSpace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	f, err := OpenFile(path, 4<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.WriteBlocks([][]byte{pattern(2<<20, 1)}, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	before := blocksOnDisk(t, path)
	if before < 2<<20 {
		t.Fatalf("written image uses only %d bytes", before)
	}
	if err := f.Punch(1<<20, 2<<20); err != nil {
		t.Fatal(err)
	}
	if after := blocksOnDisk(t, path); after > before-(2<<20) {
		t.Errorf("punch released %d bytes, want 2 MiB", before-after)
	}
	if fi, _ := os.Stat(path); fi.Size() != 4<<20 {
		t.Errorf("punch changed the file size to %d", fi.Size())
	}
}

func TestFileErrorsNameFileAndOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	f, err := OpenFile(path, testSize, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = f.ReadBlocks([][]byte{AlignedBuffer(BlockSize)}, 8192+512)
	msg := err.Error()
	for _, want := range []string{"read", path, "offset 8704"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
}
