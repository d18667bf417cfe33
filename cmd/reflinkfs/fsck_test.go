package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

// fakeChecker returns scripted reports: the first Fsck call gets first, later
// ones get after.
type fakeChecker struct {
	first, after *reflinkfs.FsckReport
	calls        []bool
	closed       bool
}

func (f *fakeChecker) Fsck(repair bool) (*reflinkfs.FsckReport, error) {
	f.calls = append(f.calls, repair)
	if len(f.calls) == 1 {
		return f.first, nil
	}
	return f.after, nil
}

func (f *fakeChecker) Close() error { f.closed = true; return nil }

func TestFsckExitCodes(t *testing.T) {
	clean := &reflinkfs.FsckReport{Inodes: 3}
	bad := &reflinkfs.FsckReport{Problems: []string{"inode 7: nlink 2, 1 entries"}}
	fixed := &reflinkfs.FsckReport{Problems: bad.Problems, Repaired: []string{"inode 7: nlink set to 1"}}
	// What the library returns after a successful repair: nothing left.
	fixedClean := &reflinkfs.FsckReport{Repaired: []string{"inode 7: nlink set to 1"}}
	dataBad := &reflinkfs.FsckReport{Problems: []string{"data block 9 fails its checksum"}, Unrepairable: []string{"data block 9 fails its checksum"}}
	for _, tc := range []struct {
		name         string
		repair       bool
		first, after *reflinkfs.FsckReport
		code         int
		calls        int
		out          string
		notOut       string
	}{
		{"clean", false, clean, nil, exitOK, 1, "clean", ""},
		{"problems, no repair", false, bad, nil, exitFsckErrors, 1, "fsck --repair", ""},
		{"repaired", true, fixed, clean, exitFailure, 2, "repairs made; now clean", ""},
		{"repair left errors", true, fixed, bad, exitFsckErrors, 2, "problems left after repair", ""},
		{"clean with repair", true, clean, nil, exitOK, 1, "clean", ""},
		{"repaired, library report", true, fixedClean, clean, exitFailure, 2, "repairs made; now clean", ""},
		{"unrepairable, no repair", false, dataBad, nil, exitFsckErrors, 1, "repair cannot fix", "--repair"},
		{"unrepairable after repair", true, dataBad, dataBad, exitFsckErrors, 2, "repair cannot fix", ""},
	} {
		f := &fakeChecker{first: tc.first, after: tc.after}
		var out strings.Builder
		err := runFsck(&out, "/img", f, tc.repair)
		code := exitOK
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		} else if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.notOut != "" && strings.Contains(out.String(), tc.notOut) {
			t.Errorf("%s: output %q advises %q", tc.name, out.String(), tc.notOut)
		}
		if code != tc.code || len(f.calls) != tc.calls || !f.closed || !strings.Contains(out.String(), tc.out) {
			t.Errorf("%s: exit %d (want %d), %d checks (want %d), closed %v, output %q (want %q)",
				tc.name, code, tc.code, len(f.calls), tc.calls, f.closed, out.String(), tc.out)
		}
		if tc.calls == 2 && f.calls[1] {
			t.Errorf("%s: the check after repair repaired again", tc.name)
		}
	}
}

// A metadata store that cannot be opened at all is damage fsck cannot
// repair: exit 4 with the reason and what to do, not 1 ("could not run").
func TestFsckUnopenableStoreExits4(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	fsys, err := reflinkfs.Create(dir, reflinkfs.Options{Size: 16 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
	manifests, _ := filepath.Glob(filepath.Join(dir, "meta", "MANIFEST-*"))
	for _, m := range manifests {
		if err := os.Remove(m); err != nil {
			t.Fatal(err)
		}
	}
	for _, repair := range []bool{false, true} {
		err := fsck(dir, repair)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != exitFsckErrors || ee.err == nil || !strings.Contains(ee.err.Error(), "restore the image from a backup") {
			t.Errorf("fsck (repair %v) of an image whose store cannot be opened: %v; want exit 4 saying what to do", repair, err)
		}
	}
}
