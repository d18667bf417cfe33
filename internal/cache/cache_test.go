package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// fill writes the pattern of (block, version) into a frame's data.
func fill(data []byte, block, version uint64) {
	binary.LittleEndian.PutUint64(data[0:], block)
	binary.LittleEndian.PutUint64(data[8:], version)
	for i := 2; i < FrameSize/8; i++ {
		binary.LittleEndian.PutUint64(data[i*8:], word(block, version, i))
	}
}

func word(block, version uint64, i int) uint64 {
	return block*0x100000001b3 ^ version*0x9E3779B1 ^ uint64(i)<<40
}

// decode checks that data holds the pattern of some version of block and
// returns that version.
func decode(data []byte, block uint64) (uint64, error) {
	if len(data) != FrameSize {
		return 0, fmt.Errorf("frame of %d bytes", len(data))
	}
	if b := binary.LittleEndian.Uint64(data); b != block {
		return 0, fmt.Errorf("frame of block %d holds block %d", block, b)
	}
	v := binary.LittleEndian.Uint64(data[8:])
	for i := 2; i < FrameSize/8; i++ {
		if binary.LittleEndian.Uint64(data[i*8:]) != word(block, v, i) {
			return 0, fmt.Errorf("block %d version %d: word %d torn", block, v, i)
		}
	}
	return v, nil
}

