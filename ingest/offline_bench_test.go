package ingest

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/featurestore/featurestore/featurestore/offline"
	"github.com/featurestore/featurestore/featurestore/online"
	"github.com/featurestore/featurestore/featurestore/testenv"
)

// BenchmarkIngestOfflineLog measures what the offline log costs ingest: the
// topic of BenchmarkIngestThroughput (same data, same size, set by
// FEATURESTORE_BENCH_EVENTS) is produced once, and each iteration ingests
// it twice into fresh projects, once with the offline log (in a directory
// under the test's temporary directory, the writer's default thresholds)
// and once without, in alternating order so that drifts of the machine
// weigh on both alike. A run with the log is timed until every event is
// applied online and the writer's Close has committed the rest. Metrics:
//
//	online-events/s   ingest without the offline log
//	offline-events/s  ingest with it
//	offline/online    the ratio (target >= 0.8)
//	log-B/event       bytes of committed log files per event
//	online-go-cpu-us/event, offline-go-cpu-us/event
//	                  CPU of this process per event, without and with the
//	                  log (Linux only): what the log costs, less sensitive
//	                  than the rates to other load on the machine
//
//	set -a; eval "$(.ci/services.sh env)"; set +a
//	go test -run '^$' -bench 'BenchmarkIngestOfflineLog' -benchtime 1x -count 5 ./ingest/
func BenchmarkIngestOfflineLog(b *testing.B) {
	brokers := testenv.KafkaBrokers(b)
	rc := benchRedis(b)
	n := benchEvents(b)
	topic := testenv.UniqueName(b, "txns")
	testenv.CreateTopic(b, brokers, topic, benchPartitions)
	r, src := benchRegistry(b, topic)
	data := produceHistory(b, brokers, topic, n)
	store := online.New(rc, online.Options{})
	ctx := context.Background()

	cpuKnown := true
	run := func(withLog bool) (time.Duration, float64, int64) {
		project := benchProject(b, rc)
		pos := NewPositions(rc, project)
		a, err := NewApplier(project, r, src, store, pos, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		var w *offline.Writer
		var st *offline.Dir
		if withLog {
			if st, err = offline.NewDir(b.TempDir()); err != nil {
				b.Fatal(err)
			}
			if w, err = offline.OpenWriter(ctx, st, project, offline.Options{}); err != nil {
				b.Fatal(err)
			}
			if err := a.SetOffline(w, r); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		cpu0, ok0 := processCPU()
		start := time.Now()
		stop := startIngest(b, brokers, topic, project, newBenchHandler(a))
		err = waitApplied(pos, topic, data.ends, benchIngestTimeout)
		if err == nil && w != nil {
			err = w.Close(ctx)
		}
		took := time.Since(start)
		cpu1, ok1 := processCPU()
		cpuKnown = cpuKnown && ok0 && ok1
		stop()
		if err != nil {
			b.Fatal(err)
		}
		var bytes, rows int64
		if withLog {
			snap, err := offline.ReadSnapshot(ctx, st, project, benchView)
			if err != nil {
				b.Fatal(err)
			}
			for _, f := range snap.Between(-1<<62, 1<<62) {
				bytes += f.Bytes
				rows += f.Rows
			}
			if rows != int64(data.total) {
				b.Fatalf("the offline log holds %d events, want %d", rows, data.total)
			}
		}
		keys, err := viewKeys(ctx, rc, project)
		if err == nil {
			err = dropProject(ctx, rc, project, keys)
		}
		if err != nil {
			b.Fatal(err)
		}
		return took, cpu1 - cpu0, bytes
	}

	var onTook, offTook time.Duration
	var onCPU, offCPU float64
	var logBytes int64
	i := 0
	for b.Loop() {
		for _, withLog := range [][]bool{{false, true}, {true, false}}[i%2] {
			took, cpu, bytes := run(withLog)
			if withLog {
				offTook, offCPU = offTook+took, offCPU+cpu
				logBytes += bytes
			} else {
				onTook, onCPU = onTook+took, onCPU+cpu
			}
		}
		i++
	}
	events := float64(data.total) * float64(i)
	b.ReportMetric(events/onTook.Seconds(), "online-events/s")
	b.ReportMetric(events/offTook.Seconds(), "offline-events/s")
	b.ReportMetric(onTook.Seconds()/offTook.Seconds(), "offline/online")
	b.ReportMetric(float64(logBytes)/events, "log-B/event")
	if cpuKnown {
		b.ReportMetric(onCPU*1e6/events, "online-go-cpu-us/event")
		b.ReportMetric(offCPU*1e6/events, "offline-go-cpu-us/event")
	}
}
