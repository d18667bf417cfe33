package modeltest

import (
	"strconv"
	"syscall"

	"github.com/reflinkfs/reflinkfs"
)

// memTarget is a Target backed by a second Oracle: a correct in-memory
// filesystem (or a buggy one, with the oracle's bug switch), used to test the
// runner, generator and shrinker without the engine. Physical addresses are
// identity numbers times B.
type memTarget struct{ o *Oracle }

func newMemTarget(buggy bool) Factory {
	return func() (Target, error) {
		o := NewOracle()
		o.writeSharedInPlace = buggy
		return &memTarget{o: o}, nil
	}
}

func index(name string) int {
	i, err := strconv.Atoi(name[1:])
	if err != nil || name[0] != 'f' {
		panic("bad name " + name)
	}
	return i
}

func (m *memTarget) WriteAt(name string, off int64, data []byte) error {
	return m.o.Write(index(name), off, data)
}
func (m *memTarget) ReadAt(name string, off int64, n int) ([]byte, error) {
	return m.o.Read(index(name), off, n)
}
func (m *memTarget) Size(name string) (int64, error)        { return m.o.Size(index(name)) }
func (m *memTarget) Truncate(name string, size int64) error { return m.o.Truncate(index(name), size) }
func (m *memTarget) PunchHole(name string, off, n int64) error {
	return m.o.PunchHole(index(name), off, n)
}
func (m *memTarget) ZeroRange(name string, off, n int64) error {
	return m.o.ZeroRange(index(name), off, n)
}
func (m *memTarget) Allocate(name string, off, n int64, keep bool) error {
	return m.o.Allocate(index(name), off, n, keep)
}
func (m *memTarget) CloneRange(src, dst string, srcOff, n, dstOff int64) error {
	return m.o.CloneRange(index(src), index(dst), srcOff, n, dstOff)
}
func (m *memTarget) DedupeRange(src, dst string, srcOff, n, dstOff int64) (int64, error) {
	return m.o.DedupeRange(index(src), index(dst), srcOff, n, dstOff)
}
func (m *memTarget) CopyRange(src, dst string, srcOff, n, dstOff int64) (int64, error) {
	return m.o.CopyRange(index(src), index(dst), srcOff, n, dstOff)
}
func (m *memTarget) Unshare(name string, off, n int64) error {
	return m.o.Unshare(index(name), off, n)
}
func (m *memTarget) Sync(name string) error       { return m.o.Sync(index(name)) }
func (m *memTarget) Reopen() error                { m.o.Reopen(); return nil }
func (m *memTarget) Remove(name string) error     { return m.o.Remove(index(name)) }
func (m *memTarget) Rename(old, new string) error { return m.o.Rename(index(old), index(new)) }
func (m *memTarget) UsedBytes() (int64, error)    { return m.o.UsedBytes(), nil }
func (m *memTarget) Check() error                 { return nil }

// Fiemap merges runs of blocks that are logically and physically contiguous
// with equal flags, as the engine does.
func (m *memTarget) Fiemap(name string) ([]reflinkfs.Extent, error) {
	f := index(name)
	if !m.o.Exists(f) {
		return nil, syscall.ENOENT
	}
	var out []reflinkfs.Extent
	for _, b := range m.o.Blocks(f) {
		e := reflinkfs.Extent{Logical: b.Index * B, Physical: int64(b.ID) * B, Length: B, Shared: b.Refs > 1, Unwritten: b.Unwritten}
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.Logical+last.Length == e.Logical && last.Physical+last.Length == e.Physical &&
				last.Shared == e.Shared && last.Unwritten == e.Unwritten {
				last.Length += B
				continue
			}
		}
		out = append(out, e)
	}
	return out, nil
}

func (m *memTarget) Detach(name string, slot int) error { return m.o.Detach(index(name), slot) }
func (m *memTarget) ReadDetached(slot int, off int64, n int) ([]byte, error) {
	return m.o.ReadDetached(slot, off, int64(n)), nil
}
func (m *memTarget) SizeDetached(slot int) (int64, error) { return m.o.DetachedSize(slot), nil }
func (m *memTarget) CloseDetached(slot int) error         { m.o.CloseDetached(slot); return nil }

func (m *memTarget) SpaceStats() (SpaceStats, error) {
	return SpaceStats{LogicalBytes: m.o.LogicalBytes(), SharedBytes: m.o.SharedBytes()}, nil
}
