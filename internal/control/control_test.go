package control

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/reflinkfs/reflinkfs"
)

// fakeSource returns fixed statistics and counts calls.
type fakeSource struct {
	mu    sync.Mutex
	stats reflinkfs.Stats
	calls int
}

func (f *fakeSource) Stats() reflinkfs.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.stats
}

func sampleStats() reflinkfs.Stats {
	return reflinkfs.Stats{
		BlockSize: 4096, DeviceBytes: 1 << 30, UsedBytes: 8 << 20, FreeBytes: 1<<30 - 8<<20,
		LogicalBytes: 80 << 20, SharedBytes: 8 << 20, Inodes: 12,
		CacheLimitBytes: 256 << 20, CachedBytes: 8 << 20, DirtyBytes: 4096,
		SharedCachedBytes: 8 << 20, PerFileCachedBytes: 80 << 20,
		CacheHits: 30, CacheMisses: 10, CacheEvictions: 2, ChecksumErrors: 1, Commits: 7,
	}
}

func shortSocketPath(t *testing.T) string {
	// unix socket paths are limited to 108 bytes; t.TempDir can be long.
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, SocketName)
}

func TestRoundTrip(t *testing.T) {
	src := &fakeSource{stats: sampleStats()}
	sock := shortSocketPath(t)
	srv, err := ServeSource(src, sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	c := NewClient(sock)
	ctx := context.Background()
	got, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got != src.stats {
		t.Fatalf("Stats round trip:\n got %+v\nwant %+v", got, src.stats)
	}
	rep, err := c.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.HitRate != 0.75 {
		t.Errorf("hit rate = %v, want 0.75", rep.HitRate)
	}
	if rep.MemorySavedBytes != 72<<20 {
		t.Errorf("memory saved = %d, want %d", rep.MemorySavedBytes, 72<<20)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Pid != os.Getpid() {
		t.Errorf("pid = %d, want %d", info.Pid, os.Getpid())
	}

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket still present after Close: %v", err)
	}
	if _, err := c.Stats(ctx); err == nil || !strings.Contains(err.Error(), sock) {
		t.Errorf("Stats after Close: err = %v, want an error naming the socket", err)
	}
}

func TestMetricsAtScrapeTime(t *testing.T) {
	src := &fakeSource{stats: sampleStats()}
	sock := shortSocketPath(t)
	reg := prometheus.NewRegistry()
	srv, err := ServeSource(src, sock, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	c := NewClient(sock)
	text, err := c.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"reflinkfs_used_bytes 8.388608e+06",
		"reflinkfs_cache_bytes 8.388608e+06",
		"reflinkfs_cache_hits_total 30",
		"reflinkfs_checksum_errors_total 1",
		"# TYPE reflinkfs_cache_misses_total counter",
		"# TYPE reflinkfs_logical_bytes gauge",
		"reflinkfs_cache_memory_saved_bytes 7.5497472e+07",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// The caller's registry carries the same collector (for --metrics-addr).
	src.mu.Lock()
	src.stats.UsedBytes = 12345
	src.mu.Unlock()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "reflinkfs_used_bytes" {
			found = true
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v != 12345 {
				t.Errorf("used_bytes after change = %v, want 12345 (read at scrape time)", v)
			}
		}
	}
	if !found {
		t.Error("registry lacks reflinkfs_used_bytes")
	}

	// Close unregisters, so the registry can be served again.
	srv.Close()
	srv2, err := ServeSource(src, sock, reg)
	if err != nil {
		t.Fatalf("serve again on the same registry: %v", err)
	}
	srv2.Close()
}

func TestStaleSocketReplacedLiveSocketRefused(t *testing.T) {
	sock := shortSocketPath(t)

	// A socket file nobody listens on: left by a crashed daemon.
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	src := &fakeSource{stats: sampleStats()}
	srv, err := ServeSource(src, sock, nil)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer srv.Close()

	// A second server on a live socket must refuse.
	_, err = ServeSource(src, sock, nil)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server on a live socket: err = %v, want 'in use'", err)
	}
	// ...and the first one still answers.
	if _, err := NewClient(sock).Stats(context.Background()); err != nil {
		t.Fatalf("first server broken by refused second: %v", err)
	}

	// A regular file in the way is not removed.
	plain := filepath.Join(filepath.Dir(sock), "plain")
	os.WriteFile(plain, []byte("x"), 0o644)
	if _, err := ServeSource(src, plain, nil); err == nil {
		t.Fatal("served over a regular file")
	}
	if _, err := os.Stat(plain); err != nil {
		t.Fatalf("regular file removed: %v", err)
	}
}

func TestConcurrentClients(t *testing.T) {
	src := &fakeSource{stats: sampleStats()}
	sock := shortSocketPath(t)
	srv, err := ServeSource(src, sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := NewClient(sock)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Stats(context.Background()); err != nil {
				errs <- err
			}
			if _, err := c.Metrics(context.Background()); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestReportHasEveryStatsField keeps the JSON form complete when the engine
// grows a Stats field: each one must appear under its snake_case name.
func TestReportHasEveryStatsField(t *testing.T) {
	// Give every field a distinct value so a mix-up shows.
	var st reflinkfs.Stats
	v := reflect.ValueOf(&st).Elem()
	for i := range v.NumField() {
		v.Field(i).SetInt(int64(1000 + i))
	}
	b, err := json.Marshal(NewReport(st))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	for i := range v.NumField() {
		name := snake(v.Type().Field(i).Name)
		got, ok := m[name]
		if !ok {
			t.Errorf("Report JSON lacks %q (Stats.%s)", name, v.Type().Field(i).Name)
			continue
		}
		if got != float64(1000+i) {
			t.Errorf("%s = %v, want %d", name, got, 1000+i)
		}
	}
	for _, k := range []string{"hit_rate", "memory_saved_bytes"} {
		if _, ok := m[k]; !ok {
			t.Errorf("Report JSON lacks %q", k)
		}
	}
	if back := NewReport(st).Stats(); back != st {
		t.Errorf("Report.Stats() does not invert NewReport:\n got %+v\nwant %+v", back, st)
	}
}

func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

func TestDerivedFigures(t *testing.T) {
	if r := NewReport(reflinkfs.Stats{}); r.HitRate != 0 || r.MemorySavedBytes != 0 {
		t.Errorf("empty stats: hit rate %v, saved %d; want 0, 0", r.HitRate, r.MemorySavedBytes)
	}
	// More cached than a per-file cache would hold (e.g. written, unread data): no negative savings.
	if r := NewReport(reflinkfs.Stats{CachedBytes: 10, PerFileCachedBytes: 4}); r.MemorySavedBytes != 0 {
		t.Errorf("memory saved = %d, want 0", r.MemorySavedBytes)
	}
}
