package device

import "sync"

// memoryName is how errors from a Memory device name it.
const memoryName = "memory"

// Memory is an in-memory Device for tests. It is sparse: only blocks that
// were written take memory, so a large device costs little. It enforces the
// same alignment and bounds rules as File.
type Memory struct {
	mu     sync.RWMutex
	size   int64
	blocks map[int64]*[BlockSize]byte // by block number; absent = zeros
	closed bool
}

var _ Device = (*Memory)(nil)

// NewMemory returns a zero-filled device of size bytes, rounded down to a
// multiple of BlockSize.
func NewMemory(size int64) *Memory {
	return &Memory{size: max(size, 0) &^ (BlockSize - 1), blocks: make(map[int64]*[BlockSize]byte)}
}

func (m *Memory) opErr(op string, off, length int64, err error) error {
	return &OpError{Op: op, Device: memoryName, Off: off, Len: length, Err: err}
}

// Size is the device size in bytes.
func (m *Memory) Size() int64 { return m.size }

// ReadBlocks fills bufs from consecutive bytes at off.
func (m *Memory) ReadBlocks(bufs [][]byte, off int64) error {
	total, err := checkBufs(bufs, off, m.size)
	if err != nil {
		return m.opErr("read", off, total, err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return m.opErr("read", off, total, ErrClosed)
	}
	bn := off / BlockSize
	for _, b := range bufs {
		for i := 0; i < len(b); i += BlockSize {
			if blk := m.blocks[bn]; blk != nil {
				copy(b[i:i+BlockSize], blk[:])
			} else {
				clear(b[i : i+BlockSize])
			}
			bn++
		}
	}
	return nil
}

// WriteBlocks writes bufs to consecutive bytes at off.
func (m *Memory) WriteBlocks(bufs [][]byte, off int64) error {
	total, err := checkBufs(bufs, off, m.size)
	if err != nil {
		return m.opErr("write", off, total, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return m.opErr("write", off, total, ErrClosed)
	}
	m.write(bufs, off)
	return nil
}

// write stores bufs at off; the caller holds mu and has validated the range.
func (m *Memory) write(bufs [][]byte, off int64) {
	bn := off / BlockSize
	for _, b := range bufs {
		for i := 0; i < len(b); i += BlockSize {
			blk := m.blocks[bn]
			if blk == nil {
				blk = new([BlockSize]byte)
				m.blocks[bn] = blk
			}
			copy(blk[:], b[i:i+BlockSize])
			bn++
		}
	}
}

// Flush does nothing: memory has no volatile cache. Crash behaviour is
// modelled by Recorder.
func (m *Memory) Flush() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return m.opErr("flush", 0, 0, ErrClosed)
	}
	return nil
}

// Punch zeroes [off, off+length) and releases its memory.
func (m *Memory) Punch(off, length int64) error {
	if err := checkRange(off, length, m.size); err != nil {
		return m.opErr("punch", off, length, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return m.opErr("punch", off, length, ErrClosed)
	}
	m.punch(off, length)
	return nil
}

// punch drops the blocks of a validated range; the caller holds mu.
func (m *Memory) punch(off, length int64) {
	first, end := off/BlockSize, (off+length)/BlockSize
	if end-first > int64(len(m.blocks)) {
		for bn := range m.blocks {
			if bn >= first && bn < end {
				delete(m.blocks, bn)
			}
		}
		return
	}
	for bn := first; bn < end; bn++ {
		delete(m.blocks, bn)
	}
}

// Close marks the device closed; Bytes and Clone still work afterwards.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return m.opErr("close", 0, 0, ErrClosed)
	}
	m.closed = true
	return nil
}

// Bytes returns a copy of the whole device contents.
func (m *Memory) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]byte, m.size)
	for bn, blk := range m.blocks {
		copy(out[bn*BlockSize:], blk[:])
	}
	return out
}

// Clone returns an open device with a copy of m's contents.
func (m *Memory) Clone() *Memory {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c := NewMemory(m.size)
	for bn, blk := range m.blocks {
		cp := *blk
		c.blocks[bn] = &cp
	}
	return c
}
