// Package cache is the block cache of reflinkfs: one cache per image, keyed by
// physical block number, so two files that share a block share its cached
// frame whatever offsets they map it at.
//
// The cache owns a fixed arena of 4 KiB frames, mapped once (anonymous mmap,
// so every frame is 4096-byte aligned and O_DIRECT I/O can target it). Frames
// are statically partitioned among shards, each shard with its own mutex,
// index (block → frame), free list, dirty list, CLOCK hand and condition
// variable.
//
// Blocks are placed by chunk: the chunk of block b is b >> chunkShift, 64
// consecutive blocks (256 KiB) in any cache of at least 64 MiB, fewer in
// smaller ones so that every shard has room for at least 16 chunks (a shard
// evicts only its own frames, whatever mix of chunks hashes to it, and one
// chunk must not fill it). A chunk lives whole in shard hash(chunk); the hash
// spreads consecutive chunks over the shards. A shard's index maps each chunk
// that holds indexed frames to a bitmap of its blocks that have one and their
// frame ids, packed in block order (chunkIndex), so a sequential read takes
// one shard lock and one map lookup per chunk (GetRun, UnpinAll) instead of
// one per block.
//
// A frame is in exactly one of three states:
//
//   - free: on its shard's free list; unpinned, unindexed, no flags.
//   - indexed: the frame of its block in the block's chunk; either loading
//     (claimed by one loader that fills it and calls Loaded) or valid
//     (published).
//   - detached: unindexed but pinned (invalidated, or a failed load, while
//     somebody still held it); it returns to the free list on the last Unpin.
//
// Invariants (checked by the tests after every scenario):
//
//   - A block has at most one indexed frame, in shard hash(chunk(block)).
//   - A shard's index holds exactly the chunks with at least one indexed
//     frame, each listing exactly its indexed frames, in a piece of the
//     shard's id pool at most 4 times their number: an emptied chunk is
//     dropped and its number and piece reused, so the index is bounded by the
//     frames, not by the blocks ever seen.
//   - valid and loading are exclusive; dirty implies indexed.
//   - A pinned frame is never evicted or reused: its data belongs to its block
//     until the last Unpin.
//   - Dirty data leaves the cache only through a successful write (eviction
//     WriteBack or FlushDirty) or Invalidate. A frame is evicted only when
//     clean, unpinned, not loading and not being written.
//   - At most one write of a block's data is in flight (writeback flag);
//     eviction skips such frames, FlushDirty and Invalidate wait for them,
//     and a block invalidated during its write (retired) cannot be reserved
//     again until that write ends.
//     A write that raced with MarkDirty (dirty generation changed) leaves the
//     frame dirty.
//   - No cache lock is held while WriteBack or a FlushDirty write runs, and
//     shard locks never nest.
//   - The per-shard counters (resident, pinned, dirty, shared, per-file)
//     equal what a scan of the frames would count.
//
// Eviction is CLOCK with a weight: each access sets weight = min(1 + distinct
// readers, 8), the hand decrements and evicts at 0, so a block read by N files
// (whose eviction costs N future misses) survives about N sweeps.
package cache

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// FrameSize is the size of a cached block.
const FrameSize = 4096

// ErrNoFrames is returned by GetOrReserve when no frame can be evicted.
var ErrNoFrames = errors.New("cache: every frame is pinned")

const (
	minFrames          = 64
	minFramesPerShard  = 8
	defaultShards      = 16
	maxReaders         = 64 // distinct readers tracked exactly per frame
	maxWeight          = 8
	maxRun             = 256 // frames per FlushDirty write call
	defaultReserveWait = 100 * time.Millisecond
	mixer              = 0x9E3779B97F4A7C15 // odd; high bits of chunk*mixer spread consecutive chunks
	maxChunkShift      = 6                  // 64 blocks per chunk
	minChunksPerShard  = 16                 // chunks are made smaller until a shard has room for this many
)