func newCache(t testing.TB, cfg Config) *Cache {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// load returns block's frame pinned, loading it with version 0 on a miss.
func load(t testing.TB, c *Cache, block, reader uint64) *Frame {
	t.Helper()
	f, loaded, err := c.GetOrReserve(block, reader)
	if err != nil {
		t.Fatalf("GetOrReserve(%d): %v", block, err)
	}
	if !loaded {
		fill(f.Data(), block, 0)
		c.Loaded(f, nil)
	}
	return f
}

// dirty makes block resident and dirty with the given version, unpinned.
func dirty(t testing.TB, c *Cache, block, version uint64) {
	t.Helper()
	f := load(t, c, block, 0)
	fill(f.Data(), block, version)
	c.MarkDirty(f)
	c.Unpin(f)
}

func resident(c *Cache, block uint64) bool {
	s := c.shardFor(block)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.index.lookup(block) >= 0
}

func isDirty(c *Cache, block uint64) bool {
	s := c.shardFor(block)
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.index.lookup(block)
	return i >= 0 && c.frames[i].flags&fDirty != 0
}

// waitForWaiters spins until some goroutine waits on block's shard.
func waitForWaiters(c *Cache, block uint64) {
	s := c.shardFor(block)
	for {
		s.mu.Lock()
		n := s.waiters
		s.mu.Unlock()
		if n > 0 {
			return
		}
		runtime.Gosched()
	}
}

// checkInvariants recomputes every shard's state from its frames and compares
// it with the shard's lists and counters.
func checkInvariants(t testing.TB, c *Cache) {
	t.Helper()
	for k := range c.shards {
		c.shards[k].mu.Lock()
	}
	defer func() {
		for k := range c.shards {
			c.shards[k].mu.Unlock()
		}
	}()
	total := 0
	for k := range c.shards {
		s := &c.shards[k]
		total += int(s.n)
		inShard := func(i int32) bool { return i >= s.lo && i < s.lo+s.n }
		onFree := make(map[int32]bool)
		for _, i := range s.free {
			if !inShard(i) || onFree[i] {
				t.Errorf("shard %d: free list entry %d foreign or repeated", k, i)
				continue
			}
			onFree[i] = true
			if f := &c.frames[i]; f.pins != 0 || f.flags != 0 {
				t.Errorf("shard %d: free frame %d has pins %d flags %b", k, i, f.pins, f.flags)
			}
		}
		checkIndex(t, c, k)
		for b, i := range s.retired {
			if f := &c.frames[i]; !inShard(i) || f.block != b || f.flags&(fIndexed|fWriteback) != fWriteback {
				t.Errorf("shard %d: retired %d -> frame %d (block %d, flags %b) is not a detached frame being written", k, b, i, f.block, f.flags)
			}
		}
		var resident, pinned, shared, perFile, dirty int64
		for i := s.lo; i < s.lo+s.n; i++ {
			f := &c.frames[i]
			if f.id != i || f.shard != uint32(k) {
				t.Errorf("frame %d: id %d shard %d", i, f.id, f.shard)
			}
			indexed := f.flags&fIndexed != 0
			if j := s.index.lookup(f.block); indexed && j != i {
				t.Errorf("frame %d flagged indexed but index[%d] = %d", i, f.block, j)
			}
			if !indexed && f.pins == 0 && !onFree[i] {
				t.Errorf("frame %d leaked: unpinned, unindexed, not free (flags %b)", i, f.flags)
			}
			if f.flags&(fValid|fLoading) == fValid|fLoading || (indexed && f.flags&(fValid|fLoading) == 0) {
				t.Errorf("frame %d: bad flags %b", i, f.flags)
			}
			if f.flags&fDirty != 0 {
				dirty++
				if !indexed || int(f.dirtyPos) >= len(s.dirtyList) || s.dirtyList[f.dirtyPos] != i {
					t.Errorf("frame %d dirty but not listed (indexed %v, pos %d)", i, indexed, f.dirtyPos)
				}
			} else if f.dirtyPos != -1 {
				t.Errorf("frame %d clean with dirty position %d", i, f.dirtyPos)
			}
			if f.flags&fValid != 0 {
				if !indexed {
					t.Errorf("frame %d valid but not indexed", i)
				}
				resident++
				perFile += int64(max(1, f.readers))
				if f.readers >= 2 {
					shared++
				}
			}
			if f.pins < 0 {
				t.Errorf("frame %d: pins %d", i, f.pins)
			}
			if f.pins > 0 {
				pinned++
			}
			nr := len(f.more)
			if f.reader0 != 0 {
				nr++
			}
			if nr != int(f.readers) || f.readers > maxReaders || f.weight > maxWeight {
				t.Errorf("frame %d: readers %d (recorded %d), weight %d", i, f.readers, nr, f.weight)
			}
		}
		if int64(len(s.dirtyList)) != dirty || s.resident != resident || s.pinned != pinned || s.shared != shared || s.perFile != perFile {
			t.Errorf("shard %d counters: dirty %d/%d resident %d/%d pinned %d/%d shared %d/%d perFile %d/%d", k,
				len(s.dirtyList), dirty, s.resident, resident, s.pinned, pinned, s.shared, shared, s.perFile, perFile)
		}
	}
	if total != len(c.frames) {
		t.Errorf("shards cover %d of %d frames", total, len(c.frames))
	}
}

// checkIndex checks shard k's chunk index, its lock held: every indexed frame
// is in its block's chunk and every chunk member is an indexed frame of that
// block; no chunk in the map is empty, and each sits in a piece of the pool
// that fits it (at most 4 times its frames); every chunk number is either
// mapped or unused, and the pieces of the mapped chunks and the free pieces
// tile the pool exactly.
func checkIndex(t testing.TB, c *Cache, k int) {
	t.Helper()
	s := &c.shards[k]
	x := &s.index
	if x.shift != c.chunkShift || x.shift > maxChunkShift || len(x.recs) > int(s.n) {
		t.Errorf("shard %d: chunk shift %d (cache %d), %d chunk numbers for %d frames", k, x.shift, c.chunkShift, len(x.recs), s.n)
		return
	}
	pieces := make([]byte, len(x.pool)) // 1 a chunk's, 2 free
	piece := func(at int32, class uint8, owner byte) bool {
		if at < 0 || int(at)+1<<class > len(x.pool) || class > uint8(x.shift) {
			t.Errorf("shard %d: piece at %d of class %d outside a pool of %d", k, at, class, len(x.pool))
			return false
		}
		for i := range 1 << class {
			if pieces[int(at)+i] != 0 {
				t.Errorf("shard %d: pieces overlap at %d", k, int(at)+i)
				return false
			}
			pieces[int(at)+i] = owner
		}
		return true
	}
	owner := make([]byte, len(x.recs)) // 1 mapped, 2 unused
	indexed := 0
	for key, ch := range x.chunks {
		if ch < 0 || int(ch) >= len(x.recs) || owner[ch] != 0 {
			t.Errorf("shard %d: chunk %d -> number %d out of range or repeated", k, key, ch)
			continue
		}
		owner[ch] = 1
		if c.shardOfChunk(key) != s {
			t.Errorf("shard %d: chunk %d belongs to another shard", k, key)
		}
		r := x.recs[ch]
		n := bits.OnesCount64(r.bits)
		if n == 0 || n > 1<<r.class || (r.class > 0 && n <= 1<<r.class/4) || (x.shift < 6 && r.bits>>(1<<x.shift) != 0) {
			t.Errorf("shard %d: chunk %d has frames %b in a piece of class %d", k, key, r.bits, r.class)
			continue
		}
		if !piece(r.at, r.class, 1) {
			continue
		}
		has, ids := x.members(ch)
		for _, i := range ids {
			b := key<<x.shift + uint64(bits.TrailingZeros64(has))
			has &= has - 1
			if i < s.lo || i >= s.lo+s.n || c.frames[i].block != b || c.frames[i].flags&fIndexed == 0 || c.shardFor(b) != s {
				t.Errorf("shard %d: index %d -> frame %d inconsistent", k, b, i)
			}
		}
		for j := int(r.at) + n; j < int(r.at)+1<<r.class; j++ {
			if x.pool[j] != -1 {
				t.Errorf("shard %d: chunk %d: spare id %d in its piece", k, key, x.pool[j])
			}
		}
		indexed += n
	}
	for _, ch := range x.unused {
		if ch < 0 || int(ch) >= len(x.recs) || owner[ch] != 0 {
			t.Errorf("shard %d: unused chunk number %d out of range, mapped or repeated", k, ch)
			continue
		}
		owner[ch] = 2
		if x.recs[ch] != (chunk{}) {
			t.Errorf("shard %d: unused chunk number %d not blank: %+v", k, ch, x.recs[ch])
		}
	}
	if i := slices.Index(owner, 0); i >= 0 {
		t.Errorf("shard %d: chunk number %d neither mapped nor unused", k, i)
	}
	for class, free := range x.free {
		for _, at := range free {
			if piece(at, uint8(class), 2) && slices.ContainsFunc(x.pool[at:int(at)+1<<class], func(i int32) bool { return i != -1 }) {
				t.Errorf("shard %d: free piece at %d holds ids", k, at)
			}
		}
	}
	if i := slices.Index(pieces, 0); i >= 0 {
		t.Errorf("shard %d: pool entry %d in no piece", k, i)
	}
	if x.last >= 0 {
		if ch, ok := x.chunks[x.lastKey]; !ok || ch != x.last {
			t.Errorf("shard %d: remembered chunk %d -> %d, map has %d, %v", k, x.lastKey, x.last, ch, ok)
		}
	}
	n := 0
	for i := s.lo; i < s.lo+s.n; i++ {
		if c.frames[i].flags&fIndexed != 0 {
			n++
		}
	}
	if n != indexed {
		t.Errorf("shard %d: %d frames flagged indexed, %d in the index", k, n, indexed)
	}
}

func TestNewSizesAndAlignment(t *testing.T) {
	for _, tc := range []struct {
		bytes                int64
		shards               int
		wantFrames, wantShds int
	}{
		{0, 0, 64, 8},
		{1 << 20, 0, 256, 16},
		{1<<20 + 4095, 12, 256, 8},
		{1 << 20, 1, 256, 1},
		{100 * 4096, 64, 100, 8},
	} {
		c := newCache(t, Config{Bytes: tc.bytes, Shards: tc.shards})
		if len(c.frames) != tc.wantFrames || len(c.shards) != tc.wantShds {
			t.Errorf("Bytes %d Shards %d: %d frames in %d shards, want %d in %d",
				tc.bytes, tc.shards, len(c.frames), len(c.shards), tc.wantFrames, tc.wantShds)
		}
		if got := c.Stats().Frames; got != int64(tc.wantFrames) {
			t.Errorf("Stats.Frames = %d", got)
		}
		checkInvariants(t, c)
	}

	c := newCache(t, Config{Bytes: 128 * FrameSize})
	base := uintptr(unsafe.Pointer(&c.arena[0]))
	if base%FrameSize != 0 {
		t.Fatalf("arena at %#x", base)
	}
	seen := make(map[uintptr]bool)
	for i := range c.frames {
		d := c.frames[i].Data()
		p := uintptr(unsafe.Pointer(&d[0]))
		if len(d) != FrameSize || cap(d) != FrameSize || p%FrameSize != 0 || p < base || p+FrameSize > base+uintptr(len(c.arena)) || seen[p] {
			t.Fatalf("frame %d at %#x len %d cap %d (arena %#x+%d)", i, p, len(d), cap(d), base, len(c.arena))
		}
		seen[p] = true
	}
	for b := uint64(0); b < 1000; b++ { // every frame handed out is one of those
		f := load(t, c, b, 0)
		if p := uintptr(unsafe.Pointer(&f.Data()[0])); !seen[p] || f.Block() != b {
			t.Fatalf("block %d: frame at %#x, Block() = %d", b, p, f.Block())
		}
		c.Unpin(f)
	}
	checkInvariants(t, c)
}

func TestHitMissReserveLoaded(t *testing.T) {
	c := newCache(t, Config{})
	if f := c.Get(7, 1); f != nil {
		t.Fatal("Get on an empty cache hit")
	}
	f, loaded, err := c.GetOrReserve(7, 1)
	if err != nil || loaded {
		t.Fatalf("GetOrReserve = %v, %v", loaded, err)
	}
	if st := c.Stats(); st.Misses != 1 || st.Resident != 0 || st.Pinned != 1 {
		t.Fatalf("while loading: %+v", st)
	}
	fill(f.Data(), 7, 3)
	c.Loaded(f, nil)
	c.Unpin(f)

	g := c.Get(7, 2)
	if g != f {
		t.Fatal("Get after Loaded missed or returned another frame")
	}
	if v, err := decode(g.Data(), 7); err != nil || v != 3 {
		t.Fatalf("data: version %d, %v", v, err)
	}
	h, loaded, err := c.GetOrReserve(7, 1)
	if err != nil || !loaded || h != f {
		t.Fatalf("second GetOrReserve = %p %v %v", h, loaded, err)
	}
	if st := c.Stats(); st.Hits != 2 || st.Misses != 1 || st.Pinned != 1 || st.Resident != 1 {
		t.Fatalf("stats %+v", st)
	}
	c.Unpin(g)
	c.Unpin(h)
	if st := c.Stats(); st.Pinned != 0 {
		t.Fatalf("pinned %d after unpinning", st.Pinned)
	}
	checkInvariants(t, c)
}

func TestGetWaitsForLoad(t *testing.T) {
	c := newCache(t, Config{})
	f, _, err := c.GetOrReserve(5, 1)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Frame)
	go func() { got <- c.Get(5, 2) }()
	waitForWaiters(c, 5)
	fill(f.Data(), 5, 9)
	c.Loaded(f, nil)
	g := <-got
	if g != f {
		t.Fatal("waiting Get did not return the loaded frame")
	}
	if v, err := decode(g.Data(), 5); err != nil || v != 9 {
		t.Fatalf("version %d, %v", v, err)
	}
	c.Unpin(g)
	c.Unpin(f)
	checkInvariants(t, c)
}

