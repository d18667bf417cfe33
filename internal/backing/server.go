package backing

import (
	"errors"
	"io"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/reflinkfs/reflinkfs/internal/fusereply"
)

// server answers the backing mount's requests: a root directory that can
// only be looked up in, and read-only files that never change, so the
// kernel may cache entries, attributes and pages for as long as it likes.
type server struct {
	fuse.RawFileSystem
	s *Store
}

const forever = 1 << 30 // seconds: nothing on the backing mount changes

func (sv *server) String() string { return "reflinkfs-backing" }

func (sv *server) backing(node uint64) *Backing {
	sv.s.mu.Lock()
	defer sv.s.mu.Unlock()
	return sv.s.byNode[node]
}

func fillAttr(a *fuse.Attr, node uint64, b *Backing) {
	a.Ino = node
	if b == nil {
		a.Mode = syscall.S_IFDIR | 0o500
		a.Nlink = 2
		return
	}
	a.Mode = syscall.S_IFREG | 0o400
	a.Nlink = 1
	a.Size = uint64(b.size)
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 1 << 20
}

func (sv *server) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if h.NodeId != fuse.FUSE_ROOT_ID {
		return fuse.ENOTDIR
	}
	node, err := strconv.ParseUint(name, 10, 64)
	if err != nil {
		return fuse.ENOENT
	}
	b := sv.backing(node)
	if b == nil {
		return fuse.ENOENT
	}
	out.NodeId, out.Generation = node, 1
	out.SetEntryTimeout(forever * 1e9)
	out.SetAttrTimeout(forever * 1e9)
	fillAttr(&out.Attr, node, b)
	return fuse.OK
}

func (sv *server) Forget(node, nlookup uint64) {}

func (sv *server) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	var b *Backing
	if in.NodeId != fuse.FUSE_ROOT_ID {
		if b = sv.backing(in.NodeId); b == nil {
			return fuse.ENOENT
		}
	}
	out.SetTimeout(forever * 1e9)
	fillAttr(&out.Attr, in.NodeId, b)
	return fuse.OK
}

func (sv *server) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return fuse.EACCES
	}
	if sv.backing(in.NodeId) == nil {
		return fuse.ENOENT
	}
	// Keep the page cache across opens: it is the cache clones share. No
	// FLUSH at close: there is nothing to flush, and a daemon killed with
	// its own backing files open would wait for ever on a FLUSH only it
	// could answer while it closes its descriptors.
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
	return fuse.OK
}

func (sv *server) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {}

func (sv *server) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	b := sv.backing(in.NodeId)
	if b == nil {
		return nil, fuse.EIO
	}
	if in.Offset >= uint64(b.size) {
		return fuse.ReadResultData(nil), fuse.OK
	}
	v, err := b.src.ReadView(int64(in.Offset), int(in.Size))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fuse.EIO
	}
	if v.Len() == 0 {
		v.Release()
		return fuse.ReadResultData(nil), fuse.OK
	}
	return fusereply.View(v), fuse.OK
}
