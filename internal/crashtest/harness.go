package crashtest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/device"
)

// Config shapes a recorded workload run.
type Config struct {
	DeviceSize int64 // data device bytes; default 64 MiB
	// CacheSize is the block cache of the recorded run and of every replay;
	// default 256 KiB, so dirty blocks are evicted (written back) between
	// commits, which is where the interesting crash points are.
	CacheSize int64
	Seed      uint64 // seeds the workload's data and choices
	// TempDir holds the image directories (the recorded one and one per
	// replay). Required.
	TempDir string
	Logger  *slog.Logger // default: discard

	// dropFlushes makes the recorded device ignore flushes (for the
	// harness's own test: an engine that never flushes must fail).
	dropFlushes bool
}

func (c Config) withDefaults() Config {
	if c.DeviceSize == 0 {
		c.DeviceSize = 64 << 20
	}
	if c.CacheSize == 0 {
		c.CacheSize = 256 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// countingDevice counts the recorder's successful operations, so metadata
// events can be placed in the device's operation log.
type countingDevice struct {
	*device.Recorder
	n           atomic.Int64
	dropFlushes bool
}

func (d *countingDevice) count() int { return int(d.n.Load()) }

func (d *countingDevice) WriteBlocks(bufs [][]byte, off int64) error {
	err := d.Recorder.WriteBlocks(bufs, off)
	if err == nil {
		d.n.Add(1)
	}
	return err
}

func (d *countingDevice) Punch(off, length int64) error {
	err := d.Recorder.Punch(off, length)
	if err == nil {
		d.n.Add(1)
	}
	return err
}

func (d *countingDevice) Flush() error {
	if d.dropFlushes {
		return nil
	}
	err := d.Recorder.Flush()
	if err == nil {
		d.n.Add(1)
	}
	return err
}

// Recording is one workload run against a recording device and metadata
// filesystem, with the expected state at every durable commit. Its Points
// are crash instants; Check replays one and verifies the recovered image.
type Recording struct {
	Name string
	cfg  Config
	dir  string // image directory of the recorded run
	dev  *countingDevice
	meta *MetaFS

	model   *Model
	initial Snapshot // the state before the workload (an empty root)
	commits []commitPoint
	// The recorded run opened the image after startOps device operations
	// and startEvents metadata events; crash points start there.
	startOps, startEvents int
	// Problems met while recording (the workload failing, a commit
	// outside a sync call).
	problems []string
	w        *W

	// base is the device before the recorded run (nil: zeros). A recovery
	// recording (RecordRecovery) starts from a crashed image, and every
	// state it may show is initial.
	base     *device.Memory
	recovery bool
	// emptyFree is Stats.FreeBytes of the freshly created, empty image: a
	// recovered image whose files are all gone must be back to it once the
	// background freeing is done.
	emptyFree int64
}

// commitPoint is one durable commit of the recorded run.
type commitPoint struct {
	walSync int // index of the metadata event (WAL sync) that made it durable
	// walWrite is the index of the first WAL write of the commit: after a
	// process kill between it and walSync the commit may or may not show.
	walWrite int
	ops      int // device operations done when the commit finished
	by       string
	state    Snapshot
}

// Record creates an image on a recording device and metadata filesystem and
// runs the workload on it. The image is left open, as a crash leaves it.
// A workload failure (an operation returning an error, a read disagreeing
// with the model) is returned as an error.
func Record(name string, cfg Config, workload func(w *W)) (rec *Recording, err error) {
	cfg = cfg.withDefaults()
	if cfg.TempDir == "" {
		return nil, errors.New("crashtest: Config.TempDir is required")
	}
	r := &Recording{Name: name, cfg: cfg, model: NewModel()}
	r.initial = r.model.Snapshot()
	r.dir = filepath.Join(cfg.TempDir, "recorded-"+sanitize(name))
	r.dev = &countingDevice{Recorder: device.NewRecorder(cfg.DeviceSize), dropFlushes: cfg.dropFlushes}
	r.meta = NewMetaFS(r.dev.count)
	fsys, err := reflinkfs.Create(r.dir, reflinkfs.Options{
		Size: cfg.DeviceSize, CacheSize: cfg.CacheSize, CommitInterval: -1, Logger: cfg.Logger,
		Storage: &reflinkfs.Storage{Device: r.dev, MetaFS: r.meta, OnCommit: r.onCommit},
	})
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	r.startOps, r.startEvents = r.dev.count(), r.meta.Len()
	r.emptyFree = fsys.Stats().FreeBytes
	r.w = &W{fs: fsys, m: r.model, rng: rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15)), rec: r}
	defer func() {
		if v := recover(); v != nil {
			if f, ok := v.(workloadFailure); ok {
				err = fmt.Errorf("workload %s: %s", name, f.msg)
				return
			}
			panic(v)
		}
	}()
	workload(r.w)
	r.w.closed = true
	if len(r.problems) > 0 {
		return r, fmt.Errorf("workload %s: %s", name, strings.Join(r.problems, "; "))
	}
	// The image stays open: the rest of the run is the crash.
	return r, nil
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '-'
		}
		return r
	}, s)
}

