package cache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestChunkShift(t *testing.T) {
	for _, tc := range []struct {
		bytes  int64
		shards int
		want   uint
	}{
		{0, 0, 0},       // 64 frames, 8 per shard
		{1 << 20, 0, 0}, // 16 frames per shard
		{4 << 20, 0, 2}, // 64 frames per shard: 16 chunks of 4
		{1024 * FrameSize, 1, 6},
		{64 << 20, 0, 6}, // 1024 frames per shard
		{256 << 20, 0, 6},
		{64<<20 - FrameSize, 0, 5},
	} {
		c := newCache(t, Config{Bytes: tc.bytes, Shards: tc.shards})
		if c.chunkShift != tc.want {
			t.Errorf("Bytes %d Shards %d: chunk shift %d, want %d", tc.bytes, tc.shards, c.chunkShift, tc.want)
		}
		for k := range c.shards {
			if s := &c.shards[k]; int64(s.n) < minChunksPerShard<<c.chunkShift && c.chunkShift > 0 {
				t.Errorf("Bytes %d: shard %d has %d frames, room for fewer than %d chunks of %d", tc.bytes, k, s.n, minChunksPerShard, 1<<c.chunkShift)
			}
		}
	}
}

// Consecutive blocks share a shard within a chunk; consecutive chunks spread.
func TestChunkPlacement(t *testing.T) {
	c := newCache(t, Config{Bytes: 64 << 20})
	if c.chunkShift != 6 || len(c.shards) != 16 {
		t.Fatalf("chunk shift %d, %d shards", c.chunkShift, len(c.shards))
	}
	seen := make(map[*shard]int)
	for key := uint64(1000); key < 1016; key++ {
		s := c.shardOfChunk(key)
		for b := key << 6; b < (key+1)<<6; b++ {
			if c.shardFor(b) != s {
				t.Fatalf("block %d of chunk %d in another shard", b, key)
			}
		}
		seen[s]++
	}
	if len(seen) < 12 {
		t.Fatalf("16 consecutive chunks fell in %d of 16 shards", len(seen))
	}
}

// runCaches are the cache shapes GetRun is tested on: 64-block chunks over
// 4 shards, and the smallest cache, one block per chunk over 8 shards.
func runCaches(t *testing.T) map[string]*Cache {
	return map[string]*Cache{
		"chunk64": newCache(t, Config{Bytes: 4096 * FrameSize, Shards: 4}),
		"chunk1":  newCache(t, Config{ReserveWait: -1}),
	}
}

