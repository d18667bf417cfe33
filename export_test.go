package reflinkfs

import "github.com/reflinkfs/reflinkfs/internal/tuning"

// Abandon simulates a crash of the process: it releases the image without
// committing the running transaction.
func (fsys *FS) Abandon() {
	if fsys.stopCommit != nil {
		close(fsys.stopCommit)
		<-fsys.commitDone
		fsys.stopCommit = nil
	}
	fsys.stopPrefetch()
	fsys.stopReaper()
	fsys.mu.Lock()
	fsys.closed = true
	fsys.mu.Unlock()
	fsys.closeResources()
}

// HoldReaper keeps the reaper from starting on queued files until the
// returned function is called.
func (fsys *FS) HoldReaper() (release func()) {
	r := fsys.reap
	r.mu.Lock()
	r.held = true
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		r.held = false
		r.cond.Broadcast()
		r.mu.Unlock()
	}
}

// SetReapLimits sets how many extents make a deleted file go to the
// background reaper and how many it frees per operation; the returned
// function restores the defaults.
func SetReapLimits(threshold, chunk int) (restore func()) {
	return tuning.SetReap(threshold, chunk)
}

// TxnEmpty reports whether the running transaction holds no change.
func (fsys *FS) TxnEmpty() bool {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return fsys.txn.Empty()
}
