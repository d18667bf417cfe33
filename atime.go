package reflinkfs

import (
	"syscall"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// Access times. A read changes only the in-memory inode and queues it; the
// next commit writes the record. So reads never write to the transaction
// themselves, and a crash loses at most the atimes of the last commit
// interval (atime is outside the fsync guarantee, as on Linux with lazytime).

// relatimeDay is relatime's limit: an atime older than this is updated.
const relatimeDay = int64(24 * time.Hour)

// accessed records a read of in under the atime policy. Called with fs.mu
// held.
func (fsys *FS) accessed(in *inode) {
	if fsys.opt.ReadOnly || fsys.opt.Atime == AtimeNever {
		return
	}
	now := time.Now().UnixNano()
	if fsys.opt.Atime == AtimeRelative && !relatimeDue(&in.rec, now) {
		return
	}
	in.rec.Atime = now
	if !in.atimeDirty {
		in.atimeDirty = true
		fsys.atimeDirty = append(fsys.atimeDirty, in)
	}
}

// relatimeDue is Linux's relatime rule: update atime if it is not after
// mtime or ctime, or is a day old.
func relatimeDue(r *meta.Inode, now int64) bool {
	return r.Atime <= r.Mtime || r.Atime <= r.Ctime || now-r.Atime >= relatimeDay
}

// saveAccessTimes writes the inodes whose atime reads changed into the
// running transaction. Called by commit with fs.mu held.
func (fsys *FS) saveAccessTimes() error {
	for len(fsys.atimeDirty) > 0 {
		in := fsys.atimeDirty[0]
		if fsys.inodes[in.ino] == in { // else freed since: nothing to write
			if err := fsys.saveInode(in); err != nil {
				return err
			}
		}
		in.atimeDirty = false
		fsys.atimeDirty = fsys.atimeDirty[1:]
	}
	fsys.atimeDirty = nil
	return nil
}

// Accessed records a read of f's data that did not go through ReadAt or
// ReadView, under the atime policy (none if f was opened with O_NOATIME). A
// FUSE server whose kernel reads the file from elsewhere (passthrough)
// calls it once per open: those reads never reach the engine.
func (f *File) Accessed() {
	if f.checkOpen() != nil || f.flag&syscall.O_NOATIME != 0 {
		return
	}
	f.fsys.readMeta(func() error {
		f.fsys.accessed(f.in)
		return nil
	})
}