// onCommit runs inside every durable commit of the recorded run, with the
// FS quiescent: the model is exactly what the commit made durable.
func (r *Recording) onCommit() {
	if r.recovery {
		// Recovery changes no file: every commit holds the initial state.
		sync := r.meta.LastSync(".log")
		prev := -1
		if len(r.commits) > 0 {
			prev = r.commits[len(r.commits)-1].walSync
		}
		r.commits = append(r.commits, commitPoint{walSync: sync, walWrite: r.meta.FirstWrite(".log", prev+1, sync),
			ops: r.dev.count(), by: "recovery"})
		return
	}
	if r.w == nil {
		return // opening the image
	}
	if !r.w.syncing {
		r.problems = append(r.problems, "commit outside a sync call (during "+r.w.op+"): the harness cannot know its state")
	}
	prev := -1
	if len(r.commits) > 0 {
		prev = r.commits[len(r.commits)-1].walSync
	}
	sync := r.meta.LastSync(".log")
	r.commits = append(r.commits, commitPoint{walSync: sync, walWrite: r.meta.FirstWrite(".log", prev+1, sync),
		ops: r.dev.count(), by: r.w.op, state: r.model.Snapshot()})
}

// Commits is the number of durable commits the workload made.
func (r *Recording) Commits() int { return len(r.commits) }

// ReapingSyncs is the number of the workload's sync calls that returned
// with background freeing still under way (so their commit holds a deleted
// file partly freed).
func (r *Recording) ReapingSyncs() int {
	if r.w == nil {
		return 0
	}
	return r.w.reapingSyncs
}

// DeviceOps is the number of device operations the workload made.
func (r *Recording) DeviceOps() int { return r.dev.count() - r.startOps }

// Point is a crash instant: the first Ops device operations and the first
// Events metadata events happened, the rest did not. With PowerCut, data
// the metadata store wrote but did not sync is lost, and so is every device
// write or punch after the last flush unless KeepSeed is 0 (all kept) or
// picks it: the seed keeps or loses each such operation whole, or tears it
// (keeps a random subset of its 4 KiB blocks), a quarter, a quarter and a
// half of the time. Without PowerCut (a killed process) everything written
// survives.
type Point struct {
	Ops      int
	Events   int
	PowerCut bool
	KeepSeed uint64
	// Reuse: after the checks, write, sync and reopen the recovered image
	// and check again (a recovered image must stay usable).
	Reuse bool
}

func (p Point) String() string {
	kind := "kill"
	if p.PowerCut {
		kind = "power-cut"
	}
	s := fmt.Sprintf("%s after %d device ops, %d metadata events", kind, p.Ops, p.Events)
	if p.KeepSeed != 0 {
		s += fmt.Sprintf(", unflushed writes kept by seed %#x", p.KeepSeed)
	}
	return s
}

