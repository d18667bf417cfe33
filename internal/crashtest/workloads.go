package crashtest

import (
	"fmt"

	"github.com/reflinkfs/reflinkfs/internal/tuning"
)

// Workload is a named sequence of operations for Record.
type Workload struct {
	Name string
	Run  func(w *W)
	// Reap, when set, lowers the background freeing thresholds (extents
	// above which a deleted file is freed in the background, extents freed
	// per operation) so small files reach the reaper; see Tune.
	Reap [2]int
}

// Tune sets the engine thresholds the workload needs, for its recording
// and every replay of it, and returns the function restoring them. No
// engine may be running meanwhile (other than recorded images left open
// with an idle reaper).
func (wl Workload) Tune() (restore func()) {
	if wl.Reap == [2]int{} {
		return func() {}
	}
	return tuning.SetReap(wl.Reap[0], wl.Reap[1])
}

// reapTuning: files of more than 64 extents are freed in the background,
// 4 extents per operation, so a file of a few hundred extents takes dozens
// of operations that commits and other writes interleave with.
var reapTuning = [2]int{64, 4}

const kib = 1024

// Workloads are the crash workloads: each is small (a few hundred device
// operations) and exercises one part of the crash contract; "mix" combines
// them at random.
var Workloads = []Workload{
	{Name: "sequential-write-fsync", Run: sequentialWrites},
	{Name: "random-write-fsync", Run: randomWrites},
	{Name: "overwrite-shared", Run: overwriteShared},
	{Name: "clone", Run: cloneWorkload},
	{Name: "dedupe", Run: dedupeWorkload},
	{Name: "punch", Run: punchWorkload},
	{Name: "zero-range", Run: zeroWorkload},
	{Name: "truncate", Run: truncateWorkload},
	{Name: "unlink-open-clone-source", Run: unlinkCloneSource},
	{Name: "rename-over", Run: renameOver},
	{Name: "many-small-files", Run: manySmallFiles},
	{Name: "reuse-freed-space", Run: reuseFreed},
	{Name: "mix", Run: mixWorkload},
	{Name: "reap-cloned", Run: reapCloned, Reap: reapTuning},
	{Name: "reap-unlinked-open", Run: reapUnlinkedOpen, Reap: reapTuning},
}

// sequentialWrites appends to two files, fsyncing one or the other.
func sequentialWrites(w *W) {
	a, b := w.Create("a"), w.Create("b")
	for i := range 40 {
		f := a
		if i%3 == 2 {
			f = b
		}
		f.Write(f.Size(), 1000+w.Rand().IntN(40000))
		if i%4 == 3 {
			f.Sync()
		}
	}
	a.Sync()
	a.Close()
	b.Close()
}

// randomWrites makes unaligned writes at random places in three files,
// with an fsync of one of them now and then.
func randomWrites(w *W) {
	files := []*File{w.Create("r0"), w.Create("r1"), w.Create("r2")}
	for i := range 60 {
		f := files[w.Rand().IntN(len(files))]
		off := w.Rand().Int64N(512 * kib)
		f.Write(off, 1+w.Rand().IntN(20000))
		if i%6 == 5 {
			files[w.Rand().IntN(len(files))].Sync()
		}
	}
	w.SyncFS()
	for _, f := range files {
		f.Close()
	}
}

// overwriteShared writes into blocks shared by clones: each write must copy
// the block, leaving the other files' data (durable or not) alone.
func overwriteShared(w *W) {
	a := w.Create("a")
	a.Write(0, 128*kib+333)
	a.Sync()
	w.Clone("a", "b")
	w.SyncFS()
	b := w.Open("b")
	for i := range 10 {
		f := a
		if i%2 == 1 {
			f = b
		}
		f.Write(w.Rand().Int64N(f.Size()), 1+w.Rand().IntN(9000))
		if i == 4 {
			f.Sync()
		}
	}
	// Clone the dirty file (its fresh blocks are written back first), then
	// overwrite both sides before and after a sync.
	w.Clone("b", "c")
	c := w.Open("c")
	c.Write(4096, 8192)
	b.Write(0, 100)
	c.Sync()
	c.Write(10*4096+5, 5000)
	a.Write(a.Size()-10, 20)
	w.SyncFS()
	for _, f := range []*File{a, b, c} {
		f.Write(w.Rand().Int64N(f.Size()), 4096)
	}
	a.Sync()
	a.Close()
	b.Close()
	c.Close()
}