func TestFailedLoadThenRetry(t *testing.T) {
	c := newCache(t, Config{})
	f, _, err := c.GetOrReserve(5, 1)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		f      *Frame
		loaded bool
		err    error
	}
	second := make(chan result)
	getter := make(chan *Frame)
	go func() {
		g, loaded, err := c.GetOrReserve(5, 2)
		second <- result{g, loaded, err}
	}()
	go func() { getter <- c.Get(5, 3) }()
	for {
		s := c.shardFor(5)
		s.mu.Lock()
		n := s.waiters
		s.mu.Unlock()
		if n == 2 {
			break
		}
		runtime.Gosched()
	}
	c.Loaded(f, errors.New("read error"))
	r := <-second
	if r.err != nil || r.loaded {
		t.Fatalf("after failed load: loaded %v err %v, want to become the loader", r.loaded, r.err)
	}
	if st := c.Stats(); st.Misses != 2 || st.Resident != 0 {
		t.Fatalf("stats %+v", st)
	}
	fill(r.f.Data(), 5, 1)
	c.Loaded(r.f, nil)
	c.Unpin(r.f)
	// The waiting Get looked again either before the retry was reserved
	// (a miss) or after (then it waited for the retried load).
	if g := <-getter; g != nil {
		if g != r.f {
			t.Fatal("Get after a failed load returned a stale frame")
		}
		c.Unpin(g)
	}
	if g := c.Get(5, 0); g == nil {
		t.Fatal("retried load not resident")
	} else {
		c.Unpin(g)
	}
	checkInvariants(t, c)
}

