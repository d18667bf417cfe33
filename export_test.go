package reflinkfs

// Abandon simulates a crash of the process: it releases the image without
// committing the running transaction.
func (fsys *FS) Abandon() {
	if fsys.stopCommit != nil {
		close(fsys.stopCommit)
		<-fsys.commitDone
		fsys.stopCommit = nil
	}
	fsys.stopPrefetch()
	fsys.mu.Lock()
	fsys.closed = true
	fsys.mu.Unlock()
	fsys.closeResources()
}
