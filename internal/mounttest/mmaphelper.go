package mounttest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// MmapHelper performs the mmap path's reads and writes in a child process.
//
// They cannot run in the process that serves the mount: a page fault on a
// mapping of the mount waits for this process's FUSE server, and while it
// waits the faulting thread is neither in Go code nor in a system call, so
// the Go runtime cannot stop it. A garbage collection starting meanwhile
// stops every other goroutine (the FUSE server's included) and waits for
// that thread for ever. (Plain system calls are safe: a goroutine in a
// system call does not hold up a collection.)
//
// The child is the running binary started again with HelperEnv set; its
// main (TestMain in tests) must call ServeMmapHelperIfAsked first. It takes
// the descriptor to map from this process with pidfd_getfd, so it maps the
// very open file the target uses and adds no FUSE open or release.
type MmapHelper struct {
	mu  sync.Mutex
	cmd *exec.Cmd
	in  io.WriteCloser
	w   *bufio.Writer
	r   *bufio.Reader
}

// HelperEnv, set to the parent's process id, makes ServeMmapHelperIfAsked
// serve as the helper.
const HelperEnv = "REFLINKFS_MOUNTTEST_MMAP_HELPER"

// Helper protocol: a request is op (1 byte), fd (int32), off (int64), n
// (int64) and, for a write, n bytes. A reply is an errno (int32; 0 = ok,
// -1 = an error without errno, followed by a uint32 length and its text);
// an ok read reply is followed by a length (int64) and the bytes.
const (
	helperRead  = 1
	helperWrite = 2
)

// StartMmapHelper starts the helper process.
func StartMmapHelper() (*MmapHelper, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-test.run=^$") // flags in case exe is a test binary that ignores HelperEnv
	cmd.Env = append(os.Environ(), HelperEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("mounttest: start mmap helper: %w", err)
	}
	return &MmapHelper{cmd: cmd, in: in, w: bufio.NewWriter(in), r: bufio.NewReader(out)}, nil
}

// Close stops the helper.
func (h *MmapHelper) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.in.Close()
	return h.cmd.Wait()
}

func (h *MmapHelper) call(op byte, f *os.File, off int64, n int, data []byte) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var hdr [21]byte
	hdr[0] = op
	binary.NativeEndian.PutUint32(hdr[1:], uint32(int32(f.Fd())))
	binary.NativeEndian.PutUint64(hdr[5:], uint64(off))
	binary.NativeEndian.PutUint64(hdr[13:], uint64(n))
	h.w.Write(hdr[:])
	h.w.Write(data)
	if err := h.w.Flush(); err != nil {
		return nil, fmt.Errorf("mounttest: mmap helper: %w", err)
	}
	defer runtime.KeepAlive(f) // the helper fetches the descriptor meanwhile
	var errno int32
	if err := binary.Read(h.r, binary.NativeEndian, &errno); err != nil {
		return nil, fmt.Errorf("mounttest: mmap helper reply: %w", err)
	}
	switch {
	case errno > 0:
		return nil, &os.PathError{Op: "mmap helper", Path: f.Name(), Err: syscall.Errno(errno)}
	case errno < 0:
		var l uint32
		if err := binary.Read(h.r, binary.NativeEndian, &l); err != nil {
			return nil, fmt.Errorf("mounttest: mmap helper reply: %w", err)
		}
		msg := make([]byte, l)
		if _, err := io.ReadFull(h.r, msg); err != nil {
			return nil, fmt.Errorf("mounttest: mmap helper reply: %w", err)
		}
		return nil, fmt.Errorf("mmap helper on %s: %s", f.Name(), msg)
	}
	if op != helperRead {
		return nil, nil
	}
	var l int64
	if err := binary.Read(h.r, binary.NativeEndian, &l); err != nil {
		return nil, fmt.Errorf("mounttest: mmap helper reply: %w", err)
	}
	buf := make([]byte, l)
	if _, err := io.ReadFull(h.r, buf); err != nil {
		return nil, fmt.Errorf("mounttest: mmap helper reply: %w", err)
	}
	return buf, nil
}

// Read reads [off, off+n) of f, clipped to its size, through a MAP_SHARED
// mapping made in the helper (off >= 0).
func (h *MmapHelper) Read(f *os.File, off int64, n int) ([]byte, error) {
	return h.call(helperRead, f, off, n, nil)
}

// Write writes data at off of f (inside its size) through a MAP_SHARED
// mapping made in the helper, msync(MS_SYNC) and munmap.
func (h *MmapHelper) Write(f *os.File, off int64, data []byte) error {
	_, err := h.call(helperWrite, f, off, len(data), data)
	return err
}

// ServeMmapHelperIfAsked serves as the mmap helper and exits if this process
// was started as one (HelperEnv is set); otherwise it returns at once.
func ServeMmapHelperIfAsked() {
	ppid := os.Getenv(HelperEnv)
	if ppid == "" {
		return
	}
	pid, err := strconv.Atoi(ppid)
	if err == nil {
		err = serveHelper(pid, bufio.NewReader(os.Stdin), os.Stdout)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(os.Stderr, "mounttest: mmap helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func serveHelper(parent int, r *bufio.Reader, out io.Writer) error {
	pidfd, err := unix.PidfdOpen(parent, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", parent, err)
	}
	w := bufio.NewWriter(out)
	var hdr [21]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		op := hdr[0]
		fd := int(int32(binary.NativeEndian.Uint32(hdr[1:])))
		off := int64(binary.NativeEndian.Uint64(hdr[5:]))
		n := int64(binary.NativeEndian.Uint64(hdr[13:]))
		var data []byte
		if op == helperWrite {
			data = make([]byte, n)
			if _, err := io.ReadFull(r, data); err != nil {
				return err
			}
		}
		var got []byte
		local, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err == nil {
			switch op {
			case helperRead:
				got, err = mmapRead(local, off, int(n))
			case helperWrite:
				err = mmapWrite(local, off, data)
			default:
				err = fmt.Errorf("unknown op %d", op)
			}
			unix.Close(local)
		}
		var errno syscall.Errno
		switch {
		case err == nil:
			binary.Write(w, binary.NativeEndian, int32(0))
			if op == helperRead {
				binary.Write(w, binary.NativeEndian, int64(len(got)))
				w.Write(got)
			}
		case errors.As(err, &errno):
			binary.Write(w, binary.NativeEndian, int32(errno))
		default:
			msg := err.Error()
			binary.Write(w, binary.NativeEndian, int32(-1))
			binary.Write(w, binary.NativeEndian, uint32(len(msg)))
			w.WriteString(msg)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}
