package cache

import (
	"sync/atomic"
	"testing"
)

const (
	benchFrames = 64 << 10 // a 256 MiB cache
	benchBlocks = 240 << 8 // resident blocks: 94% of the frames, so no shard overflows
	benchRun    = 256      // blocks per run: a 1 MiB read
)

func residentCache(b *testing.B) *Cache {
	c := newCache(b, Config{Bytes: benchFrames * FrameSize})
	for blk := uint64(0); blk < benchBlocks; blk++ {
		c.Unpin(load(b, c, blk, 1))
	}
	if st := c.Stats(); st.Resident != benchBlocks || st.Evictions != 0 {
		b.Fatalf("resident %d of %d, %d evictions", st.Resident, benchBlocks, st.Evictions)
	}
	return c
}

// BenchmarkReadRun pins and unpins runs of 256 consecutive resident blocks
// (one 1 MiB read): block by block with GetOrReserve and Unpin, and with
// GetRun and UnpinAll. ns/op is per run.
func BenchmarkReadRun(b *testing.B) {
	b.Run("PerBlock", func(b *testing.B) {
		c := residentCache(b)
		b.ReportAllocs()
		b.ResetTimer()
		first := uint64(0)
		for range b.N {
			for blk := first; blk < first+benchRun; blk++ {
				f, loaded, err := c.GetOrReserve(blk, 1)
				if err != nil || !loaded {
					b.Fatal(loaded, err)
				}
				c.Unpin(f)
			}
			first = (first + benchRun) % benchBlocks
		}
	})
	b.Run("GetRun", func(b *testing.B) {
		c := residentCache(b)
		out := make([]*Frame, benchRun)
		b.ReportAllocs()
		b.ResetTimer()
		first := uint64(0)
		for range b.N {
			if n := c.GetRun(first, 1, out); n != benchRun {
				b.Fatalf("GetRun pinned %d", n)
			}
			c.UnpinAll(out)
			first = (first + benchRun) % benchBlocks
		}
	})
	b.Run("GetRunParallel", func(b *testing.B) {
		c := residentCache(b)
		b.ReportAllocs()
		b.ResetTimer()
		var goroutines atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			out := make([]*Frame, benchRun)
			first := goroutines.Add(1) * 97 * benchRun % benchBlocks // apart from the other goroutines
			for pb.Next() {
				if n := c.GetRun(first, 1, out); n != benchRun {
					b.Errorf("GetRun pinned %d", n)
					return
				}
				c.UnpinAll(out)
				first = (first + 7*benchRun) % benchBlocks
			}
		})
	})
	b.Run("PerBlockParallel", func(b *testing.B) {
		c := residentCache(b)
		b.ReportAllocs()
		b.ResetTimer()
		var goroutines atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			first := goroutines.Add(1) * 97 * benchRun % benchBlocks // apart from the other goroutines
			for pb.Next() {
				for blk := first; blk < first+benchRun; blk++ {
					f, loaded, err := c.GetOrReserve(blk, 1)
					if err != nil || !loaded {
						b.Error(loaded, err)
						return
					}
					c.Unpin(f)
				}
				first = (first + 7*benchRun) % benchBlocks
			}
		})
	})
}

// BenchmarkGetRandom is a single-block hit at a random block of a large
// resident set: the index lookup without any locality.
func BenchmarkGetRandom(b *testing.B) {
	c := residentCache(b)
	b.ReportAllocs()
	b.ResetTimer()
	x := uint64(1)
	for range b.N {
		x = x*6364136223846793005 + 1442695040888963407
		blk := (x >> 33) % benchBlocks
		f := c.Get(blk, 1)
		if f == nil {
			b.Fatal("miss")
		}
		c.Unpin(f)
	}
}
