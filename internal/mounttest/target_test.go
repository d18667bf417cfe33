package mounttest

import (
	"bytes"
	"github.com/reflinkfs/reflinkfs/internal/testenv"
	"strings"
	"testing"

	mt "github.com/reflinkfs/reflinkfs/internal/modeltest"
)

// mountRegressions are sequences that once failed through the mount only,
// each for a kernel difference the target now accounts for (package doc).
// They must pass through the mount and the library alike.
var mountRegressions = []struct {
	name string
	ops  []mt.Op
}{
	// copy_file_range with a negative offset and a length: the kernel says
	// EOVERFLOW (offset + length wraps as unsigned), the engine EINVAL.
	{name: "copy-negative-offset-with-length", ops: []mt.Op{
		mt.Write(2, 0, 0, 1),
		mt.Copy(2, 2, -4096, 5*mt.B+3978, 9*mt.B),
	}},
	// ... and with length 0, where the target must still make the call.
	{name: "copy-negative-offset-zero-length", ops: []mt.Op{
		mt.Write(2, 0, 0, 1),
		mt.Copy(2, 2, -4096, 0, 0),
	}},
	// A same-file copy over 4 GiB that extends the file: issued as calls of
	// at most 4 GiB in order, the tail piece no longer ended at the
	// source's EOF (the file had grown) and was written instead of shared.
	{name: "copy-over-4GiB-same-file-extending", ops: []mt.Op{
		mt.Write(0, 1048576*mt.B, 1, 1),
		mt.Copy(0, 0, 0, 1239857*mt.B, 2097152*mt.B),
	}},
	// A copy over 4 GiB from an unaligned offset: a call boundary at
	// srcOff + 4 GiB - 4 KiB is unaligned, so the block there would be
	// written, not shared.
	{name: "copy-over-4GiB-unaligned", ops: []mt.Op{
		mt.Write(1, 0, 0, 0),
		mt.Write(0, 1310720*mt.B+7, 2*mt.B, 3),
		mt.Copy(0, 1, 100, 2*mt.Huge, 100),
	}},
}

func TestMountRegressions(t *testing.T) {
	testenv.RequireFUSE(t)
	mount := mountFactory(t)
	lib := libFactory(t)
	for _, r := range mountRegressions {
		t.Run(r.name, func(t *testing.T) {
			if f := mt.RunFresh(mount.make, r.ops, mt.RunOptions{}); f != nil {
				t.Errorf("through the mount:\n%s", mt.Report(f, mt.ShrinkStats{}))
			}
			if f := mt.RunFresh(lib, r.ops, mt.RunOptions{}); f != nil {
				t.Errorf("through the library:\n%s", mt.Report(f, mt.ShrinkStats{}))
			}
		})
	}
}

// TestMountIOPaths checks that generated sequences reach the kernel by
// every data path: plain, O_DIRECT and mmap reads and writes.
func TestMountIOPaths(t *testing.T) {
	testenv.RequireFUSE(t)
	cf := mountFactory(t)
	for seed := uint64(1); seed <= 4; seed++ {
		if f := mt.RunFresh(cf.make, mt.Generate(seed, mt.GenOptions{Ops: 40, Detach: true}), mt.RunOptions{}); f != nil {
			f.Seed = seed
			triage(t, cf.make, f)
		}
	}
	c := cf.totals
	t.Logf("I/O paths: %+v", c)
	for name, n := range map[string]int{
		"plain writes": c.PlainWrites, "O_DIRECT writes": c.DirectWrites, "mmap writes": c.MmapWrites,
		"plain reads": c.PlainReads, "O_DIRECT reads": c.DirectReads, "mmap reads": c.MmapReads,
	} {
		if n == 0 {
			t.Errorf("no %s in 4 sequences", name)
		}
	}
}

