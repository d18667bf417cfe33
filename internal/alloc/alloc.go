// Package alloc is the free-space manager of the data device.
//
// Free space lives in two places that must agree:
//   - the persisted free runs ('F' records in the metadata store), which the
//     running transaction updates at every allocation and free, and
//   - an in-memory ordered index of the runs that may be handed out now.
//
// Invariant: persisted free = allocatable ∪ quarantined. A run freed in the
// running transaction goes to quarantine, not to the allocatable index: until
// the transaction that freed it is durable, the durable metadata may still
// reference it (a crash would bring the old file back), so its blocks must
// not be overwritten. ReleaseQuarantine, called after a commit is durable,
// makes them allocatable.
//
// Allocation is goal based: a caller passes the physical block following its
// previous allocation, so files written in order stay contiguous.
package alloc

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/google/btree"
	"github.com/reflinkfs/reflinkfs/internal/kv"
	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// Run is a range of physical blocks.
type Run struct{ Start, Len uint64 }

// End is the first block after the run.
func (r Run) End() uint64 { return r.Start + r.Len }

// NoHint asks Alloc to continue after the previous allocation.
const NoHint = ^uint64(0)

// Allocator is not safe for concurrent use; the filesystem serialises calls
// under its metadata lock.
type Allocator struct {
	blocks     uint64 // device size in blocks
	free       *btree.BTreeG[Run]
	freeBlocks uint64 // allocatable blocks
	quarantine []Run
	quarBlocks uint64
	cursor     uint64
	// persisted mirrors the 'F' records exactly (free ∪ quarantined, merged),
	// so updating them never seeks the store.
	persisted *btree.BTreeG[Run]
}

func newAllocator(blocks uint64) *Allocator {
	less := func(a, b Run) bool { return a.Start < b.Start }
	return &Allocator{blocks: blocks, free: btree.NewG(16, less), persisted: btree.NewG(16, less)}
}

// Format persists a free device of the given size, but for its first
// reserved blocks, and returns its allocator.
func Format(txn kv.Txn, blocks, reserved uint64) (*Allocator, error) {
	a := newAllocator(blocks)
	if blocks <= reserved {
		return a, nil
	}
	r := Run{reserved, blocks - reserved}
	a.insert(r)
	return a, a.putFree(txn, r)
}

// Empty returns an allocator with no free space, for an image whose free
// space records cannot be read (until fsck rebuilds them).
func Empty(blocks uint64) *Allocator { return newAllocator(blocks) }