// checkRun checks that fs are pinned frames of blocks first, first+1, ...
// holding their data.
func checkRun(t *testing.T, fs []*Frame, first uint64) {
	t.Helper()
	for i, f := range fs {
		if f == nil || f.Block() != first+uint64(i) || f.pins <= 0 || f.flags&fValid == 0 {
			t.Fatalf("run at %d: entry %d is %+v", first, i, f)
		}
		if _, err := decode(f.Data(), first+uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGetRun(t *testing.T) {
	for name, c := range runCaches(t) {
		t.Run(name, func(t *testing.T) {
			size := uint64(c.Frames())
			first, last := uint64(10), uint64(10)+size*3/4 // resident [first, last)
			for b := first; b < last; b++ {
				c.Unpin(load(t, c, b, 1))
			}
			if st := c.Stats(); st.Resident != int64(last-first) || st.Evictions != 0 {
				t.Fatalf("setup: %+v", st)
			}
			out := make([]*Frame, 300)
			before := c.Stats()
			n := c.GetRun(first, 2, out)
			if want := min(300, int(last-first)); n != want {
				t.Fatalf("GetRun over resident blocks pinned %d, want %d", n, want)
			}
			checkRun(t, out[:n], first)
			shards := make(map[uint32]bool)
			for _, f := range out[:n] {
				shards[f.shard] = true
			}
			if len(shards) < 2 {
				t.Fatalf("run of %d blocks stayed in one shard", n)
			}
			st := c.Stats()
			if st.Hits != before.Hits+int64(n) || st.Pinned != int64(n) || st.Shared != int64(n) || st.PerFile != before.PerFile+int64(n) || st.Misses != before.Misses {
				t.Fatalf("after GetRun of %d: %+v (before %+v)", n, st, before)
			}
			checkInvariants(t, c)
			c.UnpinAll(out[:n])
			if st := c.Stats(); st.Pinned != 0 {
				t.Fatalf("pinned %d after UnpinAll", st.Pinned)
			}

			// Stops at the end of the resident range, and at len(out).
			if n := c.GetRun(last-5, 1, out); n != 5 {
				t.Fatalf("GetRun across the last resident block pinned %d, want 5", n)
			} else {
				checkRun(t, out[:n], last-5)
				c.UnpinAll(out[:n])
			}
			if n := c.GetRun(first+3, 1, out[:40]); n != 40 {
				t.Fatalf("GetRun of 40 pinned %d", n)
			} else {
				checkRun(t, out[:n], first+3)
				c.UnpinAll(out[:n])
			}
			if n := c.GetRun(first, 1, nil); n != 0 {
				t.Fatalf("GetRun into an empty slice pinned %d", n)
			}
			if n := c.GetRun(first-1, 1, out); n != 0 {
				t.Fatalf("GetRun from a missing block pinned %d", n)
			}

			// Stops at an invalidated block, and at a detached frame.
			c.Invalidate(first + 40)
			held := c.Get(first+20, 0)
			c.Invalidate(first + 20) // detached: still pinned, unindexed
			if n := c.GetRun(first, 1, out); n != 20 {
				t.Fatalf("GetRun before a detached frame pinned %d, want 20", n)
			} else {
				checkRun(t, out[:n], first)
				c.UnpinAll(out[:n])
			}
			if n := c.GetRun(first+21, 1, out); n != 19 {
				t.Fatalf("GetRun before an invalidated block pinned %d, want 19", n)
			} else {
				c.UnpinAll(out[:n])
			}
			c.UnpinAll([]*Frame{held}) // the detached frame goes back to the free list
			checkInvariants(t, c)

			// Stops at a loading block without waiting for it.
			loading, loaded, err := c.GetOrReserve(first+40, 3)
			if err != nil || loaded {
				t.Fatalf("reserving %d: %v %v", first+40, loaded, err)
			}
			got := make(chan int)
			go func() { got <- c.GetRun(first+21, 1, out) }()
			select {
			case n := <-got:
				if n != 19 {
					t.Fatalf("GetRun before a loading block pinned %d, want 19", n)
				}
				c.UnpinAll(out[:n])
			case <-time.After(10 * time.Second):
				t.Fatal("GetRun waited for a loading block")
			}
			if n := c.GetRun(first+40, 1, out); n != 0 {
				t.Fatalf("GetRun from a loading block pinned %d", n)
			}
			fill(loading.Data(), first+40, 0)
			c.Loaded(loading, nil)
			c.Unpin(loading)
			if n := c.GetRun(first+21, 1, out[:25]); n != 25 {
				t.Fatalf("GetRun after the load pinned %d, want 25", n)
			} else {
				checkRun(t, out[:n], first+21)
				c.UnpinAll(out[:n])
			}
			if st := c.Stats(); st.Pinned != 0 {
				t.Fatalf("stats %+v", st)
			}
			checkInvariants(t, c)
		})
	}
}

// GetRun counts hits and records readers exactly as Get of each block does.
func TestGetRunCountsLikeGet(t *testing.T) {
	newLoaded := func() *Cache {
		c := newCache(t, Config{Bytes: 4096 * FrameSize, Shards: 4})
		for b := uint64(0); b < 1000; b++ {
			c.Unpin(load(t, c, b, b%3)) // readers 0, 1, 2
		}
		return c
	}
	byGet, byRun := newLoaded(), newLoaded()
	r := rand.New(rand.NewPCG(4, 5))
	out := make([]*Frame, 200)
	for range 200 {
		first, n, reader := uint64(r.IntN(1000)), r.IntN(len(out)), uint64(r.IntN(80))
		var got []*Frame
		for b := first; b < first+uint64(n); b++ {
			f := byGet.Get(b, reader)
			if f == nil {
				break
			}
			got = append(got, f)
		}
		m := byRun.GetRun(first, reader, out[:n])
		if m != len(got) {
			t.Fatalf("GetRun(%d, %d) pinned %d, Get found %d", first, n, m, len(got))
		}
		for _, f := range got {
			byGet.Unpin(f)
		}
		byRun.UnpinAll(out[:m])
	}
	if a, b := byGet.Stats(), byRun.Stats(); a != b {
		t.Fatalf("stats by Get %+v, by GetRun %+v", a, b)
	}
	for i := range byGet.frames {
		f, g := &byGet.frames[i], &byRun.frames[i]
		if f.block != g.block || f.readers != g.readers || f.weight != g.weight || f.reader0 != g.reader0 || fmt.Sprint(f.more) != fmt.Sprint(g.more) {
			t.Fatalf("frame %d: by Get %+v, by GetRun %+v", i, f, g)
		}
	}
	checkInvariants(t, byRun)
}

func TestUnpinAll(t *testing.T) {
	c := newCache(t, Config{Bytes: 4096 * FrameSize, Shards: 4})
	var fs []*Frame
	for _, b := range []uint64{5, 6, 70, 71, 5, 200, 6, 7000, 5} { // shards interleave; 5 pinned three times
		fs = append(fs, load(t, c, b, 1))
	}
	c.Invalidate(70) // detached while pinned
	if st := c.Stats(); st.Pinned != 6 {
		t.Fatalf("stats %+v", st)
	}
	c.UnpinAll(fs[:3])
	if st := c.Stats(); st.Pinned != 5 || fs[0].pins != 2 || fs[1].pins != 1 {
		t.Fatalf("after releasing 3 of 9: %+v, block 5 pins %d, block 6 pins %d", st, fs[0].pins, fs[1].pins)
	}
	checkInvariants(t, c)
	c.UnpinAll(fs[3:])
	if st := c.Stats(); st.Pinned != 0 || st.Resident != 5 {
		t.Fatalf("after releasing all: %+v", st)
	}
	checkInvariants(t, c)
	c.UnpinAll(nil)

	f, _, err := c.GetOrReserve(9, 1)
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("UnpinAll of a loading frame did not panic")
			}
		}()
		c.UnpinAll([]*Frame{f})
	}()
	c.Loaded(f, nil)
	c.UnpinAll([]*Frame{f})
	checkInvariants(t, c)
}

