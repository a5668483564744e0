package inference

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Latency histogram layout: bucket i holds durations in
// (bound(i-1), bound(i)], bound(i) = 1µs·2^(i/4): four buckets per doubling
// (each ~19 % wide) from 1 µs to ~33 s; the last bucket takes everything
// longer. Quantiles are bucket upper bounds, so they over-estimate by at most
// one bucket width (19 %) — plenty for a p99-ratio gate of 1.5× or more.
const (
	latencyBucketsPerDoubling = 4
	latencyBuckets            = 25*latencyBucketsPerDoubling + 1
)

// LatencyBound returns the upper bound of histogram bucket i.
func LatencyBound(i int) time.Duration {
	return time.Duration(float64(time.Microsecond) * math.Exp2(float64(i)/latencyBucketsPerDoubling))
}

func latencyBucket(d time.Duration) int {
	if d <= time.Microsecond {
		return 0
	}
	i := int(math.Ceil(latencyBucketsPerDoubling * math.Log2(float64(d)/float64(time.Microsecond))))
	return min(i, latencyBuckets-1)
}

// VersionStats are one routed version's counters, updated lock-free on the
// request path (the drift figures under a mutex, off the primary path).
type VersionStats struct {
	requests atomic.Uint64
	errors   atomic.Uint64
	latency  [latencyBuckets]atomic.Uint64
	sumNanos atomic.Uint64

	// frontend holds what the protocol frontends report per request
	// (Triton's statistics extension).
	frontend frontendStats

	// driftMu guards drift.
	driftMu sync.Mutex
	drift   DriftTotals
}

// RequestTimes is one inference request as a protocol frontend saw it,
// from decoding its body to writing its response.
type RequestTimes struct {
	// Failed is true when the request got an error answer.
	Failed bool
	// Total is the whole request; Input reading and decoding the inputs,
	// Queue waiting for a session slot, Infer running the model (queue
	// excluded), Output encoding and writing the response. Only Total
	// is set for a failed request.
	Total, Input, Queue, Infer, Output time.Duration
	// Inferences is how many inferences the request carried (its batch
	// size; 1 for a model that does not batch).
	Inferences uint64
	// SharedRun is RunStats.SharedRun: the request's model execution is
	// counted with another request of its dynamic batch.
	SharedRun bool
	// At is when the request arrived.
	At time.Time
}

// Duration is a count of events and their summed time (Triton's
// StatisticDuration).
type Duration struct {
	Count uint64
	Total time.Duration
}

type durationCounter struct{ count, nanos atomic.Uint64 }

func (d *durationCounter) add(t time.Duration) {
	d.count.Add(1)
	d.nanos.Add(uint64(max(t, 0)))
}

func (d *durationCounter) load() Duration {
	return Duration{Count: d.count.Load(), Total: time.Duration(d.nanos.Load())}
}

type frontendStats struct {
	success, fail, input, queue, infer, output durationCounter
	inferences, executions                     atomic.Uint64
	lastNanos                                  atomic.Int64 // UnixNano of the last request's arrival
}

// FrontendTotals are the per-request totals of Triton's statistics
// extension, summed over every request of the version.
type FrontendTotals struct {
	Success, Fail                     Duration
	Queue, ComputeInput, ComputeInfer Duration
	ComputeOutput                     Duration
	// InferenceCount sums the requests' batch sizes; ExecutionCount counts
	// model executions: one per successful request, one per dynamic batch.
	InferenceCount, ExecutionCount uint64
	// LastInference is when the last request arrived (zero: none yet).
	LastInference time.Time
}

// ObserveRequest records one request a frontend answered: lock-free, a
// handful of atomic adds.
func (s *VersionStats) ObserveRequest(t RequestTimes) {
	f := &s.frontend
	if t.At.IsZero() {
		t.At = time.Now()
	}
	if at := t.At.UnixNano(); at > f.lastNanos.Load() {
		f.lastNanos.Store(at) // a racing later request may be overwritten by an earlier one: off by microseconds
	}
	if t.Failed {
		f.fail.add(t.Total)
		return
	}
	f.success.add(t.Total)
	f.input.add(t.Input)
	f.queue.add(t.Queue)
	f.infer.add(t.Infer)
	f.output.add(t.Output)
	f.inferences.Add(max(t.Inferences, 1))
	if !t.SharedRun {
		f.executions.Add(1)
	}
}

func (f *frontendStats) load() FrontendTotals {
	out := FrontendTotals{
		Success: f.success.load(), Fail: f.fail.load(),
		Queue: f.queue.load(), ComputeInput: f.input.load(), ComputeInfer: f.infer.load(), ComputeOutput: f.output.load(),
		InferenceCount: f.inferences.Load(), ExecutionCount: f.executions.Load(),
	}
	if n := f.lastNanos.Load(); n != 0 {
		out.LastInference = time.Unix(0, n)
	}
	return out
}