// keepBlock returns which 4 KiB blocks of the unflushed device operations
// a power cut at p keeps: block j of operation i survives if keep(i, j);
// nil keeps everything.
func (p Point) keepBlock() func(i, j int) bool {
	if p.KeepSeed == 0 || !p.PowerCut {
		return nil
	}
	return func(i, j int) bool {
		// A fixed function of (seed, i, j): the same point always keeps the same blocks.
		h := mix64(p.KeepSeed ^ (uint64(i)+1)*0x9e3779b97f4a7c15)
		switch h % 4 {
		case 0:
			return false // lost whole
		case 1:
			return true // kept whole
		}
		return mix64(h^(uint64(j)+1)*0xd1b54a32d192ed03)&1 == 1 // torn
	}
}

func mix64(x uint64) uint64 {
	x ^= x >> 31
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 29
	x *= 0x94d049bb133111eb
	x ^= x >> 32
	return x
}

// image rebuilds the data device as crash point p leaves it: every device
// operation before p.Ops applied in order to the device the run started
// with, those after the last flush only in the blocks p.keepBlock keeps.
// (device.Recorder.Image keeps or loses a write call whole; a power cut
// can tear a multi-block write, and the log holds the data to model it.)
func (r *Recording) image(p Point) *device.Memory {
	ops := r.dev.Ops()
	upto := min(max(p.Ops, 0), len(ops))
	lastFlush := -1
	for i := upto - 1; i >= 0; i-- {
		if ops[i].Kind == device.OpFlush {
			lastFlush = i
			break
		}
	}
	var img *device.Memory
	if r.base != nil {
		img = r.base.Clone()
	} else {
		img = device.NewMemory(r.cfg.DeviceSize)
	}
	keep := p.keepBlock()
	for i, op := range ops[:upto] {
		if op.Kind == device.OpFlush {
			continue
		}
		if i <= lastFlush || keep == nil {
			if err := applyOp(img, op, 0, op.Length); err != nil {
				panic(fmt.Sprintf("replaying device op %d: %v", i, err))
			}
			continue
		}
		// Apply the kept blocks, a run of consecutive ones per call.
		blocks := int((op.Length + BlockSize - 1) / BlockSize)
		for j := 0; j < blocks; {
			if !keep(i, j) {
				j++
				continue
			}
			k := j + 1
			for k < blocks && keep(i, k) {
				k++
			}
			if err := applyOp(img, op, int64(j)*BlockSize, min(int64(k)*BlockSize, op.Length)); err != nil {
				panic(fmt.Sprintf("replaying device op %d: %v", i, err))
			}
			j = k
		}
	}
	return img
}

// applyOp applies bytes [from, to) of a recorded write or punch to img.
func applyOp(img *device.Memory, op device.Op, from, to int64) error {
	switch op.Kind {
	case device.OpWrite:
		// The device takes aligned buffers only; the log's copy is not.
		buf := device.AlignedBuffer(BlockSize)
		for o := from; o < to; o += BlockSize {
			copy(buf, op.Data[o:o+BlockSize])
			if err := img.WriteBlocks([][]byte{buf}, op.Off+o); err != nil {
				return err
			}
		}
	case device.OpPunch:
		return img.Punch(op.Off+from, to-from)
	}
	return nil
}

// eventRange returns the metadata event counts consistent with a crash after
// ops device operations: every event before it happened before device op
// ops, every event after it after op ops-1.
func (r *Recording) eventRange(tags []int, ops int) (lo, hi int) {
	lo = sort.Search(len(tags), func(i int) bool { return tags[i] >= ops })
	hi = sort.Search(len(tags), func(i int) bool { return tags[i] > ops })
	return max(lo, r.startEvents), max(hi, r.startEvents)
}

