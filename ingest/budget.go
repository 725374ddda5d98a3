package ingest

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// MemoryBudget bounds the bytes of messages that the partitions of a
// process hold at once, read ahead and in the batches being applied, across
// every consumer group sharing it (GroupConfig.Memory): without it a
// process holds up to two batches of MaxBatchBytes per partition, so its
// memory under lag grows with the partitions it is assigned.
//
// A message counts as messageSize (its key, value and headers, plus 256
// bytes). A partition's fetcher takes a message's bytes before adding it
// to the batch it gathers and gives a batch's bytes back when the batch has
// been applied; when the budget is spent it waits for bytes given back by
// any partition. A partition that holds no message at all, read ahead or
// being applied, always takes one, over the budget if need be, so that
// every partition keeps moving: the budget may be exceeded by one message
// per partition. Each partition
// also holds the rest of one fetch being handed out (about 1 MiB),
// not counted here.
type MemoryBudget struct {
	limit int64
	mu    sync.Mutex
	used  int64
	freed chan struct{} // closed, and replaced, when bytes are given back
}

// NewMemoryBudget returns a budget of limit bytes (at least 1).
func NewMemoryBudget(limit int64) *MemoryBudget {
	return &MemoryBudget{limit: max(limit, 1), freed: make(chan struct{})}
}

// Limit returns the budget's bytes.
func (b *MemoryBudget) Limit() int64 { return b.limit }

// Used returns the bytes taken and not given back.
func (b *MemoryBudget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// free returns the bytes not taken, 0 if the budget is spent or exceeded.
func (b *MemoryBudget) free() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(b.limit-b.used, 0)
}

// take takes n bytes if they fit in the budget, or whether or not they fit
// if force; when they do not, it returns false and a channel closed when
// bytes are next given back.
func (b *MemoryBudget) take(n int64, force bool) (bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if force || b.used+n <= b.limit {
		b.used += n
		return true, nil
	}
	return false, b.freed
}

// give gives back n bytes taken; a nil budget takes and gives nothing.
func (b *MemoryBudget) give(n int64) {
	if b == nil || n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

// NewBudgetCollector returns the metrics of b: the bytes in use and the
// limit.
func NewBudgetCollector(b *MemoryBudget) prometheus.Collector {
	return budgetCollector{b}
}

type budgetCollector struct{ b *MemoryBudget }

var (
	budgetUsedDesc = prometheus.NewDesc("featurestore_ingest_buffered_bytes",
		"Bytes of messages the partitions of the process hold, read ahead and in the batches being applied (--buffer-memory bounds them).", nil, nil)
	budgetLimitDesc = prometheus.NewDesc("featurestore_ingest_buffer_limit_bytes",
		"The process's bound on featurestore_ingest_buffered_bytes (--buffer-memory); each partition may go over it by one message.", nil, nil)
)

func (c budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- budgetUsedDesc
	ch <- budgetLimitDesc
}

func (c budgetCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(budgetUsedDesc, prometheus.GaugeValue, float64(c.b.Used()))
	ch <- prometheus.MustNewConstMetric(budgetLimitDesc, prometheus.GaugeValue, float64(c.b.Limit()))
}
