package device

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// sysOpen is unix.Open; tests replace it to simulate a filesystem that
// refuses O_DIRECT.
var sysOpen = unix.Open

// iovMax is the most iovecs one preadv/pwritev call accepts (IOV_MAX).
const iovMax = 1024

// File is a Device over an image file or a block device. It is opened with
// O_DIRECT when the host filesystem allows it, so file data is cached only in
// our block cache; otherwise it uses buffered I/O and asks the kernel to drop
// the pages after each transfer.
type File struct {
	// mu is held shared by every operation and exclusively by Close, so the
	// descriptor is never closed (and its number reused) under an in-flight
	// transfer.
	mu     sync.RWMutex
	fd     int
	closed bool
	path   string
	size   int64
	direct bool
}

var _ Device = (*File)(nil)

// OpenFile opens the image file at path.
//
// With create, the file must not exist: it is created sparse with ftruncate
// to size (a positive multiple of BlockSize) and made durable, together with
// its directory entry. Without create, path may be a file or a block device
// of at least size bytes, and the device is its first size bytes; size 0
// means the whole file, rounded down to a multiple of BlockSize. A file
// shorter than size is refused (a truncated image).
//
// The file is opened with O_DIRECT; if the filesystem refuses O_DIRECT
// (EINVAL) it falls back to buffered I/O with posix_fadvise(DONTNEED) after
// each transfer, and DirectIO reports false.
func OpenFile(path string, size int64, create bool) (*File, error) {
	return openFile(path, size, create, true)
}

func openFile(path string, size int64, create, tryDirect bool) (*File, error) {
	fail := func(err error) (*File, error) {
		return nil, &OpError{Op: "open", Device: path, Err: err}
	}
	if size < 0 || size%BlockSize != 0 || (create && size == 0) {
		return fail(fmt.Errorf("size %d: %w", size, ErrUnaligned))
	}
	if create {
		if err := createSparse(path, size); err != nil {
			return fail(err)
		}
	}

	flags := unix.O_RDWR | unix.O_CLOEXEC
	direct := false
	fd := -1
	var err error
	if tryDirect {
		fd, err = sysOpen(path, flags|unix.O_DIRECT, 0)
		direct = err == nil
	}
	if !direct && (!tryDirect || errors.Is(err, unix.EINVAL)) {
		fd, err = sysOpen(path, flags, 0)
	}
	if err != nil {
		return fail(err)
	}
	actual, err := unix.Seek(fd, 0, io.SeekEnd) // works for block devices too
	if err != nil {
		unix.Close(fd)
		return fail(err)
	}
	if size == 0 {
		size = actual &^ (BlockSize - 1)
		if size == 0 {
			unix.Close(fd)
			return fail(fmt.Errorf("file is %d bytes, too small for one block", actual))
		}
	}
	if actual < size {
		unix.Close(fd)
		return fail(fmt.Errorf("file is %d bytes, smaller than the expected %d (truncated image?)", actual, size))
	}
	return &File{fd: fd, path: path, size: size, direct: direct}, nil
}

