package cache

// DropAll evicts every frame that is resident, clean and unpinned, like
// writing 3 to /proc/sys/vm/drop_caches, and returns how many frames stay
// resident (pinned, loading, dirty or being written). Callers write back
// dirty data first (FlushDirty) to drop everything.
func (c *Cache) DropAll() int64 {
	var left int64
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for j := s.lo; j < s.lo+s.n; j++ {
			f := &c.frames[j]
			if f.flags&fValid == 0 {
				continue
			}
			if f.pins == 0 && f.flags&(fLoading|fDirty|fWriteback|fWriting) == 0 {
				c.evict(s, f)
				s.free = append(s.free, f.id)
				continue
			}
			left++
		}
		s.wake()
		s.mu.Unlock()
	}
	return left
}
