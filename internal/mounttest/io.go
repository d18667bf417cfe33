package mounttest

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"

	"golang.org/x/sys/unix"
)

// ioPath is the way a read or write reaches the kernel.
type ioPath int

const (
	pathPlain  ioPath = iota // pread/pwrite on the O_RDWR descriptor
	pathDirect               // pread/pwrite on an O_DIRECT descriptor
	pathMmap                 // a MAP_SHARED mapping of the range
	// pathFresh (reads only): the file's descriptors are closed and it is
	// opened read-only for the read, which the mount may pass through to a
	// shared backing file (FUSE passthrough); writes take pathPlain.
	pathFresh
	numPaths
)

// choosePath picks the path of a data operation from its arguments only, so
// a sequence (and every shrunk variant of it) takes the same paths each run.
func choosePath(name string, off int64, n int) ioPath {
	h := uint64(off)*0x9e3779b97f4a7c15 + uint64(n)*0xc2b2ae3d27d4eb4f + uint64(name[len(name)-1])
	h ^= h >> 31
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 29
	return ioPath(h % uint64(numPaths))
}

func fileSize(f *os.File) (int64, error) {
	var st unix.Stat_t
	if err := withFd(f, func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		return 0, &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	return st.Size, nil
}

// pwriteAll writes all of data at off, continuing after short writes. An
// empty write is still issued (the kernel checks the offset).
func pwriteAll(f *os.File, data []byte, off int64) error {
	return withFd(f, func(fd int) error {
		done := 0
		for {
			n, err := unix.Pwrite(fd, data[done:], off+int64(done))
			if err != nil {
				return &os.PathError{Op: "pwrite", Path: f.Name(), Err: err}
			}
			done += n
			if done == len(data) {
				return nil
			}
			if n == 0 {
				return fmt.Errorf("pwrite %s: %d of %d bytes: %w", f.Name(), done, len(data), io.ErrShortWrite)
			}
		}
	})
}

// preadFull reads n bytes at off, fewer only at end of file.
func preadFull(f *os.File, off int64, n int) ([]byte, error) {
	buf := make([]byte, n)
	done := 0
	err := withFd(f, func(fd int) error {
		for {
			got, err := unix.Pread(fd, buf[done:], off+int64(done))
			if err != nil {
				return &os.PathError{Op: "pread", Path: f.Name(), Err: err}
			}
			done += got
			if got == 0 || done == n {
				return nil
			}
		}
	})
	return buf[:done], err
}

var pageSize = int64(os.Getpagesize())

// mapRange maps [off, end) of fd (off >= 0, end > off), from the page
// containing off; it returns the mapping and the slice of it at off.
func mapRange(fd int, off, end int64, prot int) (mapping, at []byte, err error) {
	pgOff := off / pageSize * pageSize
	mapping, err = unix.Mmap(fd, pgOff, int(end-pgOff), prot, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, &os.PathError{Op: "mmap", Path: "fd " + strconv.Itoa(fd), Err: err}
	}
	return mapping, mapping[off-pgOff:], nil
}

// faultSafeCopy copies src to dst, turning a fault on a mapping (SIGBUS past
// the kernel's idea of EOF, an I/O error paging in) into an error.
func faultSafeCopy(dst, src []byte) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("mounttest: fault accessing a mapping: %v", p)
		}
	}()
	copy(dst, src)
	return nil
}

// mmapRead reads [off, off+n) of fd clipped to the size fstat reports,
// through a shared mapping. It must not run in the process serving the
// mount (see MmapHelper).
func mmapRead(fd int, off int64, n int) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: "fd " + strconv.Itoa(fd), Err: err}
	}
	end := min(off+int64(n), st.Size)
	if off >= end {
		return []byte{}, nil
	}
	mapping, at, err := mapRange(fd, off, end, unix.PROT_READ)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, end-off)
	err = faultSafeCopy(buf, at)
	if uerr := unix.Munmap(mapping); uerr != nil && err == nil {
		err = &os.PathError{Op: "munmap", Path: "fd " + strconv.Itoa(fd), Err: uerr}
	}
	return buf, err
}

// mmapWrite writes data at off of fd, which must lie inside the file,
// through a shared mapping, and writes the dirty pages back (msync
// MS_SYNC) before unmapping. It must not run in the process serving the
// mount (see MmapHelper).
func mmapWrite(fd int, off int64, data []byte) error {
	end := off + int64(len(data))
	mapping, at, err := mapRange(fd, off, end, unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		return err
	}
	err = faultSafeCopy(at, data)
	if err == nil {
		if serr := unix.Msync(mapping, unix.MS_SYNC); serr != nil {
			err = &os.PathError{Op: "msync", Path: "fd " + strconv.Itoa(fd), Err: serr}
		}
	}
	if uerr := unix.Munmap(mapping); uerr != nil && err == nil {
		err = &os.PathError{Op: "munmap", Path: "fd " + strconv.Itoa(fd), Err: uerr}
	}
	return err
}