// Config configures a Cache.
type Config struct {
	// Bytes is the arena size, rounded down to whole frames; at least 64
	// frames are allocated.
	Bytes int64
	// Shards is the number of shards, default 16, rounded down to a power of
	// two and reduced until every shard has at least 8 frames.
	Shards int
	// WriteBack writes a dirty frame's data to the device before the frame is
	// evicted. It is called with the frame pinned and no cache lock held; the
	// data slice must not be retained. nil means dirty frames are never
	// evicted.
	WriteBack func(block uint64, data []byte) error
	// ReserveWait bounds how long GetOrReserve waits for a frame to become
	// evictable before it returns ErrNoFrames. 0 means 100ms; negative means
	// do not wait.
	ReserveWait time.Duration
}

// Frame flags.
const (
	fIndexed   uint8 = 1 << iota // the frame of f.block in the shard's index
	fValid                       // data published by Loaded(f, nil)
	fLoading                     // claimed by a loader, data not yet valid
	fDirty                       // data newer than the device
	fWriteback                   // a write of the data is in flight
	fWriting                     // a writer holds BeginWrite
)

// Frame is one 4 KiB frame of the arena. Its methods may be used only while
// the caller holds a pin on it.
type Frame struct {
	data     []byte
	block    uint64
	gen      uint64   // dirty generation, bumped by every MarkDirty
	reader0  uint64   // first distinct reader
	more     []uint64 // further distinct readers, allocated on the second one
	pins     int32
	dirtyPos int32 // position in the shard's dirty list, if dirty
	id       int32 // position in the arena
	shard    uint32
	flags    uint8
	weight   uint8 // CLOCK weight
	readers  uint8 // distinct readers recorded, saturating at maxReaders
}

// Data is the frame's 4096 bytes, aligned to 4096 inside the arena.
func (f *Frame) Data() []byte { return f.data }

// Block is the physical block the frame holds.
func (f *Frame) Block() uint64 { return f.block }

// addReader records r among the frame's distinct readers and reports whether
// it was new.
func (f *Frame) addReader(r uint64) bool {
	if r == 0 {
		return false
	}
	if f.readers == 0 {
		f.reader0 = r
		f.readers = 1
		return true
	}
	if f.reader0 == r {
		return false
	}
	for _, x := range f.more {
		if x == r {
			return false
		}
	}
	if f.readers >= maxReaders {
		return false // saturated
	}
	f.more = append(f.more, r)
	f.readers++
	return true
}

// perFile is what the frame would cost a per-file page cache: max(1, readers).
func (f *Frame) perFile() int64 {
	return int64(max(1, f.readers))
}

func (f *Frame) touch() {
	f.weight = uint8(min(1+int(f.readers), maxWeight))
}

// reset returns a frame to the free state, keeping its readers slice for reuse.
func (f *Frame) reset() {
	f.flags = 0
	f.weight = 0
	f.readers = 0
	f.reader0 = 0
	f.more = f.more[:0]
}

type shard struct {
	mu        sync.Mutex
	cond      sync.Cond
	frames    []Frame // the whole arena's frames; ids below index it
	index     chunkIndex
	retired   map[uint64]int32 // block → detached frame whose write is still in flight
	dirty     *atomic.Int64    // the cache's count of dirty frames, shared by all shards
	lo, n     int32            // the shard's frames are [lo, lo+n)
	hand      int32            // CLOCK hand, relative to lo
	free      []int32
	dirtyList []int32
	waiters   int // goroutines in cond.Wait

	resident, pinned, shared, perFile   int64
	hits, misses, evictions, writeBacks int64

	_ [64]byte // keep neighbouring shards' hot fields off each other's cache lines
}

// Cache is a physical-block cache. All methods are safe for concurrent use.
type Cache struct {
	arena       []byte
	frames      []Frame
	shards      []shard
	chunkShift  uint // a chunk is 1<<chunkShift consecutive blocks
	shift       uint // shard = (block>>chunkShift)*mixer >> shift
	writeBack   func(block uint64, data []byte) error
	reserveWait time.Duration
	dirty       atomic.Int64 // dirty frames in all shards (read without locks)
}