// cloneWorkload clones whole files and ranges, of durable and of dirty data,
// over existing files and into new ones.
func cloneWorkload(w *W) {
	src := w.Create("src")
	src.Write(0, 64*kib)
	w.Clone("src", "c1") // dirty source
	src.Sync()
	src.Write(16*kib, 4096) // c1 keeps the old block
	dst := w.Create("dst")
	dst.Write(0, 100*kib+17)
	dst.Sync()
	dst.CloneRange(src, 0, 32*kib, 8*kib)  // over existing durable blocks
	dst.CloneRange(src, 48*kib, 0, 96*kib) // to src's EOF, growing dst
	w.Clone("dst", "c1")                   // clone over an existing clone
	w.SyncFS()
	src.Write(60*kib, 4096)
	dst.CloneRange(src, 56*kib, 8*kib, 0)
	src.Write(56*kib, 10)
	w.Clone("src", "c2")
	c2 := w.Open("c2")
	c2.CloneFrom(dst) // replace c2's contents
	c2.Sync()
	c2.Write(0, 5000)
	src.Close()
	dst.Close()
	c2.Close()
	w.SyncFS()
}

// dedupeWorkload writes identical data into two files (separately
// allocated), deduplicates them, and overwrites both sides.
func dedupeWorkload(w *W) {
	data := w.Data(48 * kib)
	for i := range data { // never all zeros: dedupe must find equal non-zero data
		if data[i] == 0 {
			data[i] = 1
		}
	}
	a, b := w.Create("a"), w.Create("b")
	a.WriteData(0, data)
	b.WriteData(4*kib, data)
	a.Sync()
	b.Dedupe(a, 0, 48*kib, 4*kib)
	b.Sync()
	a.Write(8*kib, 100)
	b.Write(20*kib, 4096)
	w.SyncFS()
	// Dedupe of dirty data, then a crash before any sync.
	c := w.Create("c")
	c.WriteData(0, data[:16*kib])
	c.Dedupe(b, 4*kib, 16*kib, 0)
	c.Write(4*kib, 1)
	c.Sync()
	a.Close()
	b.Close()
	c.Close()
}

// punchWorkload punches holes (aligned and not) in private and shared
// blocks, and writes into them again.
func punchWorkload(w *W) {
	a := w.Create("a")
	a.Write(0, 96*kib)
	a.Sync()
	a.Punch(4*kib, 8*kib)
	a.Punch(20*kib+100, 10*kib)
	w.Clone("a", "b")
	b := w.Open("b")
	b.Punch(40*kib, 16*kib) // shared blocks: only b loses them
	a.Sync()
	a.Punch(0, 200*kib) // past EOF: size unchanged
	b.Write(4*kib, 3000)
	b.Sync()
	b.Punch(90*kib, 50*kib)
	a.Write(50*kib, 20*kib)
	w.SyncFS()
	a.Close()
	b.Close()
}

// zeroWorkload zeroes ranges (growing and keeping the size) and
// preallocates, then writes into the preallocated blocks.
func zeroWorkload(w *W) {
	a := w.Create("a")
	a.Write(0, 64*kib)
	a.Sync()
	a.Zero(8*kib, 16*kib, false)
	a.Zero(30*kib+7, 9000, false)
	a.Zero(60*kib, 20*kib, false) // grows the file
	a.Sync()
	a.Zero(100*kib, 8*kib, true) // past EOF, size kept
	a.Allocate(80*kib, 40*kib, false)
	a.Allocate(200*kib, 16*kib, true)
	a.Write(84*kib, 6000) // into preallocated blocks
	w.Clone("a", "b")
	b := w.Open("b")
	b.Zero(0, 32*kib, true) // shared blocks
	b.Sync()
	a.Write(90*kib, 100)
	b.Zero(4*kib, 4*kib, false)
	a.Close()
	b.Close()
	w.SyncFS()
}

// truncateWorkload shrinks and grows files, unaligned, shared and not.
func truncateWorkload(w *W) {
	a := w.Create("a")
	a.Write(0, 80*kib)
	a.Sync()
	a.Truncate(30*kib + 123) // frees blocks, zeroes the tail of the last one
	a.Truncate(50 * kib)     // grows: zeros past the old end
	a.Write(40*kib, 100)
	a.Sync()
	w.Clone("a", "b")
	b := w.Open("b")
	b.Truncate(10*kib + 1) // shared last block: copied before zeroing its tail
	a.Truncate(0)
	a.Write(0, 20*kib)
	b.Sync()
	b.Truncate(100 * kib)
	a.Truncate(5)
	w.SyncFS()
	b.Truncate(4 * kib)
	a.Close()
	b.Close()
}

