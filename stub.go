package reflinkfs

// This file holds the API surface not yet implemented; each function moves to
// its real home as it is written.

import (
	"io/fs"
	"syscall"
)

var errTODO = syscall.ENOSYS

// FS is an open reflinkfs image.
type FS struct{}

// File is an open file of an FS. It is safe for concurrent use.
type File struct{}

func Create(dir string, opt Options) (*FS, error) { return nil, errTODO }
func Open(dir string, opt Options) (*FS, error)   { return nil, errTODO }
func (*FS) Close() error                          { return errTODO }
func (*FS) Sync() error                           { return errTODO }
func (*FS) Stats() Stats                          { return Stats{} }

// Path API.
func (*FS) OpenFile(name string, flag int, perm fs.FileMode) (*File, error) { return nil, errTODO }
func (*FS) Mkdir(name string, perm fs.FileMode) error                       { return errTODO }
func (*FS) Remove(name string) error                                        { return errTODO }
func (*FS) Rename(oldname, newname string) error                            { return errTODO }
func (*FS) Stat(name string) (fs.FileInfo, error)                           { return nil, errTODO }
func (*FS) Clone(src, dst string) error                                     { return errTODO }
func (*FS) Symlink(target, name string) error                               { return errTODO }
func (*FS) Link(oldname, newname string) error                              { return errTODO }
func (*FS) Readlink(name string) (string, error)                            { return "", errTODO }
func (*FS) ReadDir(name string) ([]fs.DirEntry, error)                      { return nil, errTODO }

// Inode API.
func (*FS) Lookup(parent uint64, name string) (Attr, error)  { return Attr{}, errTODO }
func (*FS) GetAttr(ino uint64) (Attr, error)                 { return Attr{}, errTODO }
func (*FS) SetAttrIno(ino uint64, set SetAttr) (Attr, error) { return Attr{}, errTODO }
func (*FS) Mknod(parent uint64, name string, mode, rdev uint32, o Owner) (Attr, error) {
	return Attr{}, errTODO
}
func (*FS) MkdirAt(parent uint64, name string, mode uint32, o Owner) (Attr, error) {
	return Attr{}, errTODO
}
func (*FS) SymlinkAt(parent uint64, name, target string, o Owner) (Attr, error) {
	return Attr{}, errTODO
}
func (*FS) ReadlinkIno(ino uint64) (string, error)                     { return "", errTODO }
func (*FS) LinkAt(ino, newParent uint64, newName string) (Attr, error) { return Attr{}, errTODO }
func (*FS) Unlink(parent uint64, name string) error                    { return errTODO }
func (*FS) Rmdir(parent uint64, name string) error                     { return errTODO }
func (*FS) RenameAt(oldParent uint64, oldName string, newParent uint64, newName string, flags int) error {
	return errTODO
}
func (*FS) ReadDirIno(ino uint64) ([]DirEntry, error)   { return nil, errTODO }
func (*FS) OpenIno(ino uint64, flag int) (*File, error) { return nil, errTODO }
func (*FS) CreateAt(parent uint64, name string, mode uint32, o Owner, flag int) (*File, Attr, error) {
	return nil, Attr{}, errTODO
}
func (*FS) GetXattr(ino uint64, name string) ([]byte, error)                { return nil, errTODO }
func (*FS) SetXattr(ino uint64, name string, value []byte, flags int) error { return errTODO }
func (*FS) ListXattr(ino uint64) ([]string, error)                          { return nil, errTODO }
func (*FS) RemoveXattr(ino uint64, name string) error                       { return errTODO }

// File methods.
func (*File) Ino() uint64                                                        { return 0 }
func (*File) Name() string                                                       { return "" }
func (*File) ReadAt(p []byte, off int64) (int, error)                            { return 0, errTODO }
func (*File) WriteAt(p []byte, off int64) (int, error)                           { return 0, errTODO }
func (*File) Truncate(size int64) error                                          { return errTODO }
func (*File) Sync() error                                                        { return errTODO }
func (*File) Close() error                                                       { return errTODO }
func (*File) Stat() (fs.FileInfo, error)                                         { return nil, errTODO }
func (*File) CloneRange(src *File, srcOff, length, dstOff int64) error           { return errTODO }
func (*File) DedupeRange(src *File, srcOff, length, dstOff int64) (int64, error) { return 0, errTODO }
func (*File) CopyRange(src *File, srcOff, length, dstOff int64) (int64, error)   { return 0, errTODO }
func (*File) PunchHole(off, length int64) error                                  { return errTODO }
func (*File) ZeroRange(off, length int64) error                                  { return errTODO }
func (*File) UnshareRange(off, length int64) error                               { return errTODO }
func (*File) Allocate(off, length int64, keepSize bool) error                    { return errTODO }
func (*File) Fiemap() ([]Extent, error)                                          { return nil, errTODO }
func (*File) SeekData(off int64) (int64, error)                                  { return 0, errTODO }
func (*File) SeekHole(off int64) (int64, error)                                  { return 0, errTODO }

// Fsck checks every invariant of the image (reference counts against extent
// maps, free space, directory tree, link counts); with repair it fixes what can
// be fixed safely. The FS must be quiescent (no concurrent writers).
func (*FS) Fsck(repair bool) (*FsckReport, error) { return nil, errTODO }
