package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reflinkfs/reflinkfs/internal/testenv"

	"github.com/reflinkfs/reflinkfs/internal/damage"
)

// TestFsckDamageEndToEnd drives the built binary: a flipped bit in a
// metadata table, then a damaged device label. Each time fsck exits 4 and
// mount refuses (they agree), `fsck --repair` exits 1, fsck then exits 0,
// and the image mounts and every file reads through the mount with cat.
func TestFsckDamageEndToEnd(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := filepath.Join(t.TempDir(), "reflinkfs")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	img, mp := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	t.Cleanup(func() {
		if _, ok := mountedAt(t, mp); ok {
			runBin(t, bin, "umount", "--lazy", "--timeout", "30s", mp)
		}
	})
	mustRun(t, bin, "mkfs", "--size", "64M", img)
	mount := func() { mustRun(t, bin, "mount", "-d", "--cache-size", "16M", img, mp) }
	umount := func() { mustRun(t, bin, "umount", mp) }

	// Enough records for a table of many blocks: 300 files in 10
	// directories, half of them copied with cp (reflinks).
	mount()
	for d := range 10 {
		sub := filepath.Join(mp, fmt.Sprintf("d%d", d))
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range 15 {
			name := filepath.Join(sub, fmt.Sprintf("f%02d", f))
			writeRandomFile(t, name, 1000+f*300)
			if out, err := exec.Command("cp", name, name+".copy").CombinedOutput(); err != nil {
				t.Fatalf("cp: %v\n%s", err, out)
			}
		}
	}
	umount() // clean: everything is in tables

	readAll := func() {
		t.Helper()
		out, err := exec.Command("sh", "-c", "find "+mp+" -type f -exec cat {} + > /dev/null").CombinedOutput()
		if err != nil {
			t.Errorf("reading every file through the mount: %v\n%s", err, out)
		}
	}
	verdicts := func(what, wantProblem string) {
		t.Helper()
		r := runBin(t, bin, "fsck", img)
		if r.code != exitFsckErrors || !strings.Contains(r.stdout, wantProblem) || !strings.Contains(r.stdout, "fsck --repair") {
			t.Errorf("%s: fsck exit %d, want 4 naming %q and advising --repair:\n%s%s", what, r.code, wantProblem, r.stdout, r.stderr)
		}
		r = runBin(t, bin, "mount", "-d", img, mp)
		if r.code == exitOK {
			umount()
			t.Errorf("%s: fsck finds problems and mount accepts the image", what)
		} else if !strings.Contains(r.stderr, "reflinkfs fsck") {
			t.Errorf("%s: mount refuses without naming fsck: %s", what, r.stderr)
		}
		r = runBin(t, bin, "fsck", "--repair", img)
		if r.code != exitFailure || !strings.Contains(r.stdout, "now clean") {
			t.Errorf("%s: fsck --repair exit %d, want 1 (repaired, now clean):\n%s%s", what, r.code, r.stdout, r.stderr)
		}
		if r := runBin(t, bin, "fsck", img); r.code != exitOK {
			t.Errorf("%s: fsck after repair: exit %d:\n%s%s", what, r.code, r.stdout, r.stderr)
		}
		mount()
		readAll()
		umount()
	}

	tables, _ := filepath.Glob(filepath.Join(img, "meta", "*.sst"))
	damaged := false
	for _, table := range tables {
		l := damage.TableLayout(t, table)
		if len(l.Data) < 4 {
			continue
		}
		damage.FlipByte(t, table, int64(l.Data[len(l.Data)/2].Offset+l.Data[len(l.Data)/2].Length/2))
		damaged = true
		break
	}
	if !damaged {
		t.Fatalf("no table of several blocks among %q", tables)
	}
	verdicts("flipped bit in a table", "cannot be read")
	if entries, _ := filepath.Glob(filepath.Join(img, "meta.damaged-*")); len(entries) != 1 {
		t.Errorf("the damaged store is not kept aside: %q", entries)
	}

	damage.FlipByte(t, filepath.Join(img, "data"), 12) // the label's commit sequence
	verdicts("damaged device label", "device label")
}
