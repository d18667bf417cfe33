package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
)

func openMem(t *testing.T) Store {
	t.Helper()
	s, err := OpenPebble("db", PebbleOptions{FS: vfs.NewMem(), CreateIfMissing: true})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustSet(t *testing.T, tx Txn, k, v string) {
	t.Helper()
	if err := tx.Set([]byte(k), []byte(v)); err != nil {
		t.Fatalf("set %q: %v", k, err)
	}
}

func commit(t *testing.T, s Store, sync bool, kvs ...string) {
	t.Helper()
	tx := s.NewTxn()
	for i := 0; i < len(kvs); i += 2 {
		mustSet(t, tx, kvs[i], kvs[i+1])
	}
	if err := s.Commit(tx, sync); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

// wantGet checks r.Get(key): want "" with absent=true means ErrNotFound.
func wantValue(t *testing.T, r Reader, key, want string) {
	t.Helper()
	got, err := r.Get([]byte(key))
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	if string(got) != want {
		t.Fatalf("get %q = %q, want %q", key, got, want)
	}
}

func wantAbsent(t *testing.T, r Reader, key string) {
	t.Helper()
	got, err := r.Get([]byte(key))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("get %q = %q, %v; want ErrNotFound", key, got, err)
	}
}

// collect walks it forward from its current position.
func collect(it Iterator, forward bool) []string {
	var out []string
	for ; it.Valid(); func() {
		if forward {
			it.Next()
		} else {
			it.Prev()
		}
	}() {
		out = append(out, string(it.Key())+"="+string(it.Value()))
	}
	return out
}

func TestTxnSeesOwnWritesOverStore(t *testing.T) {
	s := openMem(t)
	commit(t, s, true, "a", "1", "b", "2", "c", "3", "d", "4", "e", "5")

	tx := s.NewTxn()
	if !tx.Empty() || tx.Size() != 0 {
		t.Fatalf("new txn: Empty=%v Size=%d", tx.Empty(), tx.Size())
	}
	mustSet(t, tx, "b", "22")
	mustSet(t, tx, "f", "6")
	if err := tx.Delete([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := tx.DeleteRange([]byte("c"), []byte("e")); err != nil {
		t.Fatal(err)
	}
	if tx.Empty() || tx.Size() == 0 {
		t.Fatalf("txn with writes: Empty=%v Size=%d", tx.Empty(), tx.Size())
	}

	// The Txn sees its writes merged over the store.
	wantAbsent(t, tx, "a")
	wantValue(t, tx, "b", "22")
	wantAbsent(t, tx, "c")
	wantAbsent(t, tx, "d")
	wantValue(t, tx, "e", "5")
	wantValue(t, tx, "f", "6")
	// The store does not, until Commit.
	wantValue(t, s, "a", "1")
	wantValue(t, s, "b", "2")
	wantValue(t, s, "c", "3")
	wantAbsent(t, s, "f")

	// Get returns a copy: changing it does not change the store.
	v, err := tx.Get([]byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	v[0] = 'X'
	wantValue(t, tx, "b", "22")

	if err := s.Commit(tx, false); err != nil {
		t.Fatal(err)
	}
	wantAbsent(t, s, "a")
	wantValue(t, s, "b", "22")
	wantAbsent(t, s, "c")
	wantAbsent(t, s, "d")
	wantValue(t, s, "e", "5")
	wantValue(t, s, "f", "6")
}

func TestTxnUnusableAfterCommit(t *testing.T) {
	s := openMem(t)
	tx := s.NewTxn()
	mustSet(t, tx, "k", "v")
	if err := s.Commit(tx, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(tx, true); !errors.Is(err, ErrClosed) {
		t.Errorf("second commit: %v, want ErrClosed", err)
	}
	if err := tx.Set([]byte("x"), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("set after commit: %v, want ErrClosed", err)
	}
	if _, err := tx.Get([]byte("k")); !errors.Is(err, ErrClosed) {
		t.Errorf("get after commit: %v, want ErrClosed", err)
	}
	it := tx.NewIter(nil, nil)
	if it.First() {
		t.Errorf("iterator of a committed txn is valid")
	}
	if err := it.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("iterator close: %v, want ErrClosed", err)
	}
}

func TestCommitForeignTxn(t *testing.T) {
	s1, s2 := openMem(t), openMem(t)
	tx := s1.NewTxn()
	mustSet(t, tx, "k", "v")
	if err := s2.Commit(tx, false); err == nil {
		t.Fatal("committing another store's txn succeeded")
	}
}

func TestIteratorsMergeTxnOverStore(t *testing.T) {
	s := openMem(t)
	commit(t, s, false, "a", "1", "b", "2", "c", "3", "d", "4", "e", "5", "g", "7", "h", "8", "i", "9")
	// Flush part of the data so the iterator merges sstables, memtable and batch.
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	commit(t, s, false, "j", "10")

	tx := s.NewTxn()
	mustSet(t, tx, "c2", "x")
	mustSet(t, tx, "d", "44")
	if err := tx.Delete([]byte("e")); err != nil {
		t.Fatal(err)
	}
	if err := tx.DeleteRange([]byte("g"), []byte("i")); err != nil {
		t.Fatal(err)
	}

	it := tx.NewIter([]byte("b"), []byte("j"))
	defer it.Close()
	wantFwd := []string{"b=2", "c=3", "c2=x", "d=44", "i=9"}
	it.First()
	if got := collect(it, true); fmt.Sprint(got) != fmt.Sprint(wantFwd) {
		t.Errorf("forward = %v, want %v", got, wantFwd)
	}
	wantRev := []string{"i=9", "d=44", "c2=x", "c=3", "b=2"}
	it.Last()
	if got := collect(it, false); fmt.Sprint(got) != fmt.Sprint(wantRev) {
		t.Errorf("reverse = %v, want %v", got, wantRev)
	}
	for _, c := range []struct {
		ge   bool
		seek string
		want string // "" = invalid
	}{
		{true, "c1", "c2"},
		{true, "e", "i"},
		{true, "a", "b"}, // below the lower bound: clamped
		{true, "j", ""},  // upper bound is exclusive
		{false, "g", "d"},
		{false, "c2", "c"},
		{false, "b", ""},
		{false, "z", "i"},
	} {
		var ok bool
		if c.ge {
			ok = it.SeekGE([]byte(c.seek))
		} else {
			ok = it.SeekLT([]byte(c.seek))
		}
		got := ""
		if ok {
			got = string(it.Key())
		}
		if ok != it.Valid() || got != c.want {
			t.Errorf("seek(ge=%v, %q) = %q (ok %v, valid %v), want %q", c.ge, c.seek, got, ok, it.Valid(), c.want)
		}
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}

	// The store's iterator still shows only committed state.
	sit := s.NewIter(nil, []byte("e"))
	sit.First()
	want := []string{"a=1", "b=2", "c=3", "d=4"}
	if got := collect(sit, true); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("store iterator = %v, want %v", got, want)
	}
	if err := sit.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sit.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func TestReopenOnDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "meta")
	s, err := OpenPebble(dir, PebbleOptions{CreateIfMissing: true})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, s, true, "inode/1", "root", "inode/2", "file")
	tx := s.NewTxn()
	if err := tx.Delete([]byte("inode/2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(tx, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second close: %v, want ErrClosed", err)
	}
	if _, err := s.Get([]byte("inode/1")); !errors.Is(err, ErrClosed) {
		t.Errorf("get after close: %v, want ErrClosed", err)
	}

	s, err = OpenPebble(dir, PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantValue(t, s, "inode/1", "root")
	wantAbsent(t, s, "inode/2")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	ro, err := OpenPebble(dir, PebbleOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	wantValue(t, ro, "inode/1", "root")
	tx = ro.NewTxn()
	mustSet(t, tx, "x", "y")
	if err := ro.Commit(tx, true); err == nil {
		t.Error("commit to a read-only store succeeded")
	}
}

func TestOpenWithoutStore(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	_, err := OpenPebble(missing, PebbleOptions{})
	if !errors.Is(err, ErrNoStore) || !strings.Contains(err.Error(), missing) {
		t.Errorf("open missing dir: %v; want ErrNoStore naming the dir", err)
	}
	if _, statErr := os.Stat(missing); !os.IsNotExist(statErr) {
		t.Errorf("open of a missing dir created it (stat: %v)", statErr)
	}
	_, err = OpenPebble(missing, PebbleOptions{ReadOnly: true, CreateIfMissing: true})
	if !errors.Is(err, ErrNoStore) {
		t.Errorf("read-only open of missing dir: %v; want ErrNoStore", err)
	}

	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "unrelated"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = OpenPebble(empty, PebbleOptions{})
	if !errors.Is(err, ErrNoStore) || IsCorruption(err) {
		t.Errorf("open dir without a store: %v; want ErrNoStore", err)
	}
}

// storeWithTable creates an on-disk store holding one flushed sstable.
func storeWithTable(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := OpenPebble(dir, PebbleOptions{CreateIfMissing: true})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, s, true, "k", "v")
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mangle(t *testing.T, pattern string, f func(path string, data []byte) []byte) {
	t.Helper()
	paths, _ := filepath.Glob(pattern)
	if len(paths) == 0 {
		t.Fatalf("no file matches %s", pattern)
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f(p, data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenDamagedStore(t *testing.T) {
	t.Run("corrupt manifest", func(t *testing.T) {
		dir := storeWithTable(t)
		mangle(t, filepath.Join(dir, "MANIFEST-*"), func(_ string, data []byte) []byte {
			for i := range data {
				data[i] ^= 0x5a
			}
			return data
		})
		_, err := OpenPebble(dir, PebbleOptions{})
		if err == nil {
			t.Fatal("open of a corrupted store succeeded")
		}
		if !IsCorruption(err) || !strings.HasPrefix(err.Error(), "metadata store "+dir+": ") {
			t.Errorf("open: %q (IsCorruption=%v); want a corruption error naming the store", err, IsCorruption(err))
		}
	})
	t.Run("truncated table", func(t *testing.T) {
		dir := storeWithTable(t)
		mangle(t, filepath.Join(dir, "*.sst"), func(_ string, data []byte) []byte { return data[:10] })
		_, err := OpenPebble(dir, PebbleOptions{})
		if err == nil {
			t.Fatal("open of a store with a truncated table succeeded")
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "metadata store "+dir+": ") || strings.Contains(msg, "\n") {
			t.Errorf("open: %q; want one line naming the store", msg)
		}
	})
}

// TestCrashLosesOnlyUnsyncedCommits simulates a power cut with a strict
// in-memory filesystem, the way pebble's own tests do: syncs are ignored from
// the "crash" on, Close then cannot make anything durable, and
// ResetToSyncedState drops whatever was never synced.
func TestCrashLosesOnlyUnsyncedCommits(t *testing.T) {
	fs := vfs.NewStrictMem()
	s, err := OpenPebble("db", PebbleOptions{FS: fs, CreateIfMissing: true})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, s, true, "A", "synced")
	commit(t, s, false, "B", "unsynced")
	wantValue(t, s, "B", "unsynced")

	fs.SetIgnoreSyncs(true)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fs.ResetToSyncedState()
	fs.SetIgnoreSyncs(false)

	s, err = OpenPebble("db", PebbleOptions{FS: fs})
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer s.Close()
	wantValue(t, s, "A", "synced")
	wantAbsent(t, s, "B")
}

// captureHandler records slog records.
type captureHandler struct{ recs *[]slog.Record }

func (h captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h captureHandler) Handle(_ context.Context, r slog.Record) error {
	*h.recs = append(*h.recs, r)
	return nil
}
func (h captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h captureHandler) WithGroup(string) slog.Handler      { return h }

func TestPebbleLoggerAdapter(t *testing.T) {
	var recs []slog.Record
	l := slogPebbleLogger{slog.New(captureHandler{&recs})}
	l.Infof("replayed %d entries", 3)
	if len(recs) != 1 || recs[0].Level != slog.LevelDebug || recs[0].Message != "replayed 3 entries" {
		t.Fatalf("Infof logged %+v; want one Debug record", recs)
	}
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(fmt.Sprint(r), "boom 7") {
			t.Errorf("Fatalf recovered %v; want a panic with the message", r)
		}
		if len(recs) != 2 || recs[1].Level != slog.LevelError {
			t.Errorf("Fatalf did not log at Error level: %+v", recs)
		}
	}()
	l.Fatalf("boom %d", 7)
}

func TestLargeValueRoundTrip(t *testing.T) {
	s := openMem(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	tx := s.NewTxn()
	if err := tx.Set([]byte("big"), big); err != nil {
		t.Fatal(err)
	}
	if tx.Size() < len(big) {
		t.Errorf("Size = %d, want at least %d", tx.Size(), len(big))
	}
	if err := s.Commit(tx, true); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get([]byte("big"))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big value: len %d err %v", len(got), err)
	}
}

func TestConcurrentCommits(t *testing.T) {
	s := openMem(t)
	const workers, perWorker = 4, 50
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for i := 0; i < perWorker; i++ {
				tx := s.NewTxn()
				key := fmt.Appendf(nil, "w%d/%03d", w, i)
				if err := tx.Set(key, key); err != nil {
					errs <- err
					return
				}
				if err := s.Commit(tx, i%10 == 0); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	it := s.NewIter(nil, nil)
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if !bytes.Equal(it.Key(), it.Value()) {
			t.Fatalf("key %q has value %q", it.Key(), it.Value())
		}
		n++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if n != workers*perWorker {
		t.Fatalf("found %d keys, want %d", n, workers*perWorker)
	}
}