// unflushedBefore reports whether some write or punch follows the last
// flush before device op ops.
func unflushedBefore(ops []device.Op, n int) bool {
	return n > 0 && ops[n-1].Kind != device.OpFlush
}

// AllPoints is every crash instant of the recording: each device-log prefix
// with every distinct power-cut state of the metadata consistent with it
// (the earliest, the latest and the one right after each sync between
// them), subsets random subsets of the unflushed writes where there are
// any, and a process kill.
func (r *Recording) AllPoints(rng *rand.Rand, subsets int) []Point {
	tags := r.meta.Tags()
	syncs := r.meta.syncIndexes()
	ops := r.dev.Ops()
	var pts []Point
	for n := r.startOps; n <= len(ops); n++ {
		lo, hi := r.eventRange(tags, n)
		pts = append(pts, Point{Ops: n, Events: hi, PowerCut: true})
		if lo != hi {
			pts = append(pts, Point{Ops: n, Events: lo, PowerCut: true})
		}
		for _, s := range syncs {
			if s >= lo && s+1 < hi {
				pts = append(pts, Point{Ops: n, Events: s + 1, PowerCut: true})
			}
		}
		if unflushedBefore(ops, n) {
			for range subsets {
				pts = append(pts, Point{Ops: n, Events: hi, PowerCut: true, KeepSeed: rng.Uint64() | 1})
			}
		}
		pts = append(pts, Point{Ops: n, Events: hi})
	}
	pts = dedupPoints(pts)
	for i := range pts {
		pts[i].Reuse = i%4 == 0
	}
	return pts
}

// Points chooses about budget crash instants: first the ones around each
// commit (just before and after the data flush, just before and after the
// WAL sync, after the freed blocks are punched) and the end of the run,
// then random ones. A budget <= 0 means every instant (AllPoints).
func (r *Recording) Points(budget int, rng *rand.Rand) []Point {
	if budget <= 0 {
		return r.AllPoints(rng, 2)
	}
	tags := r.meta.Tags()
	ops := r.dev.Ops()
	at := func(n int, early bool) Point {
		lo, hi := r.eventRange(tags, n)
		p := Point{Ops: n, Events: hi, PowerCut: true}
		if early {
			p.Events = lo
		}
		return p
	}
	var key []Point
	for _, c := range r.commits {
		if c.walSync < 0 {
			continue
		}
		t := tags[c.walSync]
		// The flush before the WAL sync, and the writes it made durable.
		f := t - 1
		for f >= r.startOps && ops[f].Kind != device.OpFlush {
			f--
		}
		if f >= r.startOps {
			before := at(f, false)
			before.KeepSeed = rng.Uint64() | 1
			key = append(key, at(f, false), before, at(f+1, true))
		}
		key = append(key,
			Point{Ops: t, Events: c.walSync, PowerCut: true},     // just before the WAL sync
			Point{Ops: t, Events: c.walSync + 1, PowerCut: true}, // just after it
			at(c.ops, false), // after the freed blocks were punched
		)
	}
	end := at(len(ops), false)
	kill := end
	kill.PowerCut = false
	key = append(key, end, kill)
	key = dedupPoints(key)
	if len(key) > budget*2/3 {
		rng.Shuffle(len(key), func(i, j int) { key[i], key[j] = key[j], key[i] })
		key = key[:max(budget*2/3, 1)]
	}
	pts := key
	for tries := 0; len(pts) < budget && tries < budget*4; tries++ {
		n := r.startOps + rng.IntN(len(ops)-r.startOps+1)
		lo, hi := r.eventRange(tags, n)
		p := Point{Ops: n, Events: lo + rng.IntN(hi-lo+1), PowerCut: rng.IntN(5) != 0}
		if p.PowerCut && unflushedBefore(ops, n) && rng.IntN(2) == 0 {
			p.KeepSeed = rng.Uint64() | 1
		}
		pts = dedupPoints(append(pts, p))
	}
	for i := range pts {
		pts[i].Reuse = i%4 == 0
	}
	slices.SortStableFunc(pts, func(a, b Point) int { return a.Ops - b.Ops })
	return pts
}

