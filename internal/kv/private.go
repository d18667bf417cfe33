package kv

import (
	"io"
	"os"

	"github.com/cockroachdb/pebble/vfs"
	"golang.org/x/sys/unix"
)

// The metadata store holds every name, symlink target and xattr value of
// the file system in the clear, so it is for its owner only: pebble's
// default filesystem creates files 0666 and directories 0755 less the
// umask, and a process-wide umask would change every other file the
// process makes. privateFS creates directories 0700 and gives each file
// it creates mode 0600 at once (before anything is written to it; the
// 0700 directory already keeps others out of the moment between).

const (
	privateDirMode  = 0o700
	privateFileMode = 0o600
)

// privateFS is vfs.FS with owner-only modes for what it creates.
type privateFS struct{ vfs.FS }

func (p privateFS) Create(name string) (vfs.File, error) {
	return private(p.FS.Create(name))
}

func (p privateFS) OpenReadWrite(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	return private(p.FS.OpenReadWrite(name, opts...))
}

func (p privateFS) ReuseForWrite(oldname, newname string) (vfs.File, error) {
	return private(p.FS.ReuseForWrite(oldname, newname))
}

func (p privateFS) MkdirAll(dir string, _ os.FileMode) error {
	return p.FS.MkdirAll(dir, privateDirMode)
}

func (p privateFS) Lock(name string) (io.Closer, error) {
	l, err := p.FS.Lock(name)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(name, privateFileMode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// private sets mode 0600 on a file just opened for writing.
func private(f vfs.File, err error) (vfs.File, error) {
	if err != nil || f.Fd() == vfs.InvalidFd {
		return f, err
	}
	if err := unix.Fchmod(int(f.Fd()), privateFileMode); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
