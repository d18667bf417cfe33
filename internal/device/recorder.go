package device

import (
	"fmt"
	"sync"
)

// OpKind is the kind of a recorded device operation.
type OpKind int

const (
	OpWrite OpKind = iota + 1
	OpPunch
	OpFlush
)

func (k OpKind) String() string {
	switch k {
	case OpWrite:
		return "write"
	case OpPunch:
		return "punch"
	case OpFlush:
		return "flush"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Op is one recorded operation. For OpWrite, Data holds a copy of what was
// written (shared by every copy of the log: do not modify it) and Length is
// len(Data); for OpPunch, Off and Length give the range; OpFlush has neither.
type Op struct {
	Kind   OpKind
	Off    int64
	Data   []byte
	Length int64
}

// Recorder is a fault-injecting Device for crash tests. It behaves like a
// Memory device and logs every successful WriteBlocks, Punch and Flush in
// the order they took effect; Image rebuilds what the device could hold after
// a power cut at any point of that log.
type Recorder struct {
	mu      sync.Mutex // orders the log with the changes to cur
	initial *Memory    // contents before the first op; never modified
	cur     *Memory
	ops     []Op
}

var _ Device = (*Recorder)(nil)

// NewRecorder returns a recording device of size bytes that starts as zeros.
func NewRecorder(size int64) *Recorder {
	return NewRecorderFrom(NewMemory(size))
}

// NewRecorderFrom returns a recording device that starts with a copy of
// initial's contents, such as an Image from an earlier crash, so a test can
// crash a recovered device again.
func NewRecorderFrom(initial *Memory) *Recorder {
	return &Recorder{initial: initial.Clone(), cur: initial.Clone()}
}

// Size is the device size in bytes.
func (r *Recorder) Size() int64 { return r.cur.Size() }

// ReadBlocks reads the current (not crashed) contents.
func (r *Recorder) ReadBlocks(bufs [][]byte, off int64) error {
	return r.cur.ReadBlocks(bufs, off)
}

// WriteBlocks writes and records a copy of the data. Rejected writes are not
// recorded.
func (r *Recorder) WriteBlocks(bufs [][]byte, off int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.cur.WriteBlocks(bufs, off); err != nil {
		return err
	}
	var data []byte
	for _, b := range bufs {
		data = append(data, b...)
	}
	r.ops = append(r.ops, Op{Kind: OpWrite, Off: off, Data: data, Length: int64(len(data))})
	return nil
}

// Punch zeroes the range and records it.
func (r *Recorder) Punch(off, length int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.cur.Punch(off, length); err != nil {
		return err
	}
	r.ops = append(r.ops, Op{Kind: OpPunch, Off: off, Length: length})
	return nil
}

// Flush records a durability point.
func (r *Recorder) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.cur.Flush(); err != nil {
		return err
	}
	r.ops = append(r.ops, Op{Kind: OpFlush})
	return nil
}

// Close closes the device; the log and Image stay available.
func (r *Recorder) Close() error { return r.cur.Close() }

// Ops returns a copy of the log so far.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// FlushPoints returns the indices into Ops of every Flush, in order.
func (r *Recorder) FlushPoints() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var points []int
	for i, op := range r.ops {
		if op.Kind == OpFlush {
			points = append(points, i)
		}
	}
	return points
}

// Image rebuilds the device contents after a crash just before op upto
// (clamped to [0, len(Ops())]): every op before upto is applied in order,
// except that ops after the last Flush before upto were not yet durable and
// are applied only if keep(i) returns true. keep == nil applies them all.
// This models a power cut that loses an arbitrary subset of unflushed writes
// and punches; a write is kept or lost as a whole. The result is a new, open
// device.
func (r *Recorder) Image(upto int, keep func(i int) bool) *Memory {
	r.mu.Lock()
	ops := r.ops[:len(r.ops):len(r.ops)] // the log only grows, so this prefix is stable
	r.mu.Unlock()

	upto = min(max(upto, 0), len(ops))
	lastFlush := -1
	for i := upto - 1; i >= 0; i-- {
		if ops[i].Kind == OpFlush {
			lastFlush = i
			break
		}
	}
	img := r.initial.Clone()
	for i, op := range ops[:upto] {
		if i > lastFlush && keep != nil && !keep(i) {
			continue
		}
		switch op.Kind {
		case OpWrite:
			img.write([][]byte{op.Data}, op.Off)
		case OpPunch:
			img.punch(op.Off, op.Length)
		}
	}
	return img
}
