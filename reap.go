package reflinkfs

// Background freeing of deleted files ("reaping").
//
// Freeing a file releases each of its extents: a reference count update, a
// record delete and a cache invalidation per extent, about 10 µs each, so
// deleting a fragmented 1 GiB image (262k extents) took seconds inside
// unlink(2). Like XFS's background inode inactivation, a file with more than
// reapThreshold extents is freed in the background instead: the last unlink
// (or the last close of an unlinked file) only records the inode as an
// orphan, in the same transaction, and hands it to the reaper.
//
// The reaper frees the inode's extents from the end, reapChunk (256) extents per
// operation, each operation like any other mutation (file lock, commit gate
// shared), so commits and other writers interleave and every intermediate
// state is an orphan whose extents are a prefix of the file: consistent, and
// what fsck accepts. The last chunk frees the inode itself. The orphan record
// is durable with the unlink, so a crash or Close in the middle leaves work
// that the next read-write open resumes (processOrphans hands large orphans
// back to the reaper, small ones are freed on the spot).
//
// The reaper runs on a thread of its own at the lowest CPU priority and
// yields between operations. On a 2-CPU machine a reply can still wait a
// few milliseconds when a garbage collection cycle (which takes one of the
// two Go Ps) coincides with reaping.
//
// Until the reaper is done the blocks are not free: Stats.FreeBytes grows as
// it proceeds and Stats.ReapingFiles counts the files still to free.
// WaitReaped waits for it (the benchmark's "unlink + sync" uses it, as XFS's
// figure waits for inactivation); a write that finds no space waits for it
// too before failing with ENOSPC.

import (
	"errors"
	"runtime"
	"sync"
	"syscall"

	"github.com/reflinkfs/reflinkfs/internal/meta"
	"github.com/reflinkfs/reflinkfs/internal/tuning"
	"golang.org/x/sys/unix"
)

// reapThreshold: files with more extents are freed in the background.
// reapChunk: extents one reaping operation frees, few enough that a commit
// waiting for the gate waits only milliseconds. Tests lower both.
func reapThreshold() int { return tuning.ReapThreshold }
func reapChunk() int     { return tuning.ReapChunk }

type reaper struct {
	mu      sync.Mutex
	cond    sync.Cond // signalled when queue, busy or stopped change
	queue   []uint64  // orphan inodes to free, in order
	busy    bool      // an inode is being freed
	stopped bool
	held    bool          // tests: take no new inode while set
	done    chan struct{} // closed when the goroutine exits
}

// startReaper starts the reaper goroutine (read-write images only).
func (fsys *FS) startReaper() {
	r := &reaper{done: make(chan struct{})}
	r.cond.L = &r.mu
	fsys.reap = r
	go fsys.reapLoop(r)
}

// stopReaper stops the reaper after the operation in progress; the inodes
// not yet freed stay orphans, freed at the next open.
func (fsys *FS) stopReaper() {
	r := fsys.reap
	if r == nil {
		return
	}
	r.mu.Lock()
	r.stopped = true
	r.cond.Broadcast()
	r.mu.Unlock()
	<-r.done
}

// enqueueReap hands orphan ino to the reaper.
func (r *reaper) enqueue(ino uint64) {
	r.mu.Lock()
	r.queue = append(r.queue, ino)
	r.cond.Broadcast()
	r.mu.Unlock()
}

// WaitReaped waits until every deleted file handed to the background reaper
// so far has been freed (its blocks are then free in the running
// transaction; Sync makes that durable).
func (fsys *FS) WaitReaped() {
	r := fsys.reap
	if r == nil {
		return
	}
	r.mu.Lock()
	for (len(r.queue) > 0 || r.busy) && !r.stopped {
		r.cond.Wait()
	}
	r.mu.Unlock()
}

// reaping counts the files queued for the reaper or being freed by it.
func (fsys *FS) reaping() int64 {
	r := fsys.reap
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := int64(len(r.queue))
	if r.busy {
		n++
	}
	return n
}

func (fsys *FS) reapLoop(r *reaper) {
	defer close(r.done)
	// Background work runs on a thread of its own at the lowest CPU
	// priority: on a small machine a CPU-bound reaper otherwise delays the
	// replies of foreground requests (measured: the unlink that queued a
	// file returned 10-16 ms late in a third of the runs on 2 vCPUs).
	runtime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
	for {
		r.mu.Lock()
		for (len(r.queue) == 0 || r.held) && !r.stopped {
			r.cond.Wait()
		}
		if r.stopped {
			r.mu.Unlock()
			return
		}
		ino := r.queue[0]
		r.queue = r.queue[1:]
		r.busy = true
		r.mu.Unlock()

		for {
			r.mu.Lock()
			stop := r.stopped
			r.mu.Unlock()
			if stop {
				break
			}
			finished, err := fsys.reapChunkOf(ino)
			if err != nil {
				// Left as an orphan: the next open tries again.
				fsys.log.Error("freeing a deleted file in the background failed", "inode", ino, "err", err)
				break
			}
			fsys.maybeCommit()
			if finished {
				break
			}
			runtime.Gosched() // background work: let foreground goroutines run

		}
		r.mu.Lock()
		r.busy = false
		r.cond.Broadcast()
		r.mu.Unlock()
	}
}

// reapChunkOf frees up to reapChunk extents of orphan ino from its end, or
// the whole inode once few are left, and reports whether the inode is gone
// (or no longer the reaper's: opened again through a handle, its last close
// frees it).
func (fsys *FS) reapChunkOf(ino uint64) (finished bool, err error) {
	fsys.mu.Lock()
	in, err := fsys.getInode(ino)
	fsys.mu.Unlock()
	if errors.Is(err, syscall.ENOENT) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	in.lock.Lock()
	defer in.lock.Unlock()
	fsys.gate.RLock()
	defer fsys.gate.RUnlock()
	op := &opState{}
	defer fsys.finish(op)
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	defer fsys.putInode(in)
	if fsys.closed {
		return true, nil
	}
	if in.rec.Nlink > 0 || in.opens > 0 {
		return true, nil
	}
	t, err := fsys.extents(in)
	if err != nil {
		return false, err
	}
	if t.Len() <= reapChunk() {
		return true, fsys.freeInode(op, in)
	}
	// The first block of the reapChunk-th extent from the end.
	var from uint64
	n := 0
	t.Descend(func(m mapping) bool {
		from = m.lblk
		n++
		return n < reapChunk()
	})
	removed, err := fsys.unmapRange(in, from, ^uint64(0))
	if err != nil {
		return false, err
	}
	if err := fsys.release(op, removed); err != nil {
		return false, err
	}
	return false, fsys.saveInode(in)
}

// freeOrReap frees an unlinked inode nobody has open: now, or, when it has
// many extents, by recording it as an orphan for the reaper. Called with
// fs.mu held, inside an operation.
func (fsys *FS) freeOrReap(op *opState, in *inode) error {
	if fsys.reap != nil && isReg(in.rec.Mode) {
		t, err := fsys.extents(in)
		if err != nil {
			return err
		}
		if t.Len() > reapThreshold() {
			k := meta.OrphanKey(in.ino)
			if err := errors.Join(fsys.saveInode(in), fsys.txn.Set(k, meta.EncodeBytes(k, nil))); err != nil {
				return err
			}
			fsys.reap.enqueue(in.ino)
			return nil
		}
	}
	return fsys.freeInode(op, in)
}