func dedupPoints(pts []Point) []Point {
	seen := map[Point]bool{}
	out := pts[:0]
	for _, p := range pts {
		k := p
		k.Reuse = false
		if !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	return out
}

// expected returns the commits whose state a crash at p may show (-1 is
// the initial state): that of the last commit whose WAL sync happened
// before the crash; after a process kill also the next commit if some of
// its WAL writes happened (the data written survives without a sync, but
// may be torn).
func (r *Recording) expected(p Point) []int {
	k := -1
	for i, c := range r.commits {
		if c.walSync >= 0 && c.walSync < p.Events {
			k = i
		}
	}
	ks := []int{k}
	if !p.PowerCut && k+1 < len(r.commits) {
		if w := r.commits[k+1].walWrite; w >= 0 && w < p.Events {
			ks = append(ks, k+1)
		}
	}
	return ks
}

func (r *Recording) state(k int) Snapshot {
	if k < 0 || r.recovery {
		return r.initial
	}
	return r.commits[k].state
}

// Check replays crash point p into a new image directory and verifies the
// recovered image: it opens, fsck is clean, no checksum errors, and the
// files are exactly those of the last durable commit (which includes every
// fsync'd byte), with no block holding bytes never written to its file. It
// returns the problems found (nil when the point passes).
func (r *Recording) Check(p Point) (problems []string) {
	defer func() {
		if v := recover(); v != nil {
			problems = append(problems, fmt.Sprintf("panic: %v\n%s", v, debug.Stack()))
		}
	}()
	img, err := r.replayDir()
	if err != nil {
		return []string{"harness: " + err.Error()}
	}
	defer os.RemoveAll(img)
	metaFS, err := r.meta.State(p.Events, p.PowerCut, filepath.Join(r.dir, "meta"), filepath.Join(img, "meta"))
	if err != nil {
		return []string{"harness: " + err.Error()}
	}
	dev := r.image(p)
	opt := reflinkfs.Options{CacheSize: r.cfg.CacheSize, CommitInterval: -1, Logger: r.cfg.Logger,
		Storage: &reflinkfs.Storage{Device: dev, MetaFS: metaFS}}
	fsys, err := reflinkfs.Open(img, opt)
	if err != nil {
		return []string{"open after crash: " + err.Error()}
	}
	ks := r.expected(p)
	k := ks[0]
	if len(ks) > 1 {
		// Either state is allowed; check against the one the files show.
		if got, _ := ReadState(fsys); r.state(ks[1]).Equal(got) {
			k = ks[1]
		}
	}
	want := r.state(k)
	problems = r.verify(fsys, want, k, "")
	if p.Reuse && len(problems) == 0 {
		problems = r.reuse(fsys, img, opt, dev, want, k)
		fsys = nil
	}
	if fsys != nil {
		if err := fsys.Close(); err != nil {
			problems = append(problems, "close after crash: "+err.Error())
		}
	}
	return problems
}

// verify checks an opened recovered image against want (commit k).
func (r *Recording) verify(fsys *reflinkfs.FS, want Snapshot, k int, when string) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, when+fmt.Sprintf(format, args...)) }
	// This fsck runs while the reaper may be freeing what Open handed it
	// (checkFreed checks again once it is done).
	rep, err := fsys.Fsck(false)
	if err != nil {
		add("fsck: %v", err)
	} else {
		for _, p := range rep.Problems {
			add("fsck: %s", p)
		}
	}
	got, readProblems := ReadState(fsys)
	for _, p := range readProblems {
		add("%s", p)
	}
	if diff := want.Diff(got, r.model); len(diff) > 0 {
		what := "the initial state"
		if k >= 0 {
			what = fmt.Sprintf("commit %d (by %s)", k, r.commits[k].by)
		}
		add("files differ from %s: %s", what, strings.Join(diff, "; "))
		for j, c := range r.commits {
			if j != k && c.state.Equal(got) {
				add("the files are those of commit %d (by %s)", j, c.by)
				break
			}
		}
	}
	if n := fsys.Stats().ChecksumErrors; n > 0 {
		add("%d checksum errors", n)
	}
	if len(problems) == 0 {
		problems = r.checkFreed(fsys, want, when)
	}
	return problems
}