// DirtyFrames is the number of dirty frames, read without taking any lock
// (for write throttling on the hot path; Stats is exact but locks every shard).
func (c *Cache) DirtyFrames() int64 { return c.dirty.Load() }

// Frames is the number of frames of the arena.
func (c *Cache) Frames() int64 { return int64(len(c.frames)) }

// New allocates the arena and returns an empty cache.
func New(cfg Config) (*Cache, error) {
	nframes := max(cfg.Bytes/FrameSize, minFrames)
	if nframes > 1<<31-1 {
		return nil, fmt.Errorf("cache: %d bytes is too large", cfg.Bytes)
	}
	nshards := cfg.Shards
	if nshards <= 0 {
		nshards = defaultShards
	}
	nshards = 1 << (bits.Len(uint(nshards)) - 1) // round down to a power of two
	for nshards > 1 && nframes/int64(nshards) < minFramesPerShard {
		nshards /= 2
	}
	perShard := nframes / int64(nshards) // the smallest shard's frames
	chunkShift := min(max(bits.Len64(uint64(perShard/minChunksPerShard))-1, 0), maxChunkShift)
	arena, err := unix.Mmap(-1, 0, int(nframes*FrameSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("cache: mapping %d byte arena: %w", nframes*FrameSize, err)
	}
	// Transparent huge pages for the arena (a hint; ignored where THP is
	// off): first touches fault 2 MiB at a time instead of 4 KiB, and the
	// kernel's copies out of frames pin fewer pages. Measured: cold reads
	// through the mount +17%. Memory still grows only as frames are used,
	// in 2 MiB steps.
	_ = unix.Madvise(arena, unix.MADV_HUGEPAGE)
	c := &Cache{
		arena:       arena,
		frames:      make([]Frame, nframes),
		shards:      make([]shard, nshards),
		chunkShift:  uint(chunkShift),
		shift:       uint(64 - bits.TrailingZeros(uint(nshards))),
		writeBack:   cfg.WriteBack,
		reserveWait: cfg.ReserveWait,
	}
	if c.reserveWait == 0 {
		c.reserveWait = defaultReserveWait
	}
	for i := range c.frames {
		c.frames[i].data = arena[i*FrameSize : (i+1)*FrameSize : (i+1)*FrameSize]
	}
	for k := range c.shards {
		s := &c.shards[k]
		lo := int64(k) * nframes / int64(nshards)
		hi := int64(k+1) * nframes / int64(nshards)
		s.lo, s.n = int32(lo), int32(hi-lo)
		s.cond.L = &s.mu
		s.frames = c.frames
		s.index = newChunkIndex(c.chunkShift, s.n)
		s.retired = make(map[uint64]int32)
		s.free = make([]int32, 0, s.n)
		s.dirtyList = make([]int32, 0, s.n)
		s.dirty = &c.dirty
		for i := hi - 1; i >= lo; i-- { // pop order = ascending frame order
			c.frames[i].id = int32(i)
			c.frames[i].shard = uint32(k)
			c.frames[i].dirtyPos = -1
			s.free = append(s.free, int32(i))
		}
	}
	return c, nil
}

// Close unmaps the arena. No other call may follow.
func (c *Cache) Close() error {
	if c.arena == nil {
		return nil
	}
	err := unix.Munmap(c.arena)
	c.arena = nil
	return err
}

func (c *Cache) shardFor(block uint64) *shard { return c.shardOfChunk(block >> c.chunkShift) }

func (c *Cache) shardOfChunk(key uint64) *shard { return &c.shards[(key*mixer)>>c.shift] }

func (c *Cache) shardOf(f *Frame) *shard { return &c.shards[f.shard] }

// Get returns the resident, valid frame for block, pinned, or nil on a miss.
// reader is an inode number (0 = not a file read, not recorded) added to the
// frame's distinct readers. If the block is being loaded, Get waits for the
// load; after a failed load it reports a miss.
func (c *Cache) Get(block, reader uint64) *Frame {
	s := c.shardFor(block)
	s.mu.Lock()
	for {
		i := s.index.lookup(block)
		if i < 0 {
			s.mu.Unlock()
			return nil
		}
		f := &c.frames[i]
		if f.flags&fLoading != 0 {
			s.wait()
			continue
		}
		s.hit(f, reader)
		s.mu.Unlock()
		return f
	}
}

// GetOrReserve returns the frame for block, pinned. loaded is true if it was
// resident and valid. Otherwise the frame is claimed in loading state: the
// caller fills f.Data() and calls Loaded(f, nil) to publish it (keeping its
// pin) or Loaded(f, err) to discard it. Concurrent lookups of a loading block
// wait for Loaded; after a failed load they retry. GetOrReserve returns
// ErrNoFrames if no frame of the block's shard becomes evictable within
// Config.ReserveWait.
//
// A caller holding loading frames must not wait on a block loaded by someone
// who may wait on one of them: reserve blocks in ascending order, and never
// look up a block the caller is itself loading (one physical block can
// appear twice in a file's range).
func (c *Cache) GetOrReserve(block, reader uint64) (f *Frame, loaded bool, err error) {
	s := c.shardFor(block)
	s.mu.Lock()
	var deadline time.Time
	for {
		if i := s.index.lookup(block); i >= 0 {
			f := &c.frames[i]
			if f.flags&fLoading != 0 {
				s.wait()
				continue
			}
			s.hit(f, reader)
			s.mu.Unlock()
			return f, true, nil
		}
		if _, ok := s.retired[block]; ok { // a new frame's write could overtake the old one's
			s.wait()
			continue
		}
		i, ok := s.popFree()
		if !ok {
			i, ok = c.evictLocked(s)
		}
		if ok {
			raced := s.index.lookup(block) >= 0 // loaded while evictLocked dropped the lock
			if _, retired := s.retired[block]; raced || retired {
				s.free = append(s.free, i)
				continue
			}
			f := &c.frames[i]
			f.block = block
			f.flags = fIndexed | fLoading
			f.addReader(reader)
			f.touch()
			s.index.insert(block, i)
			s.pin(f)
			s.misses++
			s.mu.Unlock()
			return f, false, nil
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(c.reserveWait)
		}
		if !s.waitUntil(deadline) {
			s.mu.Unlock()
			return nil, false, ErrNoFrames
		}
	}
}

// Loaded ends the load of a frame returned by GetOrReserve with loaded=false.
// With err == nil the frame becomes valid and the caller keeps its pin; with
// an error the frame is dropped and the caller's pin released.
func (c *Cache) Loaded(f *Frame, err error) {
	s := c.shardOf(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.flags&fLoading == 0 {
		panic("cache: Loaded on a frame that is not loading")
	}
	f.flags &^= fLoading
	if err == nil {
		if f.flags&fIndexed != 0 { // else invalidated meanwhile: stays detached until Unpin
			f.flags |= fValid
			s.resident++
			s.perFile += f.perFile()
			if f.readers >= 2 {
				s.shared++
			}
		}
	} else {
		if f.flags&fIndexed != 0 {
			s.unindex(f)
		}
		s.unpin(f)
	}
	s.wake()
}

// Unpin releases a pin taken by Get, GetOrReserve or a successful Loaded.
func (c *Cache) Unpin(f *Frame) {
	s := c.shardOf(f)
	s.mu.Lock()
	if f.pins == 1 && f.flags&fLoading != 0 {
		s.mu.Unlock()
		panic("cache: Unpin of a loading frame; call Loaded")
	}
	s.unpin(f)
	s.mu.Unlock()
}

// GetRun pins, in order, the resident valid frames of blocks first, first+1, ...
// into out, stopping at the first block that is not resident and valid
// (missing, loading or detached: GetRun never waits and never reserves) or
// after len(out) blocks. It returns how many it pinned: out[:n] are pinned
// and must each be released with Unpin or UnpinAll. reader is recorded as in
// Get (hit counters and distinct readers exactly as Get would).
//
// GetRun takes one shard lock and makes one index lookup per chunk it visits.
// It holds no lock between chunks and waits for nothing, so it may be called
// while holding any pins, including loading frames of the caller's own.
func (c *Cache) GetRun(first, reader uint64, out []*Frame) int {
	if rest := ^uint64(0) - first; uint64(len(out)) > rest { // the last block is ^0
		out = out[:rest+1]
	}
	n := 0
	for n < len(out) {
		b := first + uint64(n)
		key := b >> c.chunkShift
		s := c.shardOfChunk(key)
		s.mu.Lock()
		ch := s.index.find(key)
		if ch < 0 {
			s.mu.Unlock()
			return n
		}
		slot := s.index.slotOf(b)
		want := min(1<<c.chunkShift-slot, len(out)-n) // blocks of this chunk to pin
		has, ids := s.index.members(ch)
		k := rank(has, slot)
		pinned := 0
		for ; pinned < want && has>>(slot+pinned)&1 != 0; pinned++ {
			f := &c.frames[ids[k+pinned]]
			if f.flags&fValid == 0 { // loading
				break
			}
			s.hit(f, reader)
			out[n+pinned] = f
		}
		s.mu.Unlock()
		n += pinned
		if pinned < want {
			break
		}
	}
	return n
}

// UnpinAll releases one pin of each frame in fs, as Unpin does, taking each
// shard's lock once per maximal run of consecutive entries in the same shard.
func (c *Cache) UnpinAll(fs []*Frame) {
	for i := 0; i < len(fs); {
		k := fs[i].shard
		s := &c.shards[k]
		s.mu.Lock()
		woke := false
		for ; i < len(fs) && fs[i].shard == k; i++ {
			f := fs[i]
			if f.pins == 1 && f.flags&fLoading != 0 {
				s.mu.Unlock()
				panic("cache: Unpin of a loading frame; call Loaded")
			}
			if s.unpinQuiet(f) {
				woke = true
			}
		}
		if woke {
			s.wake()
		}
		s.mu.Unlock()
	}
}

// MarkDirty marks a pinned frame dirty. The caller guarantees nobody else
// writes the frame concurrently. A frame dropped by Invalidate stays clean:
// its block was freed.
func (c *Cache) MarkDirty(f *Frame) {
	s := c.shardOf(f)
	s.mu.Lock()
	s.markDirty(f)
	s.mu.Unlock()
}

// BeginWrite waits until no write-back of the pinned frame f is in flight and
// no other writer holds it, then keeps write-backs (FlushDirty, eviction) off
// the frame until EndWrite, so a device write never sees half-written data.
// Use it around modifications of a frame that may already be dirty. The
// caller must not call FlushDirty on f's block, or BeginWrite on f again,
// before EndWrite.
func (c *Cache) BeginWrite(f *Frame) {
	s := c.shardOf(f)
	s.mu.Lock()
	if f.pins == 0 {
		s.mu.Unlock()
		panic("cache: BeginWrite of an unpinned frame")
	}
	for f.flags&(fWriteback|fWriting) != 0 {
		s.wait()
	}
	f.flags |= fWriting
	s.mu.Unlock()
}

// EndWrite marks f dirty (as MarkDirty) and ends the exclusion of BeginWrite.
func (c *Cache) EndWrite(f *Frame) {
	s := c.shardOf(f)
	s.mu.Lock()
	if f.flags&fWriting == 0 {
		s.mu.Unlock()
		panic("cache: EndWrite without BeginWrite")
	}
	f.flags &^= fWriting
	s.markDirty(f)
	s.wake()
	s.mu.Unlock()
}

// Invalidate drops block from the cache, discarding dirty data without
// write-back (its block was freed). A pinned frame leaves the index at once
// (new lookups miss) and is reused after its last Unpin. If a write of the
// block's data is in flight, Invalidate waits for it, so stale data never
// reaches the device after Invalidate returns; meanwhile GetOrReserve of the
// block waits too, so a new frame's write cannot overtake the old one.
func (c *Cache) Invalidate(block uint64) {
	s := c.shardFor(block)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := s.index.lookup(block); i >= 0 {
		f := &c.frames[i]
		s.unindex(f)
		if f.pins == 0 {
			s.release(f)
		}
		if f.flags&fWriteback != 0 {
			s.retired[block] = i
		}
		s.wake() // lookups waiting on a loading frame must look again
	}
	for { // no new write of the block starts while it is retired
		if _, ok := s.retired[block]; !ok {
			return
		}
		s.wait()
	}
}

// FlushDirty writes back every dirty valid frame whose block is in
// [start, end), in ascending block order, calling write once per run of
// consecutive blocks (at most 256 frames), data[i] being the frame of block
// first+i; data must not be retained after write returns. Frames are pinned
// during the write and become clean afterwards unless re-dirtied meanwhile.
// On error the frames not yet written stay dirty and the error is returned.
// A frame whose write-back is already in flight is waited for, not written
// twice at once. Frames still loading are skipped.
func (c *Cache) FlushDirty(start, end uint64, write func(first uint64, data [][]byte) error) error {
	if start >= end {
		return nil
	}
	blocks := c.dirtyBlocks(start, end)
	var (
		first uint64
		run   = make([]*Frame, 0, min(len(blocks), maxRun))
		gens  = make([]uint64, 0, cap(run))
		data  = make([][]byte, 0, cap(run))
	)
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		err := write(first, data)
		for i, f := range run {
			s := c.shardOf(f)
			s.mu.Lock()
			s.endWriteback(f, gens[i], err == nil)
			s.mu.Unlock()
		}
		clear(data)
		run, gens, data = run[:0], gens[:0], data[:0]
		return err
	}
	for _, b := range blocks {
		if len(run) > 0 && (b != first+uint64(len(run)) || len(run) == maxRun) {
			if err := flush(); err != nil {
				return err
			}
		}
		s := c.shardFor(b)
		s.mu.Lock()
		for {
			i := s.index.lookup(b)
			if i < 0 {
				break
			}
			f := &c.frames[i]
			if f.flags&(fDirty|fLoading) != fDirty {
				break
			}
			if f.flags&(fWriteback|fWriting) != 0 {
				if len(run) > 0 { // never hold frames while waiting
					s.mu.Unlock()
					if err := flush(); err != nil {
						return err
					}
					s.mu.Lock()
				} else {
					s.wait()
				}
				continue
			}
			f.flags |= fWriteback
			s.pin(f)
			if len(run) == 0 {
				first = b
			}
			run = append(run, f)
			gens = append(gens, f.gen)
			data = append(data, f.data)
			break
		}
		s.mu.Unlock()
	}
	return flush()
}

// dirtyBlocks lists the dirty blocks in [start, end) in ascending order,
// probing the index chunk by chunk when the range spans fewer chunks than
// there are dirty frames and scanning the dirty lists otherwise.
func (c *Cache) dirtyBlocks(start, end uint64) []uint64 {
	var ndirty uint64
	for k := range c.shards {
		s := &c.shards[k]
		s.mu.Lock()
		ndirty += uint64(len(s.dirtyList))
		s.mu.Unlock()
	}
	var blocks []uint64
	firstKey, lastKey := start>>c.chunkShift, (end-1)>>c.chunkShift
	if lastKey-firstKey < ndirty {
		for key := firstKey; key <= lastKey; key++ {
			s := c.shardOfChunk(key)
			s.mu.Lock()
			if ch := s.index.find(key); ch >= 0 {
				has, ids := s.index.members(ch)
				for _, i := range ids { // in slot order: i is the frame of has's lowest set bit
					b := key<<c.chunkShift + uint64(bits.TrailingZeros64(has))
					has &= has - 1
					if b >= start && b < end && c.frames[i].flags&fDirty != 0 {
						blocks = append(blocks, b)
					}
				}
			}
			s.mu.Unlock()
		}
		return blocks
	}
	for k := range c.shards {
		s := &c.shards[k]
		s.mu.Lock()
		for _, i := range s.dirtyList {
			if b := c.frames[i].block; b >= start && b < end {
				blocks = append(blocks, b)
			}
		}
		s.mu.Unlock()
	}
	slices.Sort(blocks)
	return blocks
}

// Stats are cache counters; frame counts are a snapshot, event counts are
// totals since New.
type Stats struct {
	Frames, Resident, Dirty, Pinned int64 // counts of frames
	// Shared counts resident frames read by at least 2 distinct readers.
	Shared int64
	// PerFile is the sum over resident frames of max(1, distinct readers):
	// the frames a per-file page cache would hold for the same reads.
	PerFile int64
	// Hits and Misses count lookups that found a valid frame and
	// reservations; Evictions counts valid frames reclaimed for other blocks;
	// WriteBacks counts frames written successfully (eviction and FlushDirty).
	Hits, Misses, Evictions, WriteBacks int64
}

// Stats returns the cache's counters.
func (c *Cache) Stats() Stats {
	st := Stats{Frames: int64(len(c.frames))}
	for k := range c.shards {
		s := &c.shards[k]
		s.mu.Lock()
		st.Resident += s.resident
		st.Dirty += int64(len(s.dirtyList))
		st.Pinned += s.pinned
		st.Shared += s.shared
		st.PerFile += s.perFile
		st.Hits += s.hits
		st.Misses += s.misses
		st.Evictions += s.evictions
		st.WriteBacks += s.writeBacks
		s.mu.Unlock()
	}
	return st
}

// evictLocked reclaims one frame of s and returns it unindexed, unpinned and
// off the free list. It runs the CLOCK hand for at most a bounded number of
// steps, stopping early after a full turn without any evictable candidate.
// Called with s.mu held; drops it while writing back a dirty victim.
func (c *Cache) evictLocked(s *shard) (int32, bool) {
	n := int(s.n)
	budget := (maxWeight + 2) * n
	sawCandidate := false
	for step := 1; step <= budget; step++ {
		i := s.lo + s.hand
		if s.hand++; s.hand == s.n {
			s.hand = 0
		}
		f := &c.frames[i]
		if f.pins == 0 && f.flags&(fValid|fLoading|fWriteback|fWriting) == fValid {
			switch {
			case f.weight > 0:
				f.weight--
				sawCandidate = true
			case f.flags&fDirty == 0:
				c.evict(s, f)
				return i, true
			case c.writeBack != nil:
				block := f.block
				if c.writeBackLocked(s, f) {
					sawCandidate = true
				} else {
					f.weight = maxWeight // let other victims go first
				}
				if j, ok := s.popFree(); ok { // freed while unlocked
					return j, true
				}
				if f.pins == 0 && f.block == block && f.flags&(fValid|fLoading|fDirty|fWriteback|fWriting) == fValid {
					c.evict(s, f)
					return i, true
				}
			}
		}
		if step%n == 0 {
			if !sawCandidate {
				return -1, false
			}
			sawCandidate = false
		}
	}
	return -1, false
}

// writeBackLocked writes a dirty frame through Config.WriteBack with s.mu
// dropped and reports success. The frame is clean afterwards unless it was
// re-dirtied (or dropped) during the write.
func (c *Cache) writeBackLocked(s *shard, f *Frame) bool {
	f.flags |= fWriteback
	s.pin(f)
	gen, block := f.gen, f.block
	s.mu.Unlock()
	err := c.writeBack(block, f.data)
	s.mu.Lock()
	s.endWriteback(f, gen, err == nil)
	return err == nil
}

// endWriteback clears f's write-in-flight flag after a write that succeeded
// or not, cleaning f unless it was re-dirtied since gen, and drops the
// write's pin.
func (s *shard) endWriteback(f *Frame, gen uint64, ok bool) {
	f.flags &^= fWriteback
	if j, retired := s.retired[f.block]; retired && j == f.id {
		delete(s.retired, f.block)
	}
	if ok {
		s.writeBacks++
		if f.gen == gen && f.flags&fDirty != 0 {
			s.clearDirty(f)
		}
	}
	s.unpin(f)
	s.wake()
}

// evict unindexes a clean, unpinned valid frame and resets it for reuse.
func (c *Cache) evict(s *shard, f *Frame) {
	s.unindex(f)
	f.reset()
	s.evictions++
}

func (s *shard) hit(f *Frame, reader uint64) {
	s.pin(f)
	had := f.readers
	if f.addReader(reader) && had >= 1 {
		s.perFile++
		if had == 1 {
			s.shared++
		}
	}
	f.touch()
	s.hits++
}

func (s *shard) pin(f *Frame) {
	if f.pins == 0 {
		s.pinned++
	}
	f.pins++
}

// unpin drops a pin; a detached frame returns to the free list on its last.
func (s *shard) unpin(f *Frame) {
	if s.unpinQuiet(f) {
		s.wake()
	}
}

// unpinQuiet is unpin without the wake-up, which the caller owes if it
// reports that f became unpinned.
func (s *shard) unpinQuiet(f *Frame) bool {
	if f.pins <= 0 {
		panic("cache: Unpin of an unpinned frame")
	}
	f.pins--
	if f.pins > 0 {
		return false
	}
	s.pinned--
	if f.flags&fIndexed == 0 {
		s.release(f)
	}
	return true
}

// unindex removes f from the index; it becomes detached (or free, once the
// caller releases it) and loses its valid and dirty state. A loading frame
// keeps its loading flag: its loader still calls Loaded.
func (s *shard) unindex(f *Frame) {
	s.index.remove(f.block)
	if f.flags&fValid != 0 {
		s.resident--
		s.perFile -= f.perFile()
		if f.readers >= 2 {
			s.shared--
		}
	}
	if f.flags&fDirty != 0 {
		s.clearDirty(f)
	}
	f.flags &^= fIndexed | fValid
}

// release puts an unpinned, unindexed frame on the free list.
func (s *shard) release(f *Frame) {
	f.reset()
	s.free = append(s.free, f.id)
}

func (s *shard) markDirty(f *Frame) {
	if f.pins == 0 {
		panic("cache: MarkDirty of an unpinned frame")
	}
	f.gen++
	if f.flags&(fIndexed|fDirty) != fIndexed {
		return // already dirty, or detached: its block was freed
	}
	f.flags |= fDirty
	f.dirtyPos = int32(len(s.dirtyList))
	s.dirtyList = append(s.dirtyList, f.id)
	s.dirty.Add(1)
}

// clearDirty removes f from the dirty list by moving the last entry into its place.
func (s *shard) clearDirty(f *Frame) {
	last := len(s.dirtyList) - 1
	moved := s.dirtyList[last]
	s.dirtyList[f.dirtyPos] = moved
	s.frames[moved].dirtyPos = f.dirtyPos
	s.dirtyList = s.dirtyList[:last]
	f.dirtyPos = -1
	f.flags &^= fDirty
	s.dirty.Add(-1)
}

func (s *shard) popFree() (int32, bool) {
	n := len(s.free)
	if n == 0 {
		return -1, false
	}
	i := s.free[n-1]
	s.free = s.free[:n-1]
	return i, true
}

func (s *shard) wait() {
	s.waiters++
	s.cond.Wait()
	s.waiters--
}

// waitUntil waits for a wake-up or the deadline and reports whether the
// deadline had not yet passed.
func (s *shard) waitUntil(deadline time.Time) bool {
	d := time.Until(deadline)
	if d <= 0 {
		return false
	}
	t := time.AfterFunc(d, func() {
		s.mu.Lock() // so the broadcast cannot slip in before our Wait
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	s.wait()
	t.Stop()
	return true
}

func (s *shard) wake() {
	if s.waiters > 0 {
		s.cond.Broadcast()
	}
}