// unlinkCloneSource removes a clone's source while both are open: the
// source lives on as an orphan until closed, its blocks shared with the
// clone; a crash must free the orphan and keep the clone.
func unlinkCloneSource(w *W) {
	a := w.Create("a")
	a.Write(0, 40*kib+1)
	a.Sync()
	w.Clone("a", "b")
	b := w.Open("b")
	w.Remove("a") // a is open: it becomes an orphan
	w.SyncFS()
	a.Write(4*kib, 8*kib) // writes to the orphan copy its shared blocks
	b.Write(20*kib, 100)
	b.Sync()
	c := w.Create("c")
	c.CloneFrom(a) // clone from the orphan
	c.Sync()
	a.Close() // frees the orphan; its blocks shared with b and c stay
	w.SyncFS()
	b.Write(0, 4096)
	b.Close()
	w.Remove("b")
	c.Close()
	w.SyncFS()
}

// renameOver replaces files by renaming new versions over them (the
// atomic-replace idiom), with and without syncing the new version first.
func renameOver(w *W) {
	w.Mkdir("d")
	w.WriteFile("d/target", 20*kib)
	w.SyncFS()
	for i := range 4 {
		tmp := fmt.Sprintf("d/tmp%d", i)
		f := w.Create(tmp)
		f.Write(0, 4*kib+w.Rand().IntN(20*kib))
		if i%2 == 0 {
			f.Sync()
		}
		f.Close()
		w.Rename(tmp, "d/target")
		if i != 1 {
			w.SyncFS()
		}
	}
	// Rename over an open file, then over a clone of itself.
	t := w.Open("d/target")
	w.WriteFile("x", 9000)
	w.Rename("x", "d/target")
	t.Write(0, 100) // the replaced (now orphan) file
	w.Clone("d/target", "d/clone")
	w.Rename("d/clone", "d/target")
	w.SyncFS()
	t.Close()
	w.Mkdir("e")
	w.Rename("d", "e/d")
	w.SyncFS()
}

// manySmallFiles creates, rewrites, renames and removes small files across
// directories, syncing now and then.
func manySmallFiles(w *W) {
	for d := range 4 {
		w.Mkdir(fmt.Sprintf("d%d", d))
	}
	var names []string
	for i := range 120 {
		name := fmt.Sprintf("d%d/f%03d", i%4, i)
		w.WriteFile(name, w.Rand().IntN(6000))
		names = append(names, name)
		if i%25 == 24 {
			w.SyncFS()
		}
		if i%10 == 9 {
			victim := w.Rand().IntN(len(names))
			w.Remove(names[victim])
			names = append(names[:victim], names[victim+1:]...)
		}
		if i%15 == 14 {
			j := w.Rand().IntN(len(names))
			to := fmt.Sprintf("d%d/renamed%03d", w.Rand().IntN(4), i)
			w.Rename(names[j], to)
			names[j] = to
		}
	}
	w.SyncFS()
	for _, name := range names[:20] {
		f := w.Open(name)
		f.Write(f.Size(), 500)
		f.Close()
	}
	w.Link(names[20], "d0/hardlink")
	w.SyncFS()
}

// reuseFreed frees blocks (remove, truncate, overwrite of durable data) and
// immediately writes new data, which must not land in the freed blocks
// before the freeing is durable.
func reuseFreed(w *W) {
	a := w.Create("a")
	a.Write(0, 64*kib)
	b := w.Create("b")
	b.Write(0, 64*kib)
	w.SyncFS()
	w.Remove("a")
	b.Truncate(8 * kib)
	c := w.Create("c")
	c.Write(0, 120*kib)
	b.Write(0, 8*kib) // overwrite of durable blocks: copied
	c.Sync()
	a.Write(0, 10) // a is an open orphan
	a.Close()
	d := w.Create("d")
	d.Write(0, 64*kib)
	w.Remove("c")
	c.Close()
	e := w.Create("e")
	e.Write(0, 128*kib)
	w.SyncFS()
	b.Close()
	d.Close()
	e.Close()
}

