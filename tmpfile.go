package reflinkfs

import (
	"errors"
	"syscall"

	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// TmpfileAt creates an unnamed regular file, as open(2) with O_TMPFILE in
// directory parent, and opens it with flag (O_WRONLY or O_RDWR, optional
// O_APPEND). The file has no links: it is an orphan from the start, so it
// is freed when closed, or at the next open after a crash. Unless flag has
// O_EXCL, LinkAt may give it a name once (linkat(2) of an O_TMPFILE file).
func (fsys *FS) TmpfileAt(parent uint64, mode uint32, o Owner, flag int) (*File, Attr, error) {
	if flag&syscall.O_ACCMODE == syscall.O_RDONLY {
		return nil, Attr{}, pathErr("tmpfile", inoName(parent), syscall.EINVAL)
	}
	var f *File
	var a Attr
	err := fsys.withMeta(func(op *opState) error {
		dir, err := fsys.getDir(parent)
		if err != nil {
			return err
		}
		defer fsys.putInode(dir)
		if dir.rec.Nlink == 0 {
			return syscall.ENOENT // directory was removed
		}
		if err := checkEntries(dir, false); err != nil {
			return err
		}
		in := fsys.allocInode(syscall.S_IFREG|mode&07777, 0, o, 0)
		in.linkable = flag&syscall.O_EXCL == 0
		in.opens++ // the reference allocInode took is the open's
		k := meta.OrphanKey(in.ino)
		if err := errors.Join(fsys.saveInode(in), fsys.txn.Set(k, meta.EncodeBytes(k, nil))); err != nil {
			return err
		}
		f = &File{fsys: fsys, in: in, name: inoName(in.ino), flag: flag &^ (syscall.O_EXCL | syscall.O_CREAT | syscall.O_TRUNC)}
		a = fsys.attrOf(in)
		return nil
	})
	return f, a, pathErr("tmpfile", inoName(parent), err)
}
