package device

import (
	"errors"
	"fmt"
	"unsafe"
)

// BlockSize is the unit of every offset, length and buffer address the
// device accepts: O_DIRECT needs logical-block alignment, and 4096 covers
// every disk we expect.
const BlockSize = 4096

var (
	// ErrUnaligned: an offset, length or buffer address is not a multiple of BlockSize.
	ErrUnaligned = errors.New("not aligned to 4096 bytes")
	// ErrOutOfRange: the range does not lie within [0, Size()).
	ErrOutOfRange = errors.New("range outside the device")
	// ErrClosed: the device has been closed.
	ErrClosed = errors.New("device closed")
)

// OpError describes a failed device operation. Err is one of the sentinel
// errors above or the error from the system call.
type OpError struct {
	Op     string // "read", "write", "punch", "flush", "open", "close"
	Device string // file path, or "memory"
	Off    int64
	Len    int64
	Err    error
}

func (e *OpError) Error() string {
	switch e.Op {
	case "flush", "open", "close":
		return fmt.Sprintf("device %s %s: %v", e.Op, e.Device, e.Err)
	}
	return fmt.Sprintf("device %s %s at offset %d (+%d bytes): %v", e.Op, e.Device, e.Off, e.Len, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// AlignedBuffer returns a zeroed buffer of n bytes rounded up to a multiple
// of BlockSize whose first byte is BlockSize-aligned in memory.
func AlignedBuffer(n int) []byte {
	if n <= 0 {
		return []byte{}
	}
	n = (n + BlockSize - 1) &^ (BlockSize - 1)
	raw := make([]byte, n+BlockSize)
	skip := int(-uintptr(unsafe.Pointer(&raw[0])) & (BlockSize - 1))
	return raw[skip : skip+n : skip+n]
}

// checkRange validates an operation on [off, off+length) of a device of the
// given size.
func checkRange(off, length, size int64) error {
	if off%BlockSize != 0 || length%BlockSize != 0 {
		return ErrUnaligned
	}
	if off < 0 || length < 0 || off > size || length > size-off {
		return ErrOutOfRange
	}
	return nil
}

// checkBufs validates a vectored transfer and returns its total length.
func checkBufs(bufs [][]byte, off, size int64) (int64, error) {
	var total int64
	for _, b := range bufs {
		total += int64(len(b))
	}
	for _, b := range bufs {
		if len(b)%BlockSize != 0 {
			return total, fmt.Errorf("buffer length %d: %w", len(b), ErrUnaligned)
		}
		if len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))%BlockSize != 0 {
			return total, fmt.Errorf("buffer address %p: %w", &b[0], ErrUnaligned)
		}
	}
	return total, checkRange(off, total, size)
}
