package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestWriteSequentialAndReadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	size := int64(3<<20 + 5<<10)
	if err := writeSequential(context.Background(), path, size, 1); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) != size {
		t.Fatalf("size %d, %v", len(b), err)
	}
	// Every block is stamped with its offset: no two blocks alike.
	for off := int64(0); off+16 <= size; off += blockSize {
		if got := int64(binary.LittleEndian.Uint64(b[off:])); got != off {
			t.Fatalf("block at %d stamped %d", off, got)
		}
	}
	for _, bs := range []int{1 << 20, 128 << 10, 1000} {
		res, err := readFile(path, bs)
		if err != nil || res.Bytes != size || res.Elapsed <= 0 {
			t.Fatalf("readFile(%d): %+v %v", bs, res, err)
		}
	}
	if _, err := readFile(filepath.Join(t.TempDir(), "missing"), 4096); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := writeSequential(ctx, path, size, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestWriteRandomBlocks(t *testing.T) {
	dir := t.TempDir()
	path, filler := filepath.Join(dir, "f"), filepath.Join(dir, "g")
	size := int64(256 << 10)
	err := writeRandomBlocks(context.Background(), path, filler, size, 9)
	if errors.Is(err, unix.EINVAL) {
		t.Skip("O_DIRECT not supported in the temporary directory")
	}
	if err != nil {
		t.Fatal(err)
	}
	for j, p := range []string{path, filler} {
		b, err := os.ReadFile(p)
		if err != nil || int64(len(b)) != size {
			t.Fatalf("%s: %d bytes, %v", p, len(b), err)
		}
		for off := int64(0); off < size; off += blockSize {
			if got := binary.LittleEndian.Uint64(b[off:]); int64(got) != off {
				t.Fatalf("%s: block %d stamped %d: not every block written", p, off, got)
			}
			if got := binary.LittleEndian.Uint64(b[off+8:]); got != 9+uint64(j) {
				t.Fatalf("%s: block %d seed %d", p, off, got)
			}
		}
	}
}

func TestRandomBlockOffsets(t *testing.T) {
	a := randomBlockOffsets(1000, 1<<20, 5)
	b := randomBlockOffsets(1000, 1<<20, 5)
	if !slices.Equal(a, b) {
		t.Fatal("not deterministic")
	}
	for _, off := range a {
		if off%blockSize != 0 || off < 0 || off >= 1<<20 {
			t.Fatalf("offset %d", off)
		}
	}
}

func TestOverwriteBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := writeSequential(context.Background(), path, 1<<20, 1); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	offsets := []int64{0, 8192, 1<<20 - blockSize}
	if _, _, err := overwriteBlocks(context.Background(), path, offsets, 77); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(path)
	if len(after) != 1<<20 {
		t.Fatalf("size changed: %d", len(after))
	}
	changed := 0
	for off := 0; off < len(after); off += blockSize {
		if !slices.Equal(before[off:off+blockSize], after[off:off+blockSize]) {
			changed++
			if !slices.Contains(offsets, int64(off)) {
				t.Fatalf("block %d changed", off)
			}
		}
	}
	if changed != len(offsets) {
		t.Fatalf("%d blocks changed, want %d", changed, len(offsets))
	}
}

func TestMakeAndReadTree(t *testing.T) {
	dir := t.TempDir()
	info, err := makeTree(context.Background(), filepath.Join(dir, "a"), 300, 3)
	if err != nil {
		t.Fatal(err)
	}
	if info.Files != 300 || info.Symlinks != 6 || info.Dirs < 14 {
		t.Fatalf("info %+v", info)
	}
	files, err := regularFiles(filepath.Join(dir, "a"))
	if err != nil || len(files) != 300 {
		t.Fatalf("%d files, %v", len(files), err)
	}
	var total int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() < 1024 || fi.Size() >= 64<<10 {
			t.Fatalf("%s: size %d outside 1–64 KiB", f, fi.Size())
		}
		total += fi.Size()
	}
	if total != info.Bytes {
		t.Fatalf("bytes %d, info says %d", total, info.Bytes)
	}
	n, bytes, err := readTree(context.Background(), filepath.Join(dir, "a"))
	if err != nil || n != 300 || bytes != info.Bytes {
		t.Fatalf("readTree: %d files %d bytes %v", n, bytes, err)
	}
	// The same seed makes the same tree.
	if _, err := makeTree(context.Background(), filepath.Join(dir, "b"), 300, 3); err != nil {
		t.Fatal(err)
	}
	other, _ := regularFiles(filepath.Join(dir, "b"))
	for i := range files {
		ra, _ := filepath.Rel(filepath.Join(dir, "a"), files[i])
		rb, _ := filepath.Rel(filepath.Join(dir, "b"), other[i])
		if ra != rb {
			t.Fatalf("trees differ: %s vs %s", ra, rb)
		}
	}
}
