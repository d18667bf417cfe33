package kv

import (
	"io/fs"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A store on disk is readable by its owner only, whatever the umask:
// directory, WAL, tables, MANIFEST, OPTIONS and LOCK.
func TestPebbleFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0o022) // the usual umask, whatever the test runner's
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "meta")
	for round := 0; round < 2; round++ { // the second open replays and rewrites
		s, err := OpenPebble(dir, PebbleOptions{CreateIfMissing: true})
		if err != nil {
			t.Fatal(err)
		}
		commit(t, s, true, "secret-name", "secret-value")
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		commit(t, s, true, "in-the-wal", "x")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Walked closed: pebble deletes obsolete files in the background.
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		for _, kind := range []string{".sst", ".log", "MANIFEST-", "OPTIONS-", "LOCK"} {
			if strings.Contains(d.Name(), kind) {
				seen[kind] = true
			}
		}
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want no group or other permissions", p, info.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 5 {
		t.Errorf("store holds only %v; the test wants tables, WAL, MANIFEST, OPTIONS and LOCK", seen)
	}
}