// A waiting reservation is woken when UnpinAll releases the frame it needs.
func TestUnpinAllWakes(t *testing.T) {
	c := newCache(t, Config{Shards: 1, ReserveWait: time.Minute})
	out := make([]*Frame, 64)
	for b := uint64(0); b < 64; b++ {
		c.Unpin(load(t, c, b, 0))
	}
	if n := c.GetRun(0, 0, out); n != 64 {
		t.Fatalf("pinned %d", n)
	}
	got := make(chan error)
	go func() {
		f, _, err := c.GetOrReserve(100, 0)
		if err == nil {
			c.Loaded(f, nil)
			c.Unpin(f)
		}
		got <- err
	}()
	waitForWaiters(c, 100)
	c.UnpinAll(out)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, c)
}

// The index holds no more chunks than indexed frames, whatever the cache has
// seen: sparse and dense streams over a range far larger than the cache.
func TestChunkIndexBounded(t *testing.T) {
	c := newCache(t, Config{Bytes: 2048 * FrameSize, Shards: 2, WriteBack: func(uint64, []byte) error { return nil }})
	if c.chunkShift != 6 {
		t.Fatalf("chunk shift %d", c.chunkShift)
	}
	r := rand.New(rand.NewPCG(1, 1))
	for range 20000 { // sparse: about one block per chunk
		b := r.Uint64N(1 << 40)
		if r.IntN(4) == 0 {
			dirty(t, c, b, b)
		} else {
			c.Unpin(load(t, c, b, 1))
		}
	}
	for b := uint64(1 << 30); b < 1<<30+20000; b++ { // dense
		c.Unpin(load(t, c, b, 1))
	}
	for k := range c.shards {
		s := &c.shards[k]
		if len(s.index.recs) > int(s.n) || len(s.index.chunks) > int(s.n) || len(s.index.pool) > 4*int(s.n) {
			t.Fatalf("shard %d of %d frames: %d chunk numbers, %d chunks, pool of %d", k, s.n, len(s.index.recs), len(s.index.chunks), len(s.index.pool))
		}
		if len(s.index.chunks) > 2*int(s.n)/64+2 {
			t.Errorf("shard %d: %d chunks for %d resident blocks after a dense stream", k, len(s.index.chunks), s.resident)
		}
	}
	checkInvariants(t, c)
	if err := c.FlushDirty(0, ^uint64(0), func(uint64, [][]byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if left := c.DropAll(); left != 0 {
		t.Fatalf("%d frames left", left)
	}
	for k := range c.shards {
		if s := &c.shards[k]; len(s.index.chunks) != 0 || len(s.index.unused) != len(s.index.recs) {
			t.Fatalf("shard %d after DropAll: %d chunks, %d of %d numbers unused", k, len(s.index.chunks), len(s.index.unused), len(s.index.recs))
		}
	}
	checkInvariants(t, c)
}

// FlushDirty finds the dirty blocks by chunk as it did by block: probing a
// range spanning few chunks, scanning the dirty lists otherwise.
func TestFlushDirtyByChunk(t *testing.T) {
	c := newCache(t, Config{Bytes: 4096 * FrameSize, Shards: 4})
	var want []uint64
	for b := uint64(60); b < 200; b += 3 {
		dirty(t, c, b, b+100)
		want = append(want, b)
	}
	for b := uint64(61); b < 200; b += 3 {
		c.Unpin(load(t, c, b, 0)) // clean
	}
	if got := c.dirtyBlocks(62, 130); fmt.Sprint(got) != fmt.Sprint(want[1:24]) {
		t.Fatalf("probing: dirty %v, want %v", got, want[1:24])
	}
	if got := c.dirtyBlocks(0, 1<<20); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("scanning: dirty %v, want %v", got, want)
	}
	log := &flushLog{t: t}
	if err := c.FlushDirty(63, 67, log.write); err != nil || fmt.Sprint(log.runs) != "[[63 1] [66 1]]" {
		t.Fatalf("runs %v, %v", log.runs, err)
	}
	checkInvariants(t, c)
}

// TestGetRunConcurrent mixes GetRun/UnpinAll, engine-style reads that hold a
// run's pins while reserving the blocks after it, writes, Invalidate and
// eviction under pressure. Every frame a run returns must hold its own
// block's data, and the counters and index must stay exact.
func TestGetRunConcurrent(t *testing.T) {
	const (
		nblocks = 6000 // about three times the cache
		maxRun  = 100
		workers = 4
	)
	ops := 800
	if testing.Short() {
		ops = 300
	}
	var devMu sync.Mutex
	var dev [nblocks]uint64 // version on the device
	store := func(block uint64, data []byte) {
		v, err := decode(data, block)
		if err != nil {
			t.Errorf("device write: %v", err)
			return
		}
		devMu.Lock()
		dev[block] = max(dev[block], v)
		devMu.Unlock()
	}
	c := newCache(t, Config{Bytes: 2048 * FrameSize, Shards: 2, ReserveWait: 5 * time.Second, WriteBack: func(block uint64, data []byte) error {
		store(block, data)
		return nil
	}})
	if c.chunkShift != 6 {
		t.Fatalf("chunk shift %d", c.chunkShift)
	}
	var locks [nblocks]sync.RWMutex // test-side exclusion of data readers and writers
	var versions atomic.Uint64
	verify := func(f *Frame, block uint64) {
		locks[block].RLock()
		defer locks[block].RUnlock()
		if f.Block() != block {
			t.Errorf("frame of block %d returned for %d", f.Block(), block)
		} else if _, err := decode(f.Data(), block); err != nil {
			t.Error(err)
		}
	}
	reserve := func(r *rand.Rand, block, reader uint64) *Frame {
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
			fill(f.Data(), block, v)
			if r.IntN(10) == 0 {
				c.Loaded(f, errors.New("read error"))
				continue
			}
			c.Loaded(f, nil)
			return f
		}
	}
	worker := func(seed uint64) {
		r := rand.New(rand.NewPCG(seed, 7))
		reader := seed%3 + 1
		out := make([]*Frame, maxRun)
		for range ops {
			first := uint64(r.IntN(nblocks - maxRun))
			length := 1 + r.IntN(maxRun)
			switch op := r.IntN(100); {
			case op < 45: // read a run: pins of the resident prefix held while the rest is reserved in order
				n := c.GetRun(first, reader, out[:length])
				for i, f := range out[:n] {
					verify(f, first+uint64(i))
				}
				var rest []*Frame
				for b := first + uint64(n); b < first+uint64(length); b++ {
					if f := reserve(r, b, reader); f != nil {
						verify(f, b)
						rest = append(rest, f)
					}
				}
				c.UnpinAll(out[:n])
				c.UnpinAll(rest)
			case op < 65: // read a run, unpinning as Unpin would
				n := c.GetRun(first, reader, out[:length])
				for i, f := range out[:n] {
					verify(f, first+uint64(i))
					c.Unpin(f)
				}
			case op < 85: // write one block
				f := reserve(r, first, reader)
				if f == nil {
					continue
				}
				locks[first].Lock()
				c.BeginWrite(f)
				fill(f.Data(), first, versions.Add(1))
				c.EndWrite(f)
				locks[first].Unlock()
				c.Unpin(f)
			case op < 95:
				c.Invalidate(first + uint64(r.IntN(length)))
			default:
				if err := c.FlushDirty(first, first+uint64(length), func(at uint64, data [][]byte) error {
					for i, d := range data {
						store(at+uint64(i), d)
					}
					return nil
				}); err != nil {
					t.Error(err)
				}
			}
		}
	}
	runCheckingInvariants(t, c, workers, worker)
	st := c.Stats()
	if st.Pinned != 0 || st.Evictions == 0 || st.Hits == 0 || st.Misses == 0 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("%+v", st)
	checkInvariants(t, c)
}