// Load builds the allocator from the persisted free runs.
func Load(rd kv.Reader, blocks uint64) (*Allocator, error) {
	a := newAllocator(blocks)
	var prevEnd uint64
	err := kv.Scan(rd, []byte{meta.PrefixFree}, []byte{meta.PrefixFree + 1}, func(k, v []byte) error {
		start, err := meta.ParseKey1(meta.PrefixFree, k)
		if err != nil {
			return err
		}
		run, err := meta.DecodeRun(k, v)
		if err != nil {
			return err
		}
		r := Run{start, run.Len}
		if r.End() > blocks || r.End() < r.Start {
			return fmt.Errorf("%w: free run %d+%d beyond device of %d blocks", meta.ErrCorrupt, r.Start, r.Len, blocks)
		}
		if r.Start < prevEnd {
			return fmt.Errorf("%w: free run %d+%d overlaps the previous one", meta.ErrCorrupt, r.Start, r.Len)
		}
		prevEnd = r.End()
		a.insert(r)
		a.persisted.ReplaceOrInsert(r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Allocator) insert(r Run) {
	a.free.ReplaceOrInsert(r)
	a.freeBlocks += r.Len
}

func (a *Allocator) remove(r Run) {
	a.free.Delete(r)
	a.freeBlocks -= r.Len
}

// Allocatable is the number of blocks Alloc can hand out now.
func (a *Allocator) Allocatable() uint64 { return a.freeBlocks }

// FreeBlocks is the number of free blocks including quarantined ones (the
// durable view once the running transaction commits).
func (a *Allocator) FreeBlocks() uint64 { return a.freeBlocks + a.quarBlocks }

// DeviceBlocks is the device size in blocks.
func (a *Allocator) DeviceBlocks() uint64 { return a.blocks }

// Quarantined is the number of blocks waiting for a commit.
func (a *Allocator) Quarantined() uint64 { return a.quarBlocks }

// ErrNoSpace is returned (wrapped with ENOSPC) when not enough blocks are allocatable.
var ErrNoSpace = fmt.Errorf("no space left on data device: %w", syscall.ENOSPC)

// Alloc allocates n blocks, preferring one run starting at hint, then any
// single run, then several runs. The allocation is persisted in txn.
func (a *Allocator) Alloc(txn kv.Txn, n, hint uint64) ([]Run, error) {
	if n == 0 {
		return nil, nil
	}
	if n > a.freeBlocks {
		return nil, ErrNoSpace
	}
	if hint == NoHint || hint >= a.blocks {
		hint = a.cursor
	}
	var got []Run
	take := func(r Run) error {
		if err := a.take(txn, r); err != nil {
			return err
		}
		got = append(got, r)
		a.cursor = r.End()
		n -= r.Len
		return nil
	}
	// 1. Exactly at the hint (extends the caller's previous run).
	if r, ok := a.runContaining(hint); ok && r.End()-hint >= n {
		return got, take(Run{hint, n})
	}
	// 2. The first run from the hint onwards (wrapping) that fits whole.
	var fit Run
	found := false
	scan := func(r Run) bool {
		if r.Len >= n {
			fit, found = r, true
			return false
		}
		return true
	}
	a.free.AscendGreaterOrEqual(Run{Start: hint}, scan)
	if !found {
		a.free.AscendLessThan(Run{Start: hint}, scan)
	}
	if found {
		return got, take(Run{fit.Start, n})
	}
	// 3. Fragments, in address order from the hint.
	var pieces []Run
	collect := func(r Run) bool {
		pieces = append(pieces, r)
		return true
	}
	a.free.AscendGreaterOrEqual(Run{Start: hint}, collect)
	a.free.AscendLessThan(Run{Start: hint}, collect)
	for _, r := range pieces {
		if n == 0 {
			break
		}
		if r.Len > n {
			r.Len = n
		}
		if err := take(r); err != nil {
			return got, err
		}
	}
	return got, nil
}

func (a *Allocator) runContaining(b uint64) (Run, bool) {
	var found Run
	ok := false
	a.free.DescendLessOrEqual(Run{Start: b}, func(r Run) bool {
		if b < r.End() {
			found, ok = r, true
		}
		return false
	})
	return found, ok
}

// take removes r, which lies inside one allocatable run, from the index and
// from the persisted free runs.
func (a *Allocator) take(txn kv.Txn, r Run) error {
	whole, ok := a.runContaining(r.Start)
	if !ok || r.End() > whole.End() {
		return fmt.Errorf("alloc: %d+%d is not free", r.Start, r.Len)
	}
	a.remove(whole)
	if whole.Start < r.Start {
		a.insert(Run{whole.Start, r.Start - whole.Start})
	}
	if r.End() < whole.End() {
		a.insert(Run{r.End(), whole.End() - r.End()})
	}
	return a.persistTake(txn, r)
}

// Free returns r to free space. It is persisted in txn at once but becomes
// allocatable only after ReleaseQuarantine.
func (a *Allocator) Free(txn kv.Txn, r Run) error {
	if r.Len == 0 {
		return nil
	}
	if r.End() > a.blocks || r.End() < r.Start {
		return fmt.Errorf("%w: free of %d+%d beyond device", meta.ErrCorrupt, r.Start, r.Len)
	}
	if err := a.persistGive(txn, r); err != nil {
		return err
	}
	a.quarantine = append(a.quarantine, r)
	a.quarBlocks += r.Len
	return nil
}

// ReleaseQuarantine makes every quarantined run allocatable and returns them
// (the caller punches them out of the device file). Call it only once the
// transaction that freed them is durable.
func (a *Allocator) ReleaseQuarantine() []Run {
	q := a.quarantine
	a.quarantine = nil
	a.quarBlocks = 0
	for _, r := range q {
		// Merge with allocatable neighbours to keep the index small.
		if left, ok := a.runContaining(r.Start - 1); r.Start > 0 && ok && left.End() == r.Start {
			a.remove(left)
			r = Run{left.Start, left.Len + r.Len}
		}
		if right, ok := a.free.Get(Run{Start: r.End()}); ok {
			a.remove(right)
			r.Len += right.Len
		}
		a.insert(r)
	}
	return q
}

// Each calls fn for every allocatable run in address order.
func (a *Allocator) Each(fn func(Run) bool) { a.free.Ascend(fn) }

// QuarantinedRuns returns the runs waiting for a commit.
func (a *Allocator) QuarantinedRuns() []Run { return append([]Run(nil), a.quarantine...) }

func (a *Allocator) putFree(txn kv.Txn, r Run) error {
	a.persisted.ReplaceOrInsert(r)
	k := meta.FreeKey(r.Start)
	v := meta.Run{Len: r.Len}
	return txn.Set(k, v.Encode(k))
}

func (a *Allocator) deleteFree(txn kv.Txn, start uint64) error {
	a.persisted.Delete(Run{Start: start})
	return txn.Delete(meta.FreeKey(start))
}

// persistedAtOrBefore returns the persisted free run with the greatest start <= b.
func (a *Allocator) persistedAtOrBefore(b uint64) (Run, bool) {
	var found Run
	ok := false
	a.persisted.DescendLessOrEqual(Run{Start: b}, func(r Run) bool {
		found, ok = r, true
		return false
	})
	return found, ok
}

var errInconsistent = errors.New("free space records disagree with the allocator")

func (a *Allocator) persistTake(txn kv.Txn, r Run) error {
	whole, ok := a.persistedAtOrBefore(r.Start)
	if !ok || r.End() > whole.End() {
		return fmt.Errorf("%w: taking %d+%d", errInconsistent, r.Start, r.Len)
	}
	if err := a.deleteFree(txn, whole.Start); err != nil {
		return err
	}
	if whole.Start < r.Start {
		if err := a.putFree(txn, Run{whole.Start, r.Start - whole.Start}); err != nil {
			return err
		}
	}
	if r.End() < whole.End() {
		return a.putFree(txn, Run{r.End(), whole.End() - r.End()})
	}
	return nil
}

func (a *Allocator) persistGive(txn kv.Txn, r Run) error {
	if r.Start > 0 {
		if left, ok := a.persistedAtOrBefore(r.Start - 1); ok {
			if left.End() > r.Start {
				return fmt.Errorf("%w: freeing %d+%d which is already free", errInconsistent, r.Start, r.Len)
			}
			if left.End() == r.Start {
				if err := a.deleteFree(txn, left.Start); err != nil {
					return err
				}
				r = Run{left.Start, left.Len + r.Len}
			}
		}
	}
	if inner, ok := a.persistedAtOrBefore(r.End() - 1); ok && inner.Start >= r.Start && inner.Start < r.End() {
		return fmt.Errorf("%w: freeing %d+%d which overlaps free run %d+%d", errInconsistent, r.Start, r.Len, inner.Start, inner.Len)
	}
	if right, ok := a.persisted.Get(Run{Start: r.End()}); ok {
		if err := a.deleteFree(txn, right.Start); err != nil {
			return err
		}
		r.Len += right.Len
	}
	return a.putFree(txn, r)
}
