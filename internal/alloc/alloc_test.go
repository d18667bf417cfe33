package alloc

import (
	"errors"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/reflinkfs/reflinkfs/internal/kv"
)

func newStore(t *testing.T) kv.Store {
	t.Helper()
	s, err := kv.OpenPebble(t.TempDir(), kv.PebbleOptions{CreateIfMissing: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// persistedRuns reads the F records back through a fresh allocator.
func reload(t *testing.T, s kv.Store, txn kv.Txn, blocks uint64) *Allocator {
	t.Helper()
	if err := s.Commit(txn, false); err != nil {
		t.Fatal(err)
	}
	a, err := Load(s, blocks)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestGoalAndQuarantine(t *testing.T) {
	s := newStore(t)
	txn := s.NewTxn()
	a, err := Format(txn, 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := a.Alloc(txn, 10, NoHint)
	if err != nil || len(r1) != 1 || r1[0] != (Run{0, 10}) {
		t.Fatalf("first alloc %v %v", r1, err)
	}
	// The hint continues a file contiguously.
	r2, _ := a.Alloc(txn, 5, 10)
	if r2[0] != (Run{10, 5}) {
		t.Fatalf("hinted alloc %v", r2)
	}
	if err := a.Free(txn, Run{0, 10}); err != nil {
		t.Fatal(err)
	}
	// Freed blocks are not reused before ReleaseQuarantine.
	r3, _ := a.Alloc(txn, 10, 0)
	if r3[0].Start < 15 {
		t.Fatalf("quarantined blocks reused: %v", r3)
	}
	if a.FreeBlocks() != 1000-15 || a.Quarantined() != 10 {
		t.Fatalf("free %d quarantined %d", a.FreeBlocks(), a.Quarantined())
	}
	if got := a.ReleaseQuarantine(); len(got) != 1 || got[0] != (Run{0, 10}) {
		t.Fatalf("released %v", got)
	}
	r4, _ := a.Alloc(txn, 10, 0)
	if r4[0] != (Run{0, 10}) {
		t.Fatalf("released blocks not reusable: %v", r4)
	}
	// Persisted records describe exactly the free space (quarantine included).
	b := reload(t, s, txn, 1000)
	if b.FreeBlocks() != a.FreeBlocks() {
		t.Fatalf("persisted %d free, in memory %d", b.FreeBlocks(), a.FreeBlocks())
	}
}

func TestNoSpaceAndFragments(t *testing.T) {
	s := newStore(t)
	txn := s.NewTxn()
	a, _ := Format(txn, 100, 0)
	// Free every other block of a full device.
	all, _ := a.Alloc(txn, 100, NoHint)
	if len(all) != 1 {
		t.Fatal(all)
	}
	for i := uint64(0); i < 100; i += 2 {
		if err := a.Free(txn, Run{i, 1}); err != nil {
			t.Fatal(err)
		}
	}
	a.ReleaseQuarantine()
	if _, err := a.Alloc(txn, 51, NoHint); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("want ENOSPC, got %v", err)
	}
	got, err := a.Alloc(txn, 50, NoHint)
	if err != nil || len(got) != 50 {
		t.Fatalf("fragmented alloc: %d runs, %v", len(got), err)
	}
	if a.Allocatable() != 0 {
		t.Fatal("blocks left")
	}
	if err := a.Free(txn, Run{0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := a.Free(txn, Run{0, 1}); err == nil {
		t.Fatal("double free not detected")
	}
}

// Random alloc/free against a bitmap model; persisted state must reload
// to the same free space.
func TestRandomAgainstBitmap(t *testing.T) {
	s := newStore(t)
	txn := s.NewTxn()
	const blocks = 4096
	a, _ := Format(txn, blocks, 0)
	used := make([]bool, blocks)
	var live []Run
	rng := rand.New(rand.NewPCG(3, 4))
	for step := 0; step < 3000; step++ {
		switch {
		case rng.IntN(3) > 0:
			n := uint64(1 + rng.IntN(40))
			runs, err := a.Alloc(txn, n, uint64(rng.IntN(blocks)))
			if errors.Is(err, syscall.ENOSPC) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			total := uint64(0)
			for _, r := range runs {
				for b := r.Start; b < r.End(); b++ {
					if used[b] {
						t.Fatalf("step %d: block %d allocated twice", step, b)
					}
					used[b] = true
				}
				total += r.Len
				live = append(live, r)
			}
			if total != n {
				t.Fatalf("allocated %d, asked %d", total, n)
			}
		case len(live) > 0:
			i := rng.IntN(len(live))
			r := live[i]
			live = append(live[:i], live[i+1:]...)
			if err := a.Free(txn, r); err != nil {
				t.Fatal(err)
			}
			for b := r.Start; b < r.End(); b++ {
				used[b] = false
			}
		}
		if rng.IntN(10) == 0 {
			a.ReleaseQuarantine()
		}
	}
	free := uint64(0)
	for _, u := range used {
		if !u {
			free++
		}
	}
	if a.FreeBlocks() != free {
		t.Fatalf("allocator says %d free, model %d", a.FreeBlocks(), free)
	}
	if b := reload(t, s, txn, blocks); b.FreeBlocks() != free {
		t.Fatalf("reloaded %d free, model %d", b.FreeBlocks(), free)
	}
}