// checkFreed checks that no deleted file outlives recovery: once background
// freeing is done (FS.WaitReaped), fsck is clean again and the image holds exactly want's
// inodes (the root, the directories, the files, hard links once; with fsck
// clean, no block is leaked, so the deleted files' blocks are all free), and
// an image with no file left has all its space free again, as when it was
// created.
func (r *Recording) checkFreed(fsys *reflinkfs.FS, want Snapshot, when string) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, when+fmt.Sprintf(format, args...)) }
	ids := map[int]bool{}
	inodes := int64(1 + len(want.Dirs))
	for _, f := range want.Files {
		if f.ID < 0 || !ids[f.ID] {
			inodes++
		}
		ids[f.ID] = true
	}
	if st := fsys.Stats(); st.ReapingFiles == 0 && st.Inodes == inodes && len(want.Files) > 0 {
		return nil // nothing was left to free
	}
	fsys.WaitReaped()
	if rep, err := fsys.Fsck(false); err != nil {
		add("fsck once background freeing is done: %v", err)
	} else {
		for _, p := range rep.Problems {
			add("fsck once background freeing is done: %s", p)
		}
	}
	st := fsys.Stats()
	if st.ReapingFiles != 0 {
		add("%d files still being freed after WaitReaped", st.ReapingFiles)
	}
	if st.Inodes != inodes {
		add("%d inodes once background freeing is done, want %d: a deleted file was not freed", st.Inodes, inodes)
	}
	if len(want.Files) == 0 {
		if err := fsys.Sync(); err != nil { // blocks freed since the last commit become free at the next
			add("sync: %v", err)
		}
		if free := fsys.Stats().FreeBytes; free != r.emptyFree {
			add("no file left but %d bytes free, want %d as in the empty image: %d bytes not freed",
				free, r.emptyFree, r.emptyFree-free)
		}
	}
	return problems
}

// reuse writes to a recovered image, closes it, opens it again and checks
// it: recovery must leave an image that works (free space, refcounts and
// counters reloaded correctly). It closes fsys.
func (r *Recording) reuse(fsys *reflinkfs.FS, img string, opt reflinkfs.Options, dev *device.Memory, want Snapshot, k int) []string {
	var problems []string
	data := make([]byte, 3*BlockSize+100)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	const name = "after-crash"
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err == nil {
		_, err = f.WriteAt(data, 0)
		if err == nil {
			err = f.Sync()
		}
		f.Close()
	}
	if err != nil {
		problems = append(problems, "writing to the recovered image: "+err.Error())
	}
	// Remove a file of the crash state too, so freed space is reused.
	want.Files = maps.Clone(want.Files)
	for _, p := range slices.Sorted(maps.Keys(want.Files)) {
		if err := fsys.Remove(p); err != nil {
			problems = append(problems, "removing a file of the recovered image: "+err.Error())
		}
		delete(want.Files, p)
		break
	}
	if err := fsys.Close(); err != nil {
		problems = append(problems, "closing the recovered image: "+err.Error())
	}
	if len(problems) > 0 {
		return problems
	}
	opt.Storage = &reflinkfs.Storage{Device: dev.Clone(), MetaFS: opt.Storage.MetaFS}
	fsys, err = reflinkfs.Open(img, opt)
	if err != nil {
		return []string{"reopening the recovered image: " + err.Error()}
	}
	defer fsys.Close()
	want.Files[name] = FileState{ID: -1, Data: data} // no history: not checked for stale blocks
	return r.verify(fsys, want, k, "after reuse: ")
}