// DriftTotals accumulates shadow comparisons (on the candidate's stats).
type DriftTotals struct {
	// Compared counts mirrored requests whose outputs were compared;
	// Mismatched those whose outputs differed in names, types or shapes.
	Compared, Mismatched uint64
	// MaxAbsDiff is the largest |candidate − primary| of any numeric
	// element (+Inf after a mismatch or a NaN on one side only).
	MaxAbsDiff float64
	// CosineSum/CosineN give the mean cosine distance over float outputs.
	CosineSum float64
	CosineN   uint64
	// ArgmaxRows/ArgmaxAgree count rows (argmax over an output's last axis)
	// and those whose argmax agreed.
	ArgmaxRows, ArgmaxAgree uint64
}

// MeanCosineDistance returns CosineSum/CosineN (0 when nothing was compared).
func (d DriftTotals) MeanCosineDistance() float64 {
	if d.CosineN == 0 {
		return 0
	}
	return d.CosineSum / float64(d.CosineN)
}

// ArgmaxAgreement returns ArgmaxAgree/ArgmaxRows (1 when no rows).
func (d DriftTotals) ArgmaxAgreement() float64 {
	if d.ArgmaxRows == 0 {
		return 1
	}
	return float64(d.ArgmaxAgree) / float64(d.ArgmaxRows)
}

func (d *DriftTotals) add(o Drift) {
	d.Compared++
	if o.Mismatch != "" {
		d.Mismatched++
	}
	d.MaxAbsDiff = math.Max(d.MaxAbsDiff, o.MaxAbsDiff)
	d.CosineSum += o.CosineSum
	d.CosineN += o.CosineN
	d.ArgmaxRows += o.ArgmaxRows
	d.ArgmaxAgree += o.ArgmaxAgree
}

// countsAsError reports whether a Run error is the version's fault (a
// health signal): client errors, unavailability and cancellation are not.
func countsAsError(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	for _, e := range []error{ErrInvalidArgument, ErrUnavailable, ErrUnsupported, ErrNotFound, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return false
		}
	}
	return true
}

// observe records one Run: every Run is a request; an error that counts
// is an error; a success adds its latency.
func (s *VersionStats) observe(ctx context.Context, d time.Duration, err error) {
	s.requests.Add(1)
	if err != nil {
		if countsAsError(ctx, err) {
			s.errors.Add(1)
		}
		return
	}
	s.latency[latencyBucket(d)].Add(1)
	s.sumNanos.Add(uint64(max(d, 0)))
}

func (s *VersionStats) addDrift(d Drift) {
	s.driftMu.Lock()
	s.drift.add(d)
	s.driftMu.Unlock()
}

// Snapshot returns a copy of the counters. The counters are read one by
// one, so a snapshot taken under load may be off by the few requests that
// finished while it was taken.
func (s *VersionStats) Snapshot() StatsSnapshot {
	var out StatsSnapshot
	out.Requests = s.requests.Load()
	out.Errors = s.errors.Load()
	for i := range s.latency {
		out.Latency[i] = s.latency[i].Load()
	}
	out.LatencySum = time.Duration(s.sumNanos.Load())
	out.Frontend = s.frontend.load()
	s.driftMu.Lock()
	out.Drift = s.drift
	s.driftMu.Unlock()
	return out
}

// StatsSnapshot is a point-in-time copy of VersionStats.
type StatsSnapshot struct {
	Requests, Errors uint64
	// Latency[i] counts successful Runs in bucket i (see LatencyBound).
	Latency    [latencyBuckets]uint64
	LatencySum time.Duration
	Drift      DriftTotals
	// Frontend are the protocol frontends' per-request totals; Sub does
	// not window them (they are reported as totals).
	Frontend FrontendTotals
}

// Sub returns the counts accumulated between old and s (a window). Drift
// maxima cannot be windowed: MaxAbsDiff is s's (since the version was
// routed); the sums and counts are windowed.
func (s StatsSnapshot) Sub(old StatsSnapshot) StatsSnapshot {
	out := s
	out.Requests -= old.Requests
	out.Errors -= old.Errors
	for i := range out.Latency {
		out.Latency[i] -= old.Latency[i]
	}
	out.LatencySum -= old.LatencySum
	d, o := &out.Drift, old.Drift
	d.Compared -= o.Compared
	d.Mismatched -= o.Mismatched
	d.CosineSum -= o.CosineSum
	d.CosineN -= o.CosineN
	d.ArgmaxRows -= o.ArgmaxRows
	d.ArgmaxAgree -= o.ArgmaxAgree
	return out
}

// Successes is the number of latency samples.
func (s StatsSnapshot) Successes() uint64 {
	var n uint64
	for _, c := range s.Latency {
		n += c
	}
	return n
}

// ErrorRate is Errors/Requests (0 without requests).
func (s StatsSnapshot) ErrorRate() float64 {
	if s.Requests == 0 {
		return 0
	}
	return float64(s.Errors) / float64(s.Requests)
}

// Quantile returns the q-quantile (0 < q ≤ 1) of successful Run latencies,
// as the upper bound of the bucket holding it; 0 without samples.
func (s StatsSnapshot) Quantile(q float64) time.Duration {
	n := s.Successes()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	var cum uint64
	for i, c := range s.Latency {
		cum += c
		if cum >= rank {
			return LatencyBound(i)
		}
	}
	return LatencyBound(latencyBuckets - 1)
}