func TestInvalidate(t *testing.T) {
	var writes atomic.Int64
	write := func(uint64, [][]byte) error { writes.Add(1); return nil }

	t.Run("unpinned", func(t *testing.T) {
		c := newCache(t, Config{})
		c.Unpin(load(t, c, 5, 1))
		c.Invalidate(5)
		if resident(c, 5) || c.Stats().Resident != 0 {
			t.Fatal("invalidated block still resident")
		}
		c.Invalidate(5) // absent: no-op
		checkInvariants(t, c)
	})
	t.Run("pinned", func(t *testing.T) {
		c := newCache(t, Config{})
		f := load(t, c, 5, 1)
		fill(f.Data(), 5, 4)
		c.Invalidate(5)
		if g := c.Get(5, 1); g != nil {
			t.Fatal("Get hit an invalidated pinned block")
		}
		g, loaded, err := c.GetOrReserve(5, 1)
		if err != nil || loaded || g == f {
			t.Fatalf("GetOrReserve after Invalidate: same frame %v, loaded %v, %v", g == f, loaded, err)
		}
		if v, err := decode(f.Data(), 5); err != nil || v != 4 {
			t.Fatalf("holder's data changed: %d, %v", v, err)
		}
		c.MarkDirty(f) // block freed: stays clean
		if st := c.Stats(); st.Dirty != 0 || st.Pinned != 2 {
			t.Fatalf("stats %+v", st)
		}
		checkInvariants(t, c)
		c.Unpin(f)
		fill(g.Data(), 5, 0)
		c.Loaded(g, nil)
		c.Unpin(g)
		checkInvariants(t, c)
		if st := c.Stats(); st.Resident != 1 || st.Pinned != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("dirty", func(t *testing.T) {
		c := newCache(t, Config{})
		dirty(t, c, 6, 1)
		c.Invalidate(6)
		writes.Store(0)
		if err := c.FlushDirty(0, 100, write); err != nil || writes.Load() != 0 {
			t.Fatalf("FlushDirty after Invalidate wrote %d runs, %v", writes.Load(), err)
		}
		if st := c.Stats(); st.Dirty != 0 {
			t.Fatalf("stats %+v", st)
		}
		checkInvariants(t, c)
	})
	t.Run("loading", func(t *testing.T) {
		c := newCache(t, Config{})
		f, _, err := c.GetOrReserve(7, 1)
		if err != nil {
			t.Fatal(err)
		}
		c.Invalidate(7)
		checkInvariants(t, c)
		c.Loaded(f, nil)
		if resident(c, 7) {
			t.Fatal("load of an invalidated block was published")
		}
		c.Unpin(f)
		checkInvariants(t, c)
		if st := c.Stats(); st.Resident != 0 || st.Pinned != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

type writeBackLog struct {
	mu      sync.Mutex
	blocks  []uint64
	fail    map[uint64]bool
	failAll bool
}

func (l *writeBackLog) writeBack(t *testing.T) func(uint64, []byte) error {
	return func(block uint64, data []byte) error {
		if v, err := decode(data, block); err != nil || v != block+100 {
			t.Errorf("WriteBack(%d): version %d, %v", block, v, err)
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.failAll || l.fail[block] {
			return errors.New("device error")
		}
		l.blocks = append(l.blocks, block)
		return nil
	}
}

func TestEvictionWriteBack(t *testing.T) {
	log := &writeBackLog{fail: map[uint64]bool{1: true}}
	c := newCache(t, Config{Shards: 1, WriteBack: log.writeBack(t), ReserveWait: -1})
	for b := uint64(0); b < 64; b++ {
		dirty(t, c, b, b+100)
	}
	// Every frame has weight 1: the first turn of the hand clears it and the
	// second evicts frame 0 (block 0) after writing it back.
	dirty(t, c, 1000, 1100)
	if !slices.Equal(log.blocks, []uint64{0}) || resident(c, 0) {
		t.Fatalf("write-backs %v, block 0 resident %v", log.blocks, resident(c, 0))
	}
	// Block 1's write-back fails: it stays resident and dirty, block 2 goes.
	dirty(t, c, 1001, 1101)
	if !slices.Equal(log.blocks, []uint64{0, 2}) || !isDirty(c, 1) || resident(c, 2) {
		t.Fatalf("write-backs %v, block 1 dirty %v, block 2 resident %v", log.blocks, isDirty(c, 1), resident(c, 2))
	}
	if st := c.Stats(); st.WriteBacks != 2 || st.Evictions != 2 || st.Dirty != 64 {
		t.Fatalf("stats %+v", st)
	}
	checkInvariants(t, c)

	// With every write-back failing, nothing can be evicted and nothing is lost.
	log.failAll = true
	if _, _, err := c.GetOrReserve(2000, 0); !errors.Is(err, ErrNoFrames) {
		t.Fatalf("GetOrReserve with failing write-backs: %v", err)
	}
	if st := c.Stats(); st.Resident != 64 || st.Dirty != 64 {
		t.Fatalf("stats %+v", st)
	}
	checkInvariants(t, c)
}

func TestDirtyNeverEvictedWithoutWriteBack(t *testing.T) {
	c := newCache(t, Config{Shards: 1, ReserveWait: -1})
	for b := uint64(0); b < 64; b++ {
		dirty(t, c, b, b+100)
	}
	if _, _, err := c.GetOrReserve(1000, 0); !errors.Is(err, ErrNoFrames) {
		t.Fatalf("GetOrReserve with every frame dirty and no WriteBack: %v", err)
	}
	// Flushing makes them evictable.
	if err := c.FlushDirty(0, 64, func(uint64, [][]byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	c.Unpin(load(t, c, 1000, 0))
	checkInvariants(t, c)
}

func TestErrNoFrames(t *testing.T) {
	c := newCache(t, Config{Shards: 1, ReserveWait: 20 * time.Millisecond})
	var pinned []*Frame
	for b := uint64(0); b < 63; b++ {
		pinned = append(pinned, load(t, c, b, 0))
	}
	loading, _, err := c.GetOrReserve(63, 0) // loading frames cannot be evicted either
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, _, err := c.GetOrReserve(100, 0); !errors.Is(err, ErrNoFrames) {
		t.Fatalf("GetOrReserve with every frame pinned: %v", err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("gave up after %v, before ReserveWait", d)
	}
	c.Loaded(loading, nil)
	pinned = append(pinned, loading)

	// A waiting reservation gets the first frame unpinned.
	c.reserveWait = time.Minute
	got := make(chan error)
	go func() {
		f, loaded, err := c.GetOrReserve(100, 0)
		if err == nil {
			if loaded {
				err = errors.New("reported loaded")
			}
			c.Loaded(f, nil)
			c.Unpin(f)
		}
		got <- err
	}()
	waitForWaiters(c, 100)
	c.Unpin(pinned[10])
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if resident(c, 10) || !resident(c, 100) {
		t.Fatal("the unpinned frame was not the one reused")
	}
	for i, f := range pinned {
		if i != 10 {
			c.Unpin(f)
		}
	}
	checkInvariants(t, c)
}

// flushLog records FlushDirty write calls, checking each frame's data.
type flushLog struct {
	t     *testing.T
	mu    sync.Mutex
	runs  [][2]uint64 // first, length
	fail  func(first uint64) bool
	calls int
}

func (l *flushLog) write(first uint64, data [][]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	for i, d := range data {
		if v, err := decode(d, first+uint64(i)); err != nil || v != first+uint64(i)+100 {
			l.t.Errorf("run at %d frame %d: version %d, %v", first, i, v, err)
		}
	}
	if l.fail != nil && l.fail(first) {
		return errors.New("device error")
	}
	l.runs = append(l.runs, [2]uint64{first, uint64(len(data))})
	return nil
}

func TestFlushDirtyRuns(t *testing.T) {
	for _, extra := range []bool{false, true} { // scan the dirty lists, or probe the range
		t.Run(fmt.Sprintf("extra=%v", extra), func(t *testing.T) {
			c := newCache(t, Config{Bytes: 1024 * FrameSize})
			want := []uint64{1, 2, 3, 5}
			for b := uint64(10); b < 310; b++ {
				want = append(want, b)
			}
			want = append(want, 400)
			if extra {
				for b := uint64(500); b < 900; b++ {
					want = append(want, b)
				}
			}
			for _, b := range want {
				dirty(t, c, b, b+100)
			}
			c.Unpin(load(t, c, 4, 0)) // resident but clean: not written, splits a run
			ndirty := c.Stats().Dirty
			log := &flushLog{t: t}
			if err := c.FlushDirty(2, 400, log.write); err != nil {
				t.Fatal(err)
			}
			wantRuns := [][2]uint64{{2, 2}, {5, 1}, {10, 256}, {266, 44}}
			if !slices.Equal(log.runs, wantRuns) {
				t.Fatalf("runs %v, want %v", log.runs, wantRuns)
			}
			if !isDirty(c, 1) || !isDirty(c, 400) || isDirty(c, 2) || isDirty(c, 309) {
				t.Fatal("wrong frames left dirty")
			}
			if st := c.Stats(); st.Dirty != ndirty-303 || st.WriteBacks != 303 || st.Pinned != 0 {
				t.Fatalf("stats %+v", st)
			}
			checkInvariants(t, c)
		})
	}
}

func TestFlushDirtyRedirty(t *testing.T) {
	c := newCache(t, Config{})
	for b := uint64(1); b <= 3; b++ {
		dirty(t, c, b, b+100)
	}
	held := load(t, c, 2, 0)
	log := &flushLog{t: t}
	err := c.FlushDirty(0, 10, func(first uint64, data [][]byte) error {
		c.MarkDirty(held) // a writer re-dirties block 2 while it is written
		return log.write(first, data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if isDirty(c, 1) || !isDirty(c, 2) || isDirty(c, 3) {
		t.Fatalf("dirty after flush: 1 %v, 2 %v, 3 %v", isDirty(c, 1), isDirty(c, 2), isDirty(c, 3))
	}
	c.Unpin(held)
	log.runs = nil
	if err := c.FlushDirty(0, 10, log.write); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(log.runs, [][2]uint64{{2, 1}}) || isDirty(c, 2) {
		t.Fatalf("second flush runs %v", log.runs)
	}
	checkInvariants(t, c)
}

func TestFlushDirtyError(t *testing.T) {
	c := newCache(t, Config{})
	for _, b := range []uint64{1, 2, 10, 11, 20} {
		dirty(t, c, b, b+100)
	}
	log := &flushLog{t: t, fail: func(first uint64) bool { return first == 10 }}
	err := c.FlushDirty(0, 100, log.write)
	if err == nil || err.Error() != "device error" {
		t.Fatalf("FlushDirty = %v", err)
	}
	if isDirty(c, 1) || isDirty(c, 2) || !isDirty(c, 10) || !isDirty(c, 11) || !isDirty(c, 20) {
		t.Fatal("wrong dirty set after a failed flush")
	}
	if st := c.Stats(); st.WriteBacks != 2 || st.Pinned != 0 {
		t.Fatalf("stats %+v", st)
	}
	checkInvariants(t, c)
}

// FlushDirty must wait for an eviction write-back of the same frame instead
// of writing it a second time concurrently.
func TestFlushDirtyWaitsForEvictionWriteBack(t *testing.T) {
	release := make(chan struct{})
	var inFlight, evictionWrites, flushWrites atomic.Int32
	c := newCache(t, Config{Shards: 1, WriteBack: func(block uint64, data []byte) error {
		if inFlight.Add(1) != 1 {
			t.Error("concurrent writes of one frame")
		}
		evictionWrites.Add(1)
		<-release
		inFlight.Add(-1)
		return nil
	}})
	dirty(t, c, 0, 100)
	for b := uint64(1); b < 64; b++ {
		c.Unpin(load(t, c, b, 0))
	}
	c.Unpin(load(t, c, 0, 0)) // weight 1 like the others; frame 0 is the first victim
	evicted := make(chan error)
	go func() {
		f, _, err := c.GetOrReserve(1000, 0)
		if err == nil {
			c.Loaded(f, nil)
			c.Unpin(f)
		}
		evicted <- err
	}()
	for evictionWrites.Load() == 0 {
		runtime.Gosched()
	}
	flushed := make(chan error)
	go func() {
		flushed <- c.FlushDirty(0, 1, func(uint64, [][]byte) error {
			if inFlight.Add(1) != 1 {
				t.Error("concurrent writes of one frame")
			}
			flushWrites.Add(1)
			inFlight.Add(-1)
			return nil
		})
	}()
	waitForWaiters(c, 0)
	close(release)
	if err := <-evicted; err != nil {
		t.Fatal(err)
	}
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if evictionWrites.Load() != 1 || flushWrites.Load() != 0 || resident(c, 0) {
		t.Fatalf("eviction writes %d, flush writes %d, block 0 resident %v", evictionWrites.Load(), flushWrites.Load(), resident(c, 0))
	}
	checkInvariants(t, c)
}

// Invalidate of a block whose eviction write-back is in flight returns only
// after the write, and a new reservation of the block waits for it too, so
// the stale write cannot land after the new frame's.
func TestInvalidateDuringWriteBack(t *testing.T) {
	release := make(chan struct{})
	var released atomic.Bool
	var writes atomic.Int32
	c := newCache(t, Config{Shards: 1, WriteBack: func(block uint64, data []byte) error {
		writes.Add(1)
		<-release
		return nil
	}})
	dirty(t, c, 0, 100)
	for b := uint64(1); b < 64; b++ {
		c.Unpin(load(t, c, b, 0))
	}
	c.Unpin(load(t, c, 0, 0))
	done := make(chan string, 4)
	go func() {
		f, _, err := c.GetOrReserve(1000, 0) // evicts block 0, writing it back
		if err != nil {
			t.Error(err)
		} else {
			c.Loaded(f, nil)
			c.Unpin(f)
		}
		done <- "evict"
	}()
	for writes.Load() == 0 {
		runtime.Gosched()
	}
	invalidate := func() {
		c.Invalidate(0)
		if !released.Load() {
			t.Error("Invalidate returned while the write was in flight")
		}
		done <- "invalidate"
	}
	go invalidate()
	waitForWaiters(c, 0)
	if resident(c, 0) {
		t.Fatal("invalidated block still indexed")
	}
	go func() {
		f, loaded, err := c.GetOrReserve(0, 0)
		if !released.Load() {
			t.Error("block reserved again while its old write was in flight")
		}
		if err != nil || loaded {
			t.Errorf("GetOrReserve after Invalidate: loaded %v, %v", loaded, err)
		} else {
			c.Loaded(f, nil)
			c.Unpin(f)
		}
		done <- "reserve"
	}()
	for {
		s := c.shardFor(0)
		s.mu.Lock()
		n := s.waiters
		s.mu.Unlock()
		if n == 2 {
			break
		}
		runtime.Gosched()
	}
	go invalidate() // a second Invalidate of the retired block waits too
	for {
		s := c.shardFor(0)
		s.mu.Lock()
		n := s.waiters
		s.mu.Unlock()
		if n == 3 {
			break
		}
		runtime.Gosched()
	}
	released.Store(true)
	close(release)
	for range 4 {
		<-done
	}
	if writes.Load() != 1 {
		t.Fatalf("%d write-backs, want 1", writes.Load())
	}
	checkInvariants(t, c)
}

// A block read by four files outlives blocks read by one under the same
// pressure; with a single reader it goes with them.
func TestSharingAwareEviction(t *testing.T) {
	for _, readers := range []uint64{4, 1} {
		c := newCache(t, Config{Shards: 1})
		for r := uint64(1); r <= readers; r++ {
			c.Unpin(load(t, c, 1000, r))
		}
		c.Unpin(load(t, c, 1001, 1))
		c.Unpin(load(t, c, 1002, 0))
		for b := uint64(0); b < 61; b++ {
			c.Unpin(load(t, c, b, 9))
		}
		// Stream one cache-full of new blocks, each read once.
		for b := uint64(2000); b < 2063; b++ {
			c.Unpin(load(t, c, b, 9))
		}
		if readers == 1 {
			if resident(c, 1000) {
				t.Fatal("block read by one reader survived the stream")
			}
			continue
		}
		for b := uint64(0); b < 61; b++ {
			if resident(c, b) {
				t.Fatalf("unshared block %d survived the stream", b)
			}
		}
		if resident(c, 1001) || resident(c, 1002) {
			t.Fatal("unshared blocks 1001/1002 survived the stream")
		}
		if !resident(c, 1000) {
			t.Fatal("block read by 4 readers was evicted")
		}
		checkInvariants(t, c)
	}
}

func TestStatsSharing(t *testing.T) {
	c := newCache(t, Config{})
	read := func(block, reader uint64) { c.Unpin(load(t, c, block, reader)) }
	read(10, 1)
	read(10, 2)
	read(10, 3)
	read(10, 2) // repeat: not a new reader
	read(11, 1)
	read(11, 1)
	read(12, 0) // not a file read
	read(13, 5)
	read(13, 6)
	f, _, err := c.GetOrReserve(14, 7) // loading: not resident yet
	if err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Resident != 4 || st.Shared != 2 || st.PerFile != 3+1+1+2 || st.Hits != 5 || st.Misses != 5 {
		t.Fatalf("stats %+v", st)
	}
	c.Loaded(f, nil)
	c.Unpin(f)
	read(14, 8)
	if st := c.Stats(); st.Resident != 5 || st.Shared != 3 || st.PerFile != 9 {
		t.Fatalf("stats after loading 14: %+v", st)
	}
	c.Invalidate(10)
	if st := c.Stats(); st.Resident != 4 || st.Shared != 2 || st.PerFile != 6 {
		t.Fatalf("stats after invalidating 10: %+v", st)
	}
	// Exact up to 64 readers, saturating beyond.
	for r := uint64(1); r <= 100; r++ {
		read(20, r)
	}
	if st := c.Stats(); st.PerFile != 6+64 || st.Shared != 3 {
		t.Fatalf("stats after 100 readers: %+v", st)
	}
	checkInvariants(t, c)
}

// TestConcurrentStress runs readers, writers, flushers and invalidators over
// an overlapping block range of a small cache. Every frame seen must hold a
// whole pattern of its own block. Blocks below invalidRange may be
// invalidated (losing writes); for the others the test also checks that no
// write is ever lost: a load finds the latest version on the device, readers
// see the latest version, and a final flush leaves the device up to date.
func TestConcurrentStress(t *testing.T) {
	const (
		nblocks      = 160
		invalidRange = 16
		workers      = 8
	)
	ops := 3000
	if testing.Short() {
		ops = 500
	}
	var (
		devMu    sync.Mutex
		dev      [nblocks]uint64 // version on the device
		inFlight [nblocks]bool
		ver      [nblocks]atomic.Uint64 // latest version written into the cache
		locks    [nblocks]sync.RWMutex  // test-side reader/writer exclusion on frame data
		injected atomic.Bool            // device errors on
	)
	storeVersion := func(block uint64, data []byte, ok bool) {
		v, err := decode(data, block)
		if err != nil {
			t.Errorf("device write: %v", err)
			return
		}
		devMu.Lock()
		defer devMu.Unlock()
		if ok {
			if block >= invalidRange && v < dev[block] {
				t.Errorf("block %d: device version went back from %d to %d", block, dev[block], v)
			}
			dev[block] = v
		}
	}
	begin := func(block uint64) {
		devMu.Lock()
		defer devMu.Unlock()
		if inFlight[block] {
			t.Errorf("block %d written twice at once", block)
		}
		inFlight[block] = true
	}
	end := func(block uint64) {
		devMu.Lock()
		inFlight[block] = false
		devMu.Unlock()
	}
	failSometimes := func(r *rand.Rand) error {
		if injected.Load() && r.IntN(20) == 0 {
			return errors.New("injected device error")
		}
		return nil
	}
	var wbRandMu sync.Mutex
	wbRand := rand.New(rand.NewPCG(1, 2))
	c := newCache(t, Config{Bytes: 96 * FrameSize, Shards: 2, ReserveWait: time.Second, WriteBack: func(block uint64, data []byte) error {
		begin(block)
		defer end(block)
		wbRandMu.Lock()
		err := failSometimes(wbRand)
		wbRandMu.Unlock()
		storeVersion(block, data, err == nil)
		return err
	}})
	injected.Store(true)

	verify := func(f *Frame, block uint64) {
		locks[block].RLock()
		defer locks[block].RUnlock()
		v, err := decode(f.Data(), block)
		if err != nil {
			t.Errorf("read: %v", err)
		} else if block >= invalidRange && v != ver[block].Load() {
			t.Errorf("block %d: read version %d, latest is %d", block, v, ver[block].Load())
		}
	}
	// getFrame returns block's frame pinned, loading it from the device on a miss.
	getFrame := func(r *rand.Rand, block, reader uint64) *Frame {
		for {
			f, loaded, err := c.GetOrReserve(block, reader)
			if err != nil {
				t.Errorf("GetOrReserve(%d): %v", block, err)
				return nil
			}
			if loaded {
				return f
			}
			devMu.Lock()
			v := dev[block]
			devMu.Unlock()
			if block >= invalidRange && v != ver[block].Load() {
				t.Errorf("block %d loaded version %d from the device, latest is %d", block, v, ver[block].Load())
			}
			fill(f.Data(), block, v)
			if r.IntN(10) == 0 {
				c.Loaded(f, errors.New("injected read error"))
				continue
			}
			c.Loaded(f, nil)
			return f
		}
	}
	worker := func(seed uint64) {
		r := rand.New(rand.NewPCG(seed, 99))
		reader := seed%3 + 1
		for n := 0; n < ops; n++ {
			block := uint64(r.IntN(nblocks))
			switch op := r.IntN(100); {
			case op < 35: // read
				f := c.Get(block, reader)
				if f == nil {
					f = getFrame(r, block, reader)
				}
				if f != nil {
					verify(f, block)
					c.Unpin(f)
				}
			case op < 45: // read four consecutive blocks, reserving in ascending order
				block = min(block, nblocks-4)
				var fs []*Frame
				for b := block; b < block+4; b++ {
					if f := getFrame(r, b, reader); f != nil {
						fs = append(fs, f)
					}
				}
				for _, f := range fs {
					verify(f, f.Block())
					c.Unpin(f)
				}
			case op < 80: // write
				f := getFrame(r, block, reader)
				if f == nil {
					continue
				}
				locks[block].Lock()
				c.BeginWrite(f)
				fill(f.Data(), block, ver[block].Add(1))
				c.EndWrite(f)
				locks[block].Unlock()
				c.Unpin(f)
			case op < 85: // re-dirty without writing: races with in-flight write-backs, whose generation check must keep the frame dirty
				f := c.Get(block, reader)
				if f == nil {
					continue
				}
				c.MarkDirty(f) // re-dirty without changing data
				c.Unpin(f)
			case op < 95: // flush a random range
				start := uint64(r.IntN(nblocks))
				length := uint64(r.IntN(nblocks / 2))
				err := c.FlushDirty(start, start+length, func(first uint64, data [][]byte) error {
					for i := range data {
						begin(first + uint64(i))
					}
					err := failSometimes(r)
					for i, d := range data {
						storeVersion(first+uint64(i), d, err == nil)
						end(first + uint64(i))
					}
					return err
				})
				if err != nil && err.Error() != "injected device error" {
					t.Errorf("FlushDirty: %v", err)
				}
			default: // free a block
				c.Invalidate(block % invalidRange)
			}
		}
	}

	runCheckingInvariants(t, c, workers, worker)

	injected.Store(false)
	if err := c.FlushDirty(0, nblocks, func(first uint64, data [][]byte) error {
		for i, d := range data {
			storeVersion(first+uint64(i), d, true)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for b := uint64(invalidRange); b < nblocks; b++ {
		if dev[b] != ver[b].Load() {
			t.Errorf("block %d: device has version %d, latest write was %d", b, dev[b], ver[b].Load())
		}
	}
	st := c.Stats()
	if st.Dirty != 0 || st.Pinned != 0 {
		t.Errorf("after the final flush: %+v", st)
	}
	if st.Evictions == 0 || st.WriteBacks == 0 || st.Hits == 0 || st.Misses == 0 {
		t.Errorf("stress did not exercise eviction, write-back and hits: %+v", st)
	}
	t.Logf("%+v", st)
	checkInvariants(t, c)
}

func BenchmarkGetHit(b *testing.B) {
	c := newCache(b, Config{Bytes: 64 << 20})
	const nblocks = 4096
	for blk := uint64(0); blk < nblocks; blk++ {
		c.Unpin(load(b, c, blk, 1))
	}
	var seed atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		blk := seed.Add(7919) % nblocks
		for pb.Next() {
			f := c.Get(blk, 1)
			if f == nil {
				b.Error("miss")
				return
			}
			c.Unpin(f)
			blk = (blk + 1) % nblocks
		}
	})
}

func BenchmarkGetOrReserveMissEvict(b *testing.B) {
	c := newCache(b, Config{Bytes: 4 << 20})
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		f, loaded, err := c.GetOrReserve(uint64(i), 1)
		if err != nil || loaded {
			b.Fatal(loaded, err)
		}
		c.Loaded(f, nil)
		c.Unpin(f)
	}
}

func TestDropAll(t *testing.T) {
	c, err := New(Config{Bytes: 64 * FrameSize, WriteBack: func(uint64, []byte) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for b := uint64(0); b < 10; b++ {
		f, loaded, err := c.GetOrReserve(b, 1)
		if err != nil || loaded {
			t.Fatal(err, loaded)
		}
		c.Loaded(f, nil)
		if b == 3 {
			c.MarkDirty(f)
		}
		if b != 5 {
			c.Unpin(f)
		}
	}
	// Block 3 is dirty and block 5 pinned: both stay.
	if left := c.DropAll(); left != 2 {
		t.Fatalf("left %d frames, want 2", left)
	}
	if st := c.Stats(); st.Resident != 2 {
		t.Fatalf("resident %d", st.Resident)
	}
	if f := c.Get(0, 1); f != nil {
		t.Fatal("dropped block still resident")
	}
	// Dropped frames are reusable.
	for b := uint64(100); b < 150; b++ {
		f, _, err := c.GetOrReserve(b, 1)
		if err != nil {
			t.Fatalf("block %d: %v", b, err)
		}
		c.Loaded(f, nil)
		c.Unpin(f)
	}
}

func TestDirtyFramesCounter(t *testing.T) {
	c, err := New(Config{Bytes: 64 * FrameSize, WriteBack: func(uint64, []byte) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var frames []*Frame
	for b := uint64(0); b < 5; b++ {
		f, _, err := c.GetOrReserve(b, 1)
		if err != nil {
			t.Fatal(err)
		}
		c.Loaded(f, nil)
		c.MarkDirty(f)
		frames = append(frames, f)
	}
	if got := c.DirtyFrames(); got != 5 || got != c.Stats().Dirty {
		t.Fatalf("dirty %d, stats %d", got, c.Stats().Dirty)
	}
	for _, f := range frames {
		c.Unpin(f)
	}
	c.Invalidate(0) // discards a dirty frame
	if err := c.FlushDirty(0, 3, func(uint64, [][]byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := c.DirtyFrames(); got != 2 || got != c.Stats().Dirty {
		t.Fatalf("after invalidate and flush: dirty %d, stats %d", got, c.Stats().Dirty)
	}
}

// runCheckingInvariants runs worker(1..workers) concurrently and checks the
// cache's invariants every 5 ms until they are all done.
func runCheckingInvariants(t *testing.T, c *Cache, workers int, worker func(id uint64)) {
	t.Helper()
	stop := make(chan struct{})
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				checkInvariants(t, c)
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { worker(uint64(w) + 1) })
	}
	wg.Wait()
	close(stop)
	<-checked
}
