package reflinkfs_test

import (
	"bytes"
	"math/rand"
	"os"
	"sync"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

const bs = reflinkfs.BlockSize

func openRW(t *testing.T, fsys *reflinkfs.FS, name string) *reflinkfs.File {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func sharedBytes(t *testing.T, f *reflinkfs.File) (shared, mapped int64) {
	t.Helper()
	ext, err := f.Fiemap()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ext {
		mapped += e.Length
		if e.Shared {
			shared += e.Length
		}
	}
	return shared, mapped
}

// A copy written block by block through WriteAtSharing shares the source's
// blocks, keeps its holes, writes what differs, and both files stay
// independent afterwards.
func TestWriteAtSharingCopies(t *testing.T) {
	fsys, _ := newFS(t)
	rnd := rand.New(rand.NewSource(7))
	// Source: 64 blocks of data, a 32-block hole, 32 blocks of data, 1000
	// bytes of tail (dirty: never committed, so sharing must flush it).
	size := 128*bs + 1000
	src := make([]byte, size)
	rnd.Read(src[:64*bs])
	rnd.Read(src[96*bs:])
	s := openRW(t, fsys, "src")
	if _, err := s.WriteAt(src[:64*bs], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt(src[96*bs:], 96*bs); err != nil {
		t.Fatal(err)
	}
	used0 := fsys.Stats().UsedBytes
	d := openRW(t, fsys, "dst")
	// Copy in 96 KiB pieces, one changed block in the middle.
	want := bytes.Clone(src)
	rnd.Read(want[10*bs : 11*bs])
	var shared int64
	for off := 0; off < size; off += 24 * bs {
		end := min(off+24*bs, size)
		_, n, err := d.WriteAtSharing(want[off:end], int64(off), []*reflinkfs.File{s})
		if err != nil {
			t.Fatal(err)
		}
		shared += n
	}
	if got := readAll(t, d, size); !bytes.Equal(got, want) {
		t.Fatal("copy reads wrong")
	}
	st := fsys.Stats()
	// The changed block is written; everything else (the partial block at
	// the end too) is shared or a hole.
	if grown := st.UsedBytes - used0; grown != bs {
		t.Errorf("used bytes grew by %d, want %d", grown, bs)
	}
	if st.CopySharedBlocks != 96 || st.CopyHoleBlocks != 32 || shared != st.CopySharedBlocks+st.CopyHoleBlocks {
		t.Errorf("shared %d: stats %d shared, %d holes", shared, st.CopySharedBlocks, st.CopyHoleBlocks)
	}
	if off, err := d.SeekHole(0); err != nil || off != 64*bs {
		t.Errorf("first hole at %d (%v), want %d", off, err, 64*bs)
	}
	if off, err := d.SeekData(64 * bs); err != nil || off != 96*bs {
		t.Errorf("data after the hole at %d (%v), want %d", off, err, 96*bs)
	}
	// Independent afterwards.
	if _, err := s.WriteAt(bytes.Repeat([]byte{1}, 3*bs), 20*bs); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{2}, 3*bs), 30*bs); err != nil {
		t.Fatal(err)
	}
	copy(src[20*bs:], bytes.Repeat([]byte{1}, 3*bs))
	copy(want[30*bs:], bytes.Repeat([]byte{2}, 3*bs))
	if got := readAll(t, s, size); !bytes.Equal(got, src) {
		t.Fatal("source reads wrong after writes")
	}
	if got := readAll(t, d, size); !bytes.Equal(got, want) {
		t.Fatal("copy reads wrong after writes")
	}
	checkFsck(t, fsys)
}

// Unique data and data that matches no source are written normally; zero
// blocks where the source has data are written; a source must be at the
// same offset.
func TestWriteAtSharingNoMatch(t *testing.T) {
	fsys, _ := newFS(t)
	rnd := rand.New(rand.NewSource(8))
	src := make([]byte, 16*bs)
	rnd.Read(src)
	s := openRW(t, fsys, "src")
	if _, err := s.WriteAt(src, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil { // committed: compared by checksum when not cached
		t.Fatal(err)
	}
	if err := fsys.DropCache(); err != nil {
		t.Fatal(err)
	}
	d := openRW(t, fsys, "dst")
	uniq := make([]byte, 16*bs)
	rnd.Read(uniq)
	// Unique data, the source's data one block off, and zeros.
	for i, data := range [][]byte{uniq, src[bs:], make([]byte, 8*bs)} {
		off := int64(i) * 16 * bs
		if _, n, err := d.WriteAtSharing(data, off, []*reflinkfs.File{s}); err != nil || n != 0 {
			t.Fatalf("write %d: shared %d, err %v", i, n, err)
		}
	}
	if sh, _ := sharedBytes(t, d); sh != 0 {
		t.Errorf("%d bytes shared, want none", sh)
	}
	got := readAll(t, d, 40*bs)
	want := append(append(bytes.Clone(uniq), src[bs:]...), make([]byte, 9*bs)...)
	if !bytes.Equal(got, want) {
		t.Fatal("reads wrong")
	}
	// Unaligned pieces: each block is shared by the write that completes it.
	u := openRW(t, fsys, "u")
	for off := 0; off < len(src); off += 10000 {
		end := min(off+10000, len(src))
		if _, _, err := u.WriteAtSharing(src[off:end], int64(off), []*reflinkfs.File{s}); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(readAll(t, u, len(src)), src) {
		t.Fatal("unaligned copy reads wrong")
	}
	if sh, _ := sharedBytes(t, u); sh != 16*bs {
		t.Errorf("unaligned copy shares %d bytes, want %d", sh, 16*bs)
	}
	// No sources: a plain write.
	if _, n, err := d.WriteAtSharing(src, 0, nil); err != nil || n != 0 {
		t.Fatalf("no sources: shared %d, err %v", n, err)
	}
	// Uncached, committed source: matched through its checksum.
	if err := fsys.DropCache(); err != nil {
		t.Fatal(err)
	}
	if _, n, err := d.WriteAtSharing(src, 0, []*reflinkfs.File{s, d}); err != nil || n != 16 {
		t.Fatalf("uncached source: shared %d, err %v", n, err)
	}
	if sh, _ := sharedBytes(t, s); sh != 16*bs {
		t.Errorf("source shares %d bytes, want %d", sh, 16*bs)
	}
	checkFsck(t, fsys)
}

// With several sources each block finds the one it equals; an overwrite of
// a shared block copies on write.
func TestWriteAtSharingSeveralSources(t *testing.T) {
	fsys, _ := newFS(t)
	rnd := rand.New(rand.NewSource(9))
	a, b := make([]byte, 8*bs), make([]byte, 8*bs)
	rnd.Read(a)
	rnd.Read(b)
	fa, fb := openRW(t, fsys, "a"), openRW(t, fsys, "b")
	fa.WriteAt(a, 0)
	fb.WriteAt(b, 0)
	mix := append(bytes.Clone(a[:4*bs]), b[4*bs:]...)
	d := openRW(t, fsys, "d")
	if _, n, err := d.WriteAtSharing(mix, 0, []*reflinkfs.File{fa, fb}); err != nil || n != 8 {
		t.Fatalf("shared %d, err %v", n, err)
	}
	if _, err := d.WriteAt([]byte("xyz"), 5*bs+7); err != nil {
		t.Fatal(err)
	}
	copy(mix[5*bs+7:], "xyz")
	if !bytes.Equal(readAll(t, d, 8*bs), mix) || !bytes.Equal(readAll(t, fb, 8*bs), b) {
		t.Fatal("reads wrong")
	}
	checkFsck(t, fsys)
}

// Concurrent sharing writes into two copies of one source and writes to
// the source itself stay correct (run with -race).
func TestWriteAtSharingConcurrent(t *testing.T) {
	fsys, _ := newFS(t)
	src := make([]byte, 64*bs)
	rand.New(rand.NewSource(10)).Read(src)
	s := openRW(t, fsys, "s")
	s.WriteAt(src, 0)
	d1, d2 := openRW(t, fsys, "d1"), openRW(t, fsys, "d2")
	var wg sync.WaitGroup
	for _, d := range []*reflinkfs.File{d1, d2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := 0; off < len(src); off += 8 * bs {
				if _, _, err := d.WriteAtSharing(src[off:off+8*bs], int64(off), []*reflinkfs.File{s}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // rewrites the source with the same bytes
		defer wg.Done()
		for off := 0; off < len(src); off += 16 * bs {
			if _, err := s.WriteAt(src[off:off+16*bs], int64(off)); err != nil {
				t.Error(err)
			}
		}
	}()
	wg.Wait()
	for _, d := range []*reflinkfs.File{d1, d2, s} {
		if !bytes.Equal(readAll(t, d, len(src)), src) {
			t.Fatal("reads wrong")
		}
	}
	checkFsck(t, fsys)
}

// BenchmarkWriteUnique compares 1 MiB writes of unique data with WriteAt
// and with WriteAtSharing against a resident source of other data at the
// same offsets (the engine's worst case for unique data: every block is
// compared, and differs).
//
//	go test -run '^$' -bench WriteUnique -count 5 .
func BenchmarkWriteUnique(b *testing.B) {
	for _, mode := range []string{"WriteAt", "WriteAtSharing"} {
		b.Run(mode, func(b *testing.B) {
			dir := b.TempDir() + "/img"
			fsys, err := reflinkfs.Create(dir, reflinkfs.Options{Size: 4 << 30, CacheSize: 512 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer fsys.Close()
			const span = 64 << 20
			srcData, data := make([]byte, span), make([]byte, span)
			rand.New(rand.NewSource(1)).Read(srcData)
			rand.New(rand.NewSource(2)).Read(data)
			s, _ := fsys.OpenFile("src", os.O_RDWR|os.O_CREATE, 0o644)
			s.WriteAt(srcData, 0)
			s.Sync()
			d, _ := fsys.OpenFile("dst", os.O_RDWR|os.O_CREATE, 0o644)
			srcs := []*reflinkfs.File{s}
			b.SetBytes(1 << 20)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				off := int64(i%(span>>20)) << 20
				p := data[off : off+1<<20]
				if mode == "WriteAt" {
					_, err = d.WriteAt(p, off)
				} else {
					_, _, err = d.WriteAtSharing(p, off, srcs)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
