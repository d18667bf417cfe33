package crashtest

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/tuning"
)

// Fsck of an image whose reaper is freeing a deleted file must report what
// is wrong with the image, not the reaper's progress. Check commits, then
// takes the gate: a reaping operation that runs in between leaves the
// in-memory counters (allocator, mapped blocks, quarantine) ahead of the
// committed records Check scans, and Check reports them as problems.
// Any other writer in that window does the same; the reaper makes it
// routine (it waits on the gate while the commit holds it).
func TestFsckWhileReaping(t *testing.T) {
	defer tuning.SetReap(16, 1)()
	fsys, err := reflinkfs.Create(t.TempDir(), reflinkfs.Options{Size: 64 << 20, CacheSize: 256 << 10, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	block := make([]byte, BlockSize)
	for i := range block {
		block[i] = byte(i) | 1
	}
	var falseReports []string
	for round := range 2 {
		f, err := fsys.OpenFile("big", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 300 { // 300 one-block extents
			if _, err := f.WriteAt(block, int64(2*i)*BlockSize); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := fsys.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := fsys.Remove("big"); err != nil {
			t.Fatal(err)
		}
		// Check again and again while the reaper is freeing big.
		for checks := 0; fsys.Stats().ReapingFiles > 0 && checks < 10; checks++ {
			rep, err := fsys.Fsck(false)
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Clean() {
				falseReports = append(falseReports, fmt.Sprintf("round %d, check %d: %s", round, checks, strings.Join(rep.Problems, "; ")))
			}
		}
		fsys.WaitReaped()
		if rep, err := fsys.Fsck(false); err != nil || !rep.Clean() {
			t.Fatalf("fsck once the reaper is done: %v %v", err, rep)
		}
	}
	if len(falseReports) > 0 {
		t.Errorf("fsck run while the reaper freed a deleted file reported problems %d times (clean once it was done), first:\n\t%s",
			len(falseReports), strings.Join(falseReports[:min(3, len(falseReports))], "\n\t"))
	}
}
