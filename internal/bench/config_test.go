package bench

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseOnly(t *testing.T) {
	ids, err := ParseOnly(" clone,memory,clone,, ")
	if err != nil || !slices.Equal(ids, []string{"clone", "memory"}) {
		t.Fatalf("got %v %v", ids, err)
	}
	if ids, err := ParseOnly(""); err != nil || ids != nil {
		t.Fatalf("empty: %v %v", ids, err)
	}
	if _, err := ParseOnly("clone,bogus"); err == nil || !strings.Contains(err.Error(), `"bogus"`) {
		t.Fatalf("unknown: %v", err)
	}
}

func TestDefaultConfig(t *testing.T) {
	full, quick := DefaultConfig(false), DefaultConfig(true)
	if full.Runs != 5 || quick.Runs != 3 {
		t.Fatalf("runs: full %d quick %d", full.Runs, quick.Runs)
	}
	if !slices.Equal(full.CloneSizes, []int64{64 << 20, 1 << 30, 4 << 30}) || !slices.Equal(quick.CloneSizes, []int64{64 << 20, 256 << 20}) {
		t.Fatalf("clone sizes: %v %v", full.CloneSizes, quick.CloneSizes)
	}
	if !slices.Equal(full.MemClones, []int{1, 2, 4, 8, 16}) || full.MemFileSize != 1<<30 || quick.MemFileSize != 256<<20 {
		t.Fatal("memory workload sizes")
	}
	if full.CoWWrites != 20000 || quick.CoWWrites != 5000 || full.TreeFiles != 10000 || quick.TreeFiles != 2000 ||
		full.MetaFiles != 100000 || quick.MetaFiles != 10000 || full.TreeCopies != 8 {
		t.Fatal("counts")
	}
	if neededScratch(&quick) >= neededScratch(&full) {
		t.Fatal("quick must need less scratch space than full")
	}
	c := DefaultConfig(true)
	c.Only = []string{WorkloadLibrary}
	if c.needsMounts() || !c.selected(WorkloadLibrary) || c.selected(WorkloadClone) {
		t.Fatal("library alone needs no mounts")
	}
}

func TestCheckPrereqs(t *testing.T) {
	all := System{LookPath: func(string) (string, error) { return "/usr/bin/x", nil }, EUID: 0, HaveFUSE: true}
	if err := CheckPrereqs(all); err != nil {
		t.Fatalf("all present: %v", err)
	}
	missing := map[string]bool{"mkfs.xfs": true, "xfs_io": true, "fincore": true}
	sys := System{
		LookPath: func(name string) (string, error) {
			if missing[name] {
				return "", errors.New("not found")
			}
			return "/usr/bin/" + name, nil
		},
		EUID: 1000, HaveFUSE: false,
	}
	err := CheckPrereqs(sys)
	var me *MissingError
	if !errors.As(err, &me) {
		t.Fatalf("want *MissingError, got %v", err)
	}
	if !me.NotRoot || !me.NoFUSE || !slices.Equal(me.Tools, []string{"mkfs.xfs", "xfs_io", "fincore"}) ||
		!slices.Equal(me.Packages, []string{"xfsprogs", "util-linux-extra"}) {
		t.Fatalf("got %+v", me)
	}
	msg := err.Error()
	for _, want := range []string{"must run as root", "/dev/fuse", "mkfs.xfs not found (package xfsprogs", "fincore not found",
		"apt-get install -y xfsprogs util-linux-extra"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "losetup") {
		t.Errorf("message names a tool that is present:\n%s", msg)
	}
}
