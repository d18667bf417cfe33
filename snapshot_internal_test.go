package reflinkfs

import (
	"math/rand"
	"testing"
)

// adjustRunTree against a per-block model: random overlapping adds, then
// the same ranges removed in another order, leave an empty tree.
func TestAdjustRunTree(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for round := 0; round < 200; round++ {
		tree := newRefTree()
		model := make([]int, 64)
		type rg struct{ p, n uint64 }
		var added []rg
		check := func() {
			t.Helper()
			got := make([]int, 64)
			prevEnd := uint64(0)
			tree.Ascend(func(r refRun) bool {
				if r.n == 0 || r.count == 0 || r.start < prevEnd {
					t.Fatalf("round %d: bad run %+v after end %d", round, r, prevEnd)
				}
				prevEnd = r.start + r.n
				for b := r.start; b < r.start+r.n; b++ {
					got[b] = int(r.count)
				}
				return true
			})
			for i := range model {
				if got[i] != model[i] {
					t.Fatalf("round %d: block %d count %d, want %d", round, i, got[i], model[i])
				}
			}
			runs := snapRunsIn(tree, 10, 30)
			for _, r := range runs {
				for b := r.start; b < r.start+r.n; b++ {
					if b < 10 || b >= 40 || model[b] != int(r.count) {
						t.Fatalf("round %d: snapRunsIn gave %+v", round, r)
					}
				}
			}
		}
		for i := 0; i < 8; i++ {
			p := uint64(rng.Intn(60))
			n := uint64(1 + rng.Intn(int(64-p)))
			adjustRunTree(tree, p, n, +1)
			for b := p; b < p+n; b++ {
				model[b]++
			}
			added = append(added, rg{p, n})
			check()
		}
		rng.Shuffle(len(added), func(i, j int) { added[i], added[j] = added[j], added[i] })
		for _, r := range added {
			adjustRunTree(tree, r.p, r.n, -1)
			for b := r.p; b < r.p+r.n; b++ {
				model[b]--
			}
			check()
		}
		if tree.Len() != 0 {
			t.Fatalf("round %d: %d runs left", round, tree.Len())
		}
	}
}