// createSparse creates path (which must not exist) as a sparse file of size
// bytes and makes the file and its directory entry durable. On failure it
// leaves no file behind.
func createSparse(path string, size int64) (err error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := unix.Ftruncate(fd, size); err != nil {
		return fmt.Errorf("ftruncate to %d bytes: %w", size, err)
	}
	if err := unix.Fsync(fd); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// DirectIO reports whether transfers bypass the host page cache.
func (f *File) DirectIO() bool { return f.direct }

// Path is the file the device was opened from.
func (f *File) Path() string { return f.path }

// Size is the device size in bytes.
func (f *File) Size() int64 { return f.size }

func (f *File) opErr(op string, off, length int64, err error) error {
	return &OpError{Op: op, Device: f.path, Off: off, Len: length, Err: err}
}

// ReadBlocks fills bufs from consecutive bytes at off. Bytes beyond the end
// of the underlying file read as zeros.
func (f *File) ReadBlocks(bufs [][]byte, off int64) error {
	total, err := checkBufs(bufs, off, f.size)
	if err != nil {
		return f.opErr("read", off, total, err)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return f.opErr("read", off, total, ErrClosed)
	}
	if err := f.transfer(false, bufs, off); err != nil {
		return f.opErr("read", off, total, err)
	}
	f.dropCache(off, total)
	return nil
}

// WriteBlocks writes bufs to consecutive bytes at off.
func (f *File) WriteBlocks(bufs [][]byte, off int64) error {
	total, err := checkBufs(bufs, off, f.size)
	if err != nil {
		return f.opErr("write", off, total, err)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return f.opErr("write", off, total, ErrClosed)
	}
	if err := f.transfer(true, bufs, off); err != nil {
		return f.opErr("write", off, total, err)
	}
	f.dropCache(off, total)
	return nil
}

// dropCache asks the kernel not to keep the pages of a buffered transfer:
// the block cache already holds the data. For dirty pages this starts
// write-back; they are dropped once clean. Best effort.
func (f *File) dropCache(off, length int64) {
	if !f.direct && length > 0 {
		_ = unix.Fadvise(f.fd, off, length, unix.FADV_DONTNEED)
	}
}

// transfer moves bufs to or from the file at off, looping over short
// transfers and IOV_MAX-sized batches.
func (f *File) transfer(write bool, bufs [][]byte, off int64) error {
	iov := make([][]byte, 0, len(bufs)) // our own copy: it is trimmed as we go
	for _, b := range bufs {
		if len(b) > 0 {
			iov = append(iov, b)
		}
	}
	for len(iov) > 0 {
		batch := iov[:min(len(iov), iovMax)]
		var n int
		var err error
		if write {
			n, err = unix.Pwritev(f.fd, batch, off)
		} else {
			n, err = unix.Preadv(f.fd, batch, off)
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			if write {
				return io.ErrShortWrite
			}
			zeroAll(iov) // end of file: the sparse remainder reads as zeros
			return nil
		}
		off += int64(n)
		iov = advance(iov, n)
		if len(iov) > 0 && off%BlockSize != 0 {
			// Only the end of a file whose size is not block aligned stops a
			// transfer mid-block; O_DIRECT cannot continue from there.
			if write {
				return io.ErrShortWrite
			}
			zeroAll(iov)
			return nil
		}
	}
	return nil
}

// advance drops the first n bytes from iov.
func advance(iov [][]byte, n int) [][]byte {
	for n > 0 && len(iov) > 0 {
		if n >= len(iov[0]) {
			n -= len(iov[0])
			iov = iov[1:]
		} else {
			iov[0] = iov[0][n:]
			n = 0
		}
	}
	return iov
}

func zeroAll(bufs [][]byte) {
	for _, b := range bufs {
		clear(b)
	}
}

// Flush makes completed writes durable with fdatasync.
func (f *File) Flush() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return f.opErr("flush", 0, 0, ErrClosed)
	}
	for {
		err := unix.Fdatasync(f.fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return f.opErr("flush", 0, 0, err)
		}
		return nil
	}
}

// Punch deallocates [off, off+length) in the host file, keeping its size;
// the range then reads as zeros. Where the filesystem cannot punch holes,
// zeros are written instead.
func (f *File) Punch(off, length int64) error {
	if err := checkRange(off, length, f.size); err != nil {
		return f.opErr("punch", off, length, err)
	}
	if length == 0 {
		return nil
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return f.opErr("punch", off, length, ErrClosed)
	}
	err := unix.Fallocate(f.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = f.writeZeros(off, length)
	}
	if err != nil {
		return f.opErr("punch", off, length, err)
	}
	return nil
}

func (f *File) writeZeros(off, length int64) error {
	zeros := AlignedBuffer(int(min(length, 1<<20)))
	for length > 0 {
		n := min(length, int64(len(zeros)))
		if err := f.transfer(true, [][]byte{zeros[:n]}, off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// Close closes the file. It waits for in-flight operations; later ones fail
// with ErrClosed.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return f.opErr("close", 0, 0, ErrClosed)
	}
	f.closed = true
	if err := unix.Close(f.fd); err != nil {
		return f.opErr("close", 0, 0, err)
	}
	return nil
}
