package fusefs

// Copy detection (docs/copy-sharing.md): a process that reads a file on the
// mount and writes the same bytes at the same offsets of another file (cp
// of a sparse file, sendfile, cat, dd, rsync, tar c | tar x) gets the
// source's blocks shared into the copy instead of new ones
// (File.WriteAtSharing).
//
// Which sources a write may match is what keeps this safe: matching against
// every block on the mount would tell a writer whether some data exists
// anywhere (the side channel of deduplication). A write may match only files
// that were opened for reading, recently, by a process of the writer's own
// process group whose credentials the writer has too: the same uid and gid,
// no supplementary group and no capability the writer lacks. Such a writer
// could have opened the source and read it itself, so a match tells it
// nothing new. Reads of passthrough opens never reach the daemon, so the
// daemon learns sources at OPEN, not READ.
//
// The process group (not the process) is the unit so that pipelines and
// forked copiers match: rsync's receiver is a grandchild of its sender, and
// `tar c | tar x` is two processes of one job.

import (
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/reflinkfs/reflinkfs"
)

// Bounds of the source table: at most maxSourceGroups process groups of
// maxSourcesPerGroup files each (the most recently opened). An entry is
// about 120 bytes plus 4 per supplementary group of its opener, so the
// table stays under about 2.5 MiB (16k entries).
const (
	maxSourcesPerGroup = 16
	maxSourceGroups    = 1024
	// sourceGrace is how long a source stays matchable after its last open
	// is released: rsync's receiver and the second half of a pipeline write
	// a little after the reader has closed the file.
	sourceGrace = 5 * time.Second
	// writerCredsTTL is how long a writer's credentials, read from /proc,
	// are reused for further writes of the same thread.
	writerCredsTTL = time.Second
	// maxSourcesTried is how many sources one write compares against.
	maxSourcesTried = 4
)

// copySources remembers which files each process group opened for reading.
type copySources struct {
	mu     sync.Mutex
	groups map[int]*sourceGroup
	now    func() time.Time
}

type sourceGroup struct {
	entries []*sourceEntry // oldest first
	used    time.Time
	// The last writer's credentials (see writerCredsTTL).
	writerTid uint32
	writer    creds
	writerAt  time.Time
}

// sourceEntry is a file opened for reading by a process of a group.
type sourceEntry struct {
	ino, gen uint64
	// The opener's credentials at open time.
	uid, gid uint32
	groups   []uint32 // supplementary groups, sorted
	caps     capSet
	opens    int       // handles open now
	released time.Time // when opens last dropped to 0
}

func newCopySources() *copySources {
	return &copySources{groups: make(map[int]*sourceGroup), now: time.Now}
}

// expired reports whether e can no longer be matched at now.
func (e *sourceEntry) expired(now time.Time) bool {
	return e.opens == 0 && now.Sub(e.released) > sourceGrace
}

