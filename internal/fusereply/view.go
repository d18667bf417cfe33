// Package fusereply turns engine read views into go-fuse read results, so
// both FUSE servers of a mount (the file system and the passthrough
// backing mount) reply straight from the engine's cache frames.
package fusereply

import (
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/reflinkfs/reflinkfs"
)

// View replies to a read from v's cache frames without a copy: go-fuse
// writes Slices with one writev and then calls Done, which releases the
// view (go-fuse calls Done for every non-empty result it is given).
func View(v *reflinkfs.ReadView) fuse.ReadResult { return viewResult{v} }

type viewResult struct{ v *reflinkfs.ReadView }

func (r viewResult) Size() int                       { return r.v.Len() }
func (r viewResult) Done()                           { r.v.Release() }
func (r viewResult) Slices() ([][]byte, fuse.Status) { return r.v.Slices(), fuse.OK }

// Bytes is the fallback of a ReadResult (used only if go-fuse cannot write
// vectors): the view joined into buf.
func (r viewResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	buf = buf[:0]
	for _, s := range r.v.Slices() {
		buf = append(buf, s...)
	}
	return buf, fuse.OK
}
