// Package device is the data device: a flat array of blocks addressed by byte
// offset. The default is a sparse image file opened with O_DIRECT so that the
// host page cache does not keep a second copy of data our cache already holds.
//
// Implementations: File (image file or block device), Memory (sparse, in
// memory, for tests) and Recorder (a Memory that logs writes, punches and
// flushes so crash tests can rebuild any post-power-cut image). All of them
// reject unaligned or out-of-range arguments with an *OpError wrapping
// ErrUnaligned or ErrOutOfRange instead of panicking.
package device

// Device is a data device. Offsets and buffer lengths passed to it are
// multiples of 4096 and buffers come from AlignedBuffer or the block cache's
// arena (4096-byte aligned), as O_DIRECT requires. Implementations are safe for
// concurrent use on disjoint ranges.
type Device interface {
	// ReadBlocks fills bufs, in order, from consecutive bytes starting at off.
	ReadBlocks(bufs [][]byte, off int64) error
	// WriteBlocks writes bufs, in order, to consecutive bytes starting at off.
	WriteBlocks(bufs [][]byte, off int64) error
	// Flush makes every completed write durable (fdatasync).
	Flush() error
	// Punch releases the host space of [off, off+length); it then reads as zeros.
	Punch(off, length int64) error
	// Size is the device size in bytes.
	Size() int64
	Close() error
}