// mixWorkload runs random operations of every kind on a few files.
func mixWorkload(w *W) {
	names := []string{"m0", "m1", "m2", "m3"}
	open := map[string]*File{}
	get := func() *File {
		name := names[w.Rand().IntN(len(names))]
		if f := open[name]; f != nil {
			return f
		}
		var f *File
		if w.m.Lookup(name) != nil {
			f = w.Open(name)
		} else {
			f = w.Create(name)
		}
		open[name] = f
		return f
	}
	blockOff := func(f *File) int64 {
		return w.Rand().Int64N(f.Size()/4096+1) * 4096
	}
	for range 80 {
		f := get()
		switch w.Rand().IntN(14) {
		case 0, 1, 2:
			f.Write(w.Rand().Int64N(160*kib), 1+w.Rand().IntN(16*kib))
		case 3:
			f.Truncate(w.Rand().Int64N(160 * kib))
		case 4:
			f.Punch(w.Rand().Int64N(160*kib), 1+w.Rand().Int64N(32*kib))
		case 5:
			f.Zero(w.Rand().Int64N(160*kib), 1+w.Rand().Int64N(32*kib), w.Rand().IntN(2) == 0)
		case 6:
			src := get()
			if src != f && src.Size() > 0 {
				off := blockOff(src)
				if off < src.Size() {
					n := min(src.Size()-off, int64(1+w.Rand().IntN(8))*4096)
					if n%4096 != 0 && off+n != src.Size() {
						n -= n % 4096
					}
					dst := blockOff(f)
					if n > 0 && (n%4096 == 0 || dst+n >= f.Size()) {
						f.CloneRange(src, off, n, dst)
					}
				}
			}
		case 7:
			src := get()
			if src != f && src.Size() > 0 {
				f.CopyRange(src, w.Rand().Int64N(src.Size()), 1+w.Rand().Int64N(40*kib), w.Rand().Int64N(160*kib))
			}
		case 8:
			src := get()
			if src != f {
				f.CloneFrom(src)
			}
		case 9:
			f.Sync()
		case 10:
			w.SyncFS()
		case 11:
			f.Close()
			delete(open, f.path)
			if w.Rand().IntN(2) == 0 {
				w.Remove(f.path)
			}
		case 12:
			to := names[w.Rand().IntN(len(names))]
			if to != f.path {
				if g := open[to]; g != nil {
					g.Close()
					delete(open, to)
				}
				w.Rename(f.path, to)
				delete(open, f.path)
				f.path = to
				open[to] = f
			}
		case 13:
			f.Allocate(w.Rand().Int64N(160*kib), 1+w.Rand().Int64N(32*kib), w.Rand().IntN(2) == 0)
		}
	}
	w.SyncFS()
	for _, f := range open {
		f.Close()
	}
}

// reapCloned deletes a fragmented file (every other block written: one
// extent per block) part of which a second file clones, so the background
// reaper frees it while syncs and unrelated writes go on, then deletes the
// clone the same way, and finally everything: the image must end as empty
// as it was created, whichever the crash point.
func reapCloned(w *W) {
	big := w.Create("big")
	big.WriteEvery(0, 2*BlockSize, 240, BlockSize) // 240 extents
	big.Sync()
	clone := w.Create("clone")
	clone.CloneRange(big, 80*BlockSize, 320*BlockSize, 0) // 160 shared extents
	clone.Sync()
	big.Close()
	w.Remove("big") // 240 extents: to the reaper
	w.SyncFS()      // commits a partly freed orphan
	other := w.Create("other")
	other.Write(0, 24*kib)
	other.Sync()
	clone.Write(10*BlockSize, 2*BlockSize) // shared blocks now private
	other.Write(8*kib, 40*kib)
	w.SyncFS()
	w.WaitReaped()
	w.SyncFS()
	clone.Close()
	w.Remove("clone") // about 160 extents: to the reaper
	other.Write(0, 4*kib)
	other.Sync()
	w.WaitReaped()
	other.Close()
	w.Remove("other")
	w.SyncFS()
}

// reapUnlinkedOpen deletes fragmented files still open: the last close
// hands an unlinked file to the reaper; renaming over a fragmented file
// hands the replaced one to it; and one orphan stays open across syncs.
func reapUnlinkedOpen(w *W) {
	a := w.Create("a")
	a.WriteEvery(0, 2*BlockSize, 150, BlockSize) // 150 extents
	a.Sync()
	b := w.Create("b")
	b.WriteEvery(BlockSize, 3*BlockSize, 100, 2000) // 100 extents, partial blocks
	w.Remove("a")                                   // a is open: an orphan, not reaped yet
	a.WriteEvery(BlockSize, 8*BlockSize, 10, 100)   // writes to the orphan
	w.SyncFS()
	a.Close() // the last close: to the reaper
	b.Write(0, 3000)
	b.Sync() // commits while a is being freed
	small := w.Create("small")
	small.Write(0, 9000)
	small.Close()
	w.Rename("small", "b") // b's old inode is open: an orphan
	w.SyncFS()
	b.Write(50*BlockSize, 100) // into the orphan
	b.Close()                  // to the reaper
	w.SyncFS()
	w.WaitReaped()
	w.SyncFS()
	w.Remove("b")
	w.SyncFS()
}
