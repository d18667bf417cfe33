package control

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

// TestRealFS serves a real engine and checks that written data shows up in
// the statistics read over the socket.
func TestRealFS(t *testing.T) {
	fsys, sock := serveNewFS(t)

	f, err := fsys.OpenFile("a", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	if _, err := f.WriteAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Clone("a", "b"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Sync(); err != nil {
		t.Fatal(err)
	}

	got, err := NewClient(sock).Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := fsys.Stats()
	// The device's first block holds its label and is not data capacity.
	if got.DeviceBytes != 64<<20-4096 || got.DeviceBytes != want.DeviceBytes {
		t.Errorf("device bytes = %d, want %d", got.DeviceBytes, 64<<20-4096)
	}
	if got.UsedBytes != 1<<20 {
		t.Errorf("used bytes = %d, want %d (one copy)", got.UsedBytes, 1<<20)
	}
	if got.LogicalBytes != 2<<20 {
		t.Errorf("logical bytes = %d, want %d (two files)", got.LogicalBytes, 2<<20)
	}
	if got.SharedBytes != 1<<20 {
		t.Errorf("shared bytes = %d, want %d", got.SharedBytes, 1<<20)
	}
	if got.CacheLimitBytes != 16<<20 {
		t.Errorf("cache limit = %d, want %d", got.CacheLimitBytes, 16<<20)
	}
	if got.BlockSize != reflinkfs.BlockSize {
		t.Errorf("block size = %d", got.BlockSize)
	}
}

// POST /drop-cache writes back and empties the daemon's block cache; data
// written before survives and is read back from the device.
func TestDropCache(t *testing.T) {
	fsys, sock := serveNewFS(t)
	f, err := fsys.OpenFile("a", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 13)
	}
	if _, err := f.WriteAt(buf, 0); err != nil { // dirty in the cache
		t.Fatal(err)
	}
	if st := fsys.Stats(); st.CachedBytes < 1<<20 || st.DirtyBytes == 0 {
		t.Fatalf("before: %d bytes cached, %d dirty; want the written MiB, dirty", st.CachedBytes, st.DirtyBytes)
	}
	r, err := NewClient(sock).DropCache(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.CachedBytes != 0 || r.DirtyBytes != 0 {
		t.Errorf("after drop-cache: %d bytes cached, %d dirty; want 0, 0", r.CachedBytes, r.DirtyBytes)
	}
	got := make([]byte, len(buf))
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, buf) {
		t.Error("data changed across drop-cache")
	}
	if st := fsys.Stats(); st.CacheMisses == 0 {
		t.Error("the read after drop-cache hit the cache")
	}
}

// serveNewFS creates a 64 MiB engine with a 16 MiB cache and serves it on a
// fresh socket; both are closed when the test ends.
func serveNewFS(t *testing.T) (*reflinkfs.FS, string) {
	t.Helper()
	fsys, err := reflinkfs.Create(t.TempDir(), reflinkfs.Options{Size: 64 << 20, CacheSize: 16 << 20})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { fsys.Close() })
	sock := shortSocketPath(t)
	srv, err := Serve(fsys, sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return fsys, sock
}