// TestMountRemoveWaitsForRelease checks that Remove, Rename over a file and
// CloseDetached return only once the engine has freed the file, although
// the kernel sends FUSE_RELEASE after close(2) has returned.
func TestMountRemoveWaitsForRelease(t *testing.T) {
	testenv.RequireFUSE(t)
	tg, err := New(t.TempDir(), t.TempDir(), Options{Logger: testLogger(t), Mmap: sharedMmapHelper(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tg.Close(); err != nil {
			t.Error(err)
		}
	}()
	used := func(want int64, after string) {
		t.Helper()
		if got := tg.FS().Stats().UsedBytes; got != want*mt.B {
			t.Fatalf("after %s: UsedBytes %d (%d blocks), want %d blocks", after, got, got/mt.B, want)
		}
	}
	for i, name := range []string{"f0", "f1", "f2", "f3"} {
		// Different data in each file: copy detection would share blocks
		// this process read back from one file and wrote into the next.
		data := mt.Pattern(uint32(7+i), 8*mt.B)
		if err := tg.WriteAt(name, 0, data); err != nil {
			t.Fatal(err)
		}
		// Reads open the O_DIRECT descriptor too, for some offsets.
		for off := int64(0); off < 8*mt.B; off += mt.B {
			got, err := tg.ReadAt(name, off, mt.B)
			if err != nil || !bytes.Equal(got, data[off:off+mt.B]) {
				t.Fatalf("%s: read at %d: %v", name, off, err)
			}
		}
	}
	used(32, "writing four files")
	if err := tg.Remove("f0"); err != nil {
		t.Fatal(err)
	}
	used(24, "Remove")
	if err := tg.Rename("f1", "f2"); err != nil {
		t.Fatal(err)
	}
	used(16, "Rename over a file")
	if err := tg.Detach("f2", 0); err != nil {
		t.Fatal(err)
	}
	used(16, "Detach (the file is still open)")
	if got, err := tg.ReadDetached(0, 0, 8*mt.B); err != nil || !bytes.Equal(got, mt.Pattern(8, 8*mt.B)) { // f1's data, renamed to f2
		t.Fatalf("ReadDetached: %d bytes, %v", len(got), err)
	}
	if err := tg.Detach("f3", 0); err != nil { // closes what slot 0 held
		t.Fatal(err)
	}
	used(8, "Detach into a used slot")
	if err := tg.CloseDetached(0); err != nil {
		t.Fatal(err)
	}
	used(0, "CloseDetached")
}

// TestInexpressibleCopy pins the one copy shape that cannot go through FUSE
// with the oracle's semantics (found by TestModelMount, seed
// 1795221534177615036): the target refuses it, and the library, which does
// it in one call, passes the sequence.
func TestInexpressibleCopy(t *testing.T) {
	ops := []mt.Op{
		mt.Write(4, 268435466*mt.B, 1, 1),
		mt.Rename(4, 0),
		mt.Copy(0, 0, 185778372*mt.B+3589, 82657094*mt.B, 268435466*mt.B+3589),
	}
	if Expressible(ops[2]) {
		t.Fatalf("%v is Expressible", ops[2])
	}
	if got := Mountable(ops); len(got) != 2 {
		t.Fatalf("Mountable kept %d ops, want 2", len(got))
	}
	for _, op := range []mt.Op{
		mt.Copy(0, 1, 3589, 2*mt.Huge, 2*mt.Huge+3589),     // two files
		mt.Copy(0, 0, 0, 2*mt.Huge, 2*mt.Huge),             // aligned: no head
		mt.Copy(0, 0, 3589, 2*mt.Huge, 2*mt.Huge+100),      // misaligned
		mt.Copy(0, 0, 2*mt.Huge+3589, 2*mt.Huge, 3589),     // destination first
		mt.Copy(0, 0, 3589, maxCopyCall, maxCopyCall+3589), // one call
	} {
		if !Expressible(op) {
			t.Errorf("%v is not Expressible", op)
		}
	}
	if f := mt.RunFresh(libFactory(t), ops, mt.RunOptions{}); f != nil {
		t.Errorf("through the library:\n%s", mt.Report(f, mt.ShrinkStats{}))
	}

	testenv.RequireFUSE(t)
	mount := mountFactory(t)
	f := mt.RunFresh(mount.make, ops, mt.RunOptions{})
	if f == nil || f.Step != 2 || f.Class != mt.ClassResult || !strings.Contains(f.Msg, "cannot be issued through FUSE") {
		t.Errorf("through the mount: %v, want ErrInexpressible at step 3", f)
	}
}