// opened records that the calling thread opened ino (generation gen) for
// reading, and returns the entry to release when the handle closes (nil if
// not recorded).
func (t *copySources) opened(caller *fuse.Caller, ino, gen uint64) *sourceEntry {
	if caller.Pid == 0 {
		return nil // made by the kernel, or a process outside our pid namespace
	}
	pgid, err := unix.Getpgid(int(caller.Pid))
	if err != nil {
		return nil
	}
	st := readCaller(caller.Pid)
	if st.groups == nil || st.foreignNS {
		// Credentials unknown, or capabilities held in another user
		// namespace that we cannot compare: never matched.
		return nil
	}
	groups := make([]uint32, 0, len(st.groups))
	for g := range st.groups {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	g := t.groups[pgid]
	if g == nil {
		if len(t.groups) >= maxSourceGroups {
			t.evictLocked(now)
		}
		g = &sourceGroup{}
		t.groups[pgid] = g
	}
	g.used = now
	for i, e := range g.entries {
		if e.ino == ino && e.gen == gen && e.uid == caller.Uid && e.gid == caller.Gid &&
			e.caps == st.caps && slices.Equal(e.groups, groups) {
			e.opens++
			g.entries = append(slices.Delete(g.entries, i, i+1), e) // most recent last
			return e
		}
	}
	e := &sourceEntry{ino: ino, gen: gen, uid: caller.Uid, gid: caller.Gid, groups: groups, caps: st.caps, opens: 1}
	g.entries = slices.DeleteFunc(g.entries, func(e *sourceEntry) bool { return e.expired(now) })
	if len(g.entries) >= maxSourcesPerGroup {
		g.entries = slices.Delete(g.entries, 0, len(g.entries)-maxSourcesPerGroup+1)
	}
	g.entries = append(g.entries, e)
	return e
}

// evictLocked drops groups with nothing matchable left, or else the least
// recently used group.
func (t *copySources) evictLocked(now time.Time) {
	var oldest int
	var oldestAt time.Time
	first := true
	for pgid, g := range t.groups {
		g.entries = slices.DeleteFunc(g.entries, func(e *sourceEntry) bool { return e.expired(now) })
		if len(g.entries) == 0 {
			delete(t.groups, pgid)
			continue
		}
		if first || g.used.Before(oldestAt) {
			oldest, oldestAt, first = pgid, g.used, false
		}
	}
	if len(t.groups) >= maxSourceGroups && !first {
		delete(t.groups, oldest)
	}
}

// released records that a handle of e closed.
func (t *copySources) released(e *sourceEntry) {
	t.mu.Lock()
	if e.opens--; e.opens == 0 {
		e.released = t.now()
	}
	t.mu.Unlock()
}

// sourceRef is a source a write may be compared with.
type sourceRef struct {
	ino, gen uint64
	e        *sourceEntry
}

// candidates returns the sources a write by caller into dst may match, the
// most recently opened first; nil when there are none.
func (t *copySources) candidates(caller *fuse.Caller, dst uint64) []sourceRef {
	if caller.Pid == 0 {
		return nil
	}
	t.mu.Lock()
	empty := len(t.groups) == 0
	t.mu.Unlock()
	if empty {
		return nil
	}
	pgid, err := unix.Getpgid(int(caller.Pid))
	if err != nil {
		return nil
	}
	var w creds
	for attempt := 0; attempt < 2; attempt++ {
		t.mu.Lock()
		now := t.now()
		g := t.groups[pgid]
		if g == nil {
			t.mu.Unlock()
			return nil
		}
		g.entries = slices.DeleteFunc(g.entries, func(e *sourceEntry) bool { return e.expired(now) })
		var out []sourceRef
		for i := len(g.entries) - 1; i >= 0; i-- {
			e := g.entries[i]
			if e.ino != dst && e.uid == caller.Uid && e.gid == caller.Gid {
				out = append(out, sourceRef{e.ino, e.gen, e})
			}
		}
		if len(out) == 0 {
			t.mu.Unlock()
			return nil
		}
		if attempt == 0 && (g.writerTid != caller.Pid || now.Sub(g.writerAt) > writerCredsTTL ||
			g.writer.uid != caller.Uid || g.writer.gid != caller.Gid) {
			// Read the writer's groups and capabilities outside the lock.
			t.mu.Unlock()
			w = callerCreds(caller)
			t.mu.Lock()
			if g = t.groups[pgid]; g != nil {
				g.writerTid, g.writer, g.writerAt = caller.Pid, w, t.now()
			}
			t.mu.Unlock()
			continue
		}
		w = g.writer
		out = slices.DeleteFunc(out, func(r sourceRef) bool { return !w.covers(r.e) })
		t.mu.Unlock()
		return out[:min(len(out), maxSourcesTried)]
	}
	return nil
}

// covers reports whether w has every right the opener of e had: the same
// uid and gid (checked by the caller), its supplementary groups and its
// capabilities.
func (w creds) covers(e *sourceEntry) bool {
	if e.caps&^w.caps != 0 {
		return false
	}
	for _, g := range e.groups {
		if !w.inGroup(g) {
			return false
		}
	}
	return true
}

// count returns the process groups and source entries remembered now.
func (t *copySources) count() (groups, entries int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, g := range t.groups {
		entries += len(g.entries)
	}
	return len(t.groups), entries
}

// trackSource records h, a regular file just opened, as a source of its
// opener's process group if it was opened for reading.
func (fs *fileSystem) trackSource(caller *fuse.Caller, h *fileHandle) {
	if fs.copy == nil || h.flags&syscall.O_ACCMODE == syscall.O_WRONLY {
		return
	}
	a, err := h.f.Attr()
	if err != nil || a.Mode&syscall.S_IFMT != syscall.S_IFREG || a.Size < reflinkfs.BlockSize {
		return // nothing a write could share
	}
	h.src = fs.copy.opened(caller, h.ino, a.Gen)
}

// writeSharing writes data at off into h, sharing whole blocks equal to
// those of the caller's recent sources (File.WriteAtSharing). ok is false
// when there was nothing to compare with and the caller should write.
func (fs *fileSystem) writeSharing(caller *fuse.Caller, h *fileHandle, data []byte, off int64) (n int, ok bool, err error) {
	if fs.copy == nil || len(data) == 0 {
		return 0, false, nil
	}
	refs := fs.copy.candidates(caller, h.ino)
	if len(refs) == 0 {
		return 0, false, nil
	}
	var srcs []*reflinkfs.File
	for _, r := range refs {
		f, err := fs.fsys.OpenIno(r.ino, syscall.O_RDONLY)
		if err != nil {
			continue
		}
		if a, err := f.Attr(); err != nil || a.Gen != r.gen {
			f.Close() // the inode number was reused: not what was opened
			continue
		}
		srcs = append(srcs, f)
	}
	defer func() {
		for _, f := range srcs {
			f.Close()
		}
	}()
	if len(srcs) == 0 {
		return 0, false, nil
	}
	n, _, err = h.f.WriteAtSharing(data, off, srcs)
	return n, true, err
}
