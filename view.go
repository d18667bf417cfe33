package reflinkfs

import (
	"io"

	"github.com/reflinkfs/reflinkfs/internal/cache"
)

// ReadView is file data handed out without copying it: its slices alias the
// block cache's frames (and a shared block of zeros for holes), so a server
// can send them straight to the kernel with one writev. It exists for the
// FUSE adapter, where the copy into a reply buffer was a third of the
// daemon's time on cached reads.
//
// While a view is held its frames stay pinned and the file's lock is held
// shared, so the bytes cannot change under the reader (writers to the file
// wait) and a freed block's frame cannot be handed to another file. Release
// it as soon as the data is sent; the slices must not be written or used
// after Release.
type ReadView struct {
	fsys   *FS
	in     *inode // nil once released
	frames []*cache.Frame
	slices [][]byte
	n      int
}

// maxViewShare bounds the frames one view may pin, as a fraction of the
// cache: larger reads are copied instead, so views can never pin the whole
// cache and starve loads.
const maxViewShare = 8

// ReadView returns the file's bytes [off, off+n), clipped at the end of file,
// like ReadAt: at or past the end it returns an empty view and io.EOF; a
// clipped view comes with io.EOF. On any other error no view is returned.
// The caller must Release the view.
func (f *File) ReadView(off int64, n int) (*ReadView, error) {
	if err := f.checkRead(off, n); err != nil {
		return nil, err
	}
	if blocks := int64(n)/BlockSize + 2; blocks > f.fsys.cache.Frames()/maxViewShare {
		// Too large to pin at once: a private copy.
		buf := make([]byte, n)
		got, err := f.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			return nil, err
		}
		return &ReadView{slices: [][]byte{buf[:got]}, n: got}, err
	}
	v := &ReadView{fsys: f.fsys, in: f.in}
	f.in.lock.RLock()
	size := f.sizeForRead(n)
	if off >= size {
		v.Release()
		return &ReadView{}, io.EOF
	}
	want := int(min(int64(n), size-off))
	if err := f.fsys.viewLocked(v, off, want); err != nil {
		v.Release()
		return nil, f.err("read", err)
	}
	f.sequentialRead(off, off+int64(want), size)
	if want < n {
		return v, io.EOF
	}
	return v, nil
}

// Slices are the view's bytes in order, read-only.
func (v *ReadView) Slices() [][]byte { return v.slices }

// Len is the number of bytes in the view.
func (v *ReadView) Len() int { return v.n }

// Release unpins the view's frames and lets writers to the file proceed.
// Further calls do nothing.
func (v *ReadView) Release() {
	if v.in == nil {
		return
	}
	v.fsys.cache.UnpinAll(v.frames)
	v.in.lock.RUnlock()
	v.in, v.frames, v.slices = nil, nil, nil
}

// viewLocked fills v with [off, off+n), which lies below the file size,
// with in.lock held shared.
func (fsys *FS) viewLocked(v *ReadView, off int64, n int) error {
	if n == 0 {
		return nil
	}
	in := v.in
	b0 := uint64(off) / BlockSize
	b1 := (uint64(off) + uint64(n) + BlockSize - 1) / BlockSize
	fsys.mu.Lock()
	ms, err := fsys.extentsIn(in, b0, b1)
	fsys.mu.Unlock()
	if err != nil {
		return err
	}
	pos, end := uint64(off), uint64(off)+uint64(n)
	zeros := func(to uint64) {
		for pos < to {
			k := min(to-pos, BlockSize)
			v.slices = append(v.slices, zeroBlock[:k])
			pos += k
		}
	}
	v.frames = make([]*cache.Frame, 0, b1-b0)
	v.slices = make([][]byte, 0, b1-b0)
	for _, m := range ms {
		zeros(min(m.lblk*BlockSize, end))
		if m.unwritten {
			zeros(min(m.end()*BlockSize, end))
			continue
		}
		err := fsys.pinRun(in.ino, m.lblk, m.pblk, int(m.n), func(i int, fr *cache.Frame) {
			v.frames = append(v.frames, fr)
			blockStart := (m.lblk + uint64(i)) * BlockSize
			from, to := max(pos, blockStart), min(end, blockStart+BlockSize)
			if from < to {
				v.slices = append(v.slices, fr.Data()[from-blockStart:to-blockStart])
				pos = to
			}
		})
		if err != nil {
			return err
		}
	}
	zeros(end)
	v.n = n
	return nil
}