// replayDir makes a new image directory for one replay: the marker file
// only (the lock file is created when the image is opened).
func (r *Recording) replayDir() (string, error) {
	marker, err := os.ReadFile(filepath.Join(r.dir, "reflinkfs-image"))
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(r.cfg.TempDir, "replay-")
	if err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "reflinkfs-image"), marker, 0o644)
}

// ReadState reads every directory and regular file of fsys into a Snapshot
// (file IDs unknown), with the problems met (unreadable files, other file
// types).
func ReadState(fsys *reflinkfs.FS) (Snapshot, []string) {
	s := Snapshot{Files: map[string]FileState{}, Dirs: map[string]bool{}}
	var problems []string
	walkImage(fsys, func(e walkEntry) {
		switch {
		case e.err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", e.path, e.err))
			if e.mode.IsRegular() {
				s.Files[e.path] = FileState{ID: -1, Data: e.data}
			}
		case e.mode.IsDir():
			s.Dirs[e.path] = true
		case e.mode.IsRegular():
			s.Files[e.path] = FileState{ID: -1, Data: e.data}
		default:
			problems = append(problems, fmt.Sprintf("%s: unexpected file type %v", e.path, e.mode.Type()))
		}
	})
	return s, problems
}

// walkEntry is one entry met by walkImage: data is a regular file's
// contents or a symlink's target; err the error reading it (or reading a
// directory, for which data is nil).
type walkEntry struct {
	path string
	mode fs.FileMode
	data []byte
	err  error
}

// walkImage visits every entry below the root, depth first, in name order.
// A directory met again below itself (a cycle) is reported as an error and
// not entered.
func walkImage(fsys *reflinkfs.FS, fn func(walkEntry)) {
	onPath := map[uint64]bool{reflinkfs.RootIno: true}
	var walk func(dir string)
	walk = func(dir string) {
		name := dir
		if name == "" {
			name = "."
		}
		ents, err := fsys.ReadDir(name)
		if err != nil {
			fn(walkEntry{path: name, mode: fs.ModeDir, err: fmt.Errorf("readdir: %w", err)})
			return
		}
		for _, e := range ents {
			p := e.Name()
			if dir != "" {
				p = dir + "/" + p
			}
			ent := walkEntry{path: p, mode: e.Type()}
			switch {
			case e.IsDir():
				info, err := e.Info()
				if err != nil {
					ent.err = err
					fn(ent)
					continue
				}
				ino := info.Sys().(*reflinkfs.Attr).Ino
				if onPath[ino] {
					ent.err = fmt.Errorf("directory cycle: inode %d is its own ancestor, and the engine showed it without an error", ino)
					fn(ent)
					continue
				}
				fn(ent)
				onPath[ino] = true
				walk(p)
				delete(onPath, ino)
				continue
			case e.Type().IsRegular():
				ent.data, ent.err = readFile(fsys, p)
			case e.Type()&fs.ModeSymlink != 0:
				var target string
				target, ent.err = fsys.Readlink(p)
				ent.data = []byte(target)
			}
			fn(ent)
		}
	}
	walk("")
}

func readFile(fsys *reflinkfs.FS, path string) ([]byte, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	a, err := f.Attr()
	if err != nil {
		return nil, err
	}
	data := make([]byte, a.Size)
	n, err := f.ReadAt(data, 0)
	if errors.Is(err, io.EOF) && int64(n) == a.Size {
		err = nil
	}
	if err == nil && int64(n) != a.Size {
		err = fmt.Errorf("read %d of %d bytes", n, a.Size)
	}
	if errors.Is(err, syscall.EIO) {
		return data[:n], fmt.Errorf("EIO: %w", err)
	}
	return data[:n], err
}
