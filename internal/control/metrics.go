package control

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/reflinkfs/reflinkfs"
)

// StatsSource is what the control server reads; *reflinkfs.FS satisfies it.
type StatsSource interface {
	Stats() reflinkfs.Stats
}

// metric is one Prometheus series derived from a Stats snapshot.
type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(reflinkfs.Stats) float64
}

// collector turns one Stats snapshot per scrape into Prometheus metrics, so
// the figures are never stale and nothing runs between scrapes.
type collector struct {
	src     StatsSource
	metrics []metric
}

// NewCollector returns a Prometheus collector reporting src's statistics at
// scrape time.
func NewCollector(src StatsSource) prometheus.Collector {
	gauge := func(name, help string, f func(reflinkfs.Stats) float64) metric {
		return metric{prometheus.NewDesc("reflinkfs_"+name, help, nil, nil), prometheus.GaugeValue, f}
	}
	counter := func(name, help string, f func(reflinkfs.Stats) float64) metric {
		return metric{prometheus.NewDesc("reflinkfs_"+name, help, nil, nil), prometheus.CounterValue, f}
	}
	f := func(v func(reflinkfs.Stats) int64) func(reflinkfs.Stats) float64 {
		return func(s reflinkfs.Stats) float64 { return float64(v(s)) }
	}
	return &collector{src: src, metrics: []metric{
		gauge("block_size_bytes", "Filesystem block size.", f(func(s reflinkfs.Stats) int64 { return s.BlockSize })),
		gauge("device_bytes", "Size of the data device.", f(func(s reflinkfs.Stats) int64 { return s.DeviceBytes })),
		gauge("used_bytes", "Physical bytes allocated on the data device.", f(func(s reflinkfs.Stats) int64 { return s.UsedBytes })),
		gauge("free_bytes", "Free bytes on the data device.", f(func(s reflinkfs.Stats) int64 { return s.FreeBytes })),
		gauge("logical_bytes", "Bytes mapped by all files, counting a shared block once per reference.", f(func(s reflinkfs.Stats) int64 { return s.LogicalBytes })),
		gauge("shared_bytes", "Physical bytes referenced more than once.", f(func(s reflinkfs.Stats) int64 { return s.SharedBytes })),
		gauge("inodes", "Number of inodes.", f(func(s reflinkfs.Stats) int64 { return s.Inodes })),
		gauge("reaping_files", "Deleted files whose blocks are still being freed in the background.", f(func(s reflinkfs.Stats) int64 { return s.ReapingFiles })),
		gauge("cache_limit_bytes", "Configured block cache size.", f(func(s reflinkfs.Stats) int64 { return s.CacheLimitBytes })),
		gauge("cache_bytes", "File data resident in the block cache.", f(func(s reflinkfs.Stats) int64 { return s.CachedBytes })),
		gauge("cache_dirty_bytes", "Cached bytes not yet written to the device.", f(func(s reflinkfs.Stats) int64 { return s.DirtyBytes })),
		gauge("cache_shared_bytes", "Cached bytes read by more than one file.", f(func(s reflinkfs.Stats) int64 { return s.SharedCachedBytes })),
		gauge("cache_per_file_equivalent_bytes", "What a per-file page cache would hold for the same reads.", f(func(s reflinkfs.Stats) int64 { return s.PerFileCachedBytes })),
		gauge("cache_memory_saved_bytes", "Per-file equivalent minus cached bytes.", f(func(s reflinkfs.Stats) int64 { return NewReport(s).MemorySavedBytes })),
		counter("cache_hits_total", "Block cache hits.", f(func(s reflinkfs.Stats) int64 { return s.CacheHits })),
		counter("cache_misses_total", "Block cache misses.", f(func(s reflinkfs.Stats) int64 { return s.CacheMisses })),
		counter("cache_evictions_total", "Blocks evicted from the cache.", f(func(s reflinkfs.Stats) int64 { return s.CacheEvictions })),
		counter("checksum_errors_total", "Data blocks that failed CRC32C verification on read.", f(func(s reflinkfs.Stats) int64 { return s.ChecksumErrors })),
		counter("commits_total", "Transactions committed.", f(func(s reflinkfs.Stats) int64 { return s.Commits })),
		counter("copy_shared_blocks_total", "Blocks written equal to a block the writer had just read, stored as a reference to it (copy detection).", f(func(s reflinkfs.Stats) int64 { return s.CopySharedBlocks })),
		counter("copy_hole_blocks_total", "Zero blocks written over a hole of the source they were copied from, kept as holes (copy detection).", f(func(s reflinkfs.Stats) int64 { return s.CopyHoleBlocks })),
	}}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
	if _, ok := c.src.(PassthroughSource); ok {
		for _, d := range []*prometheus.Desc{passBackingFiles, passBackingBytes, passCachedBytes, passOpens, passOpenNow, passRefused, passFallbacks} {
			ch <- d
		}
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(s))
	}
	if p, ok := c.src.(PassthroughSource); ok {
		if r := p.Passthrough(); r != nil {
			collectPassthrough(ch, r)
		}
	}
}

var (
	passBackingFiles = prometheus.NewDesc("reflinkfs_passthrough_backing_files", "Backing files of FUSE passthrough (one per distinct content).", nil, nil)
	passBackingBytes = prometheus.NewDesc("reflinkfs_passthrough_backing_bytes", "Total size of the backing files.", nil, nil)
	passCachedBytes  = prometheus.NewDesc("reflinkfs_passthrough_backing_cached_bytes", "Bytes of backing files in the kernel page cache.", nil, nil)
	passOpens        = prometheus.NewDesc("reflinkfs_passthrough_opens_total", "Opens passed through to a backing file.", nil, nil)
	passOpenNow      = prometheus.NewDesc("reflinkfs_passthrough_open_handles", "Passthrough handles open now.", nil, nil)
	passRefused      = prometheus.NewDesc("reflinkfs_passthrough_refused_total", "Writable opens and truncates refused (ETXTBSY) while passthrough readers were open.", nil, nil)
	passFallbacks    = prometheus.NewDesc("reflinkfs_passthrough_fallbacks_total", "Eligible opens served without passthrough, by reason.", []string{"reason"}, nil)
)

func collectPassthrough(ch chan<- prometheus.Metric, r *PassthroughReport) {
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	c := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	g(passBackingFiles, float64(r.BackingFiles))
	g(passBackingBytes, float64(r.BackingBytes))
	g(passCachedBytes, float64(r.BackingCachedBytes))
	c(passOpens, float64(r.Opens))
	g(passOpenNow, float64(r.OpenNow))
	c(passRefused, float64(r.Refused))
	for reason, n := range r.Fallbacks {
		ch <- prometheus.MustNewConstMetric(passFallbacks, prometheus.CounterValue, float64(n), reason)
	}
}
