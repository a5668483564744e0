package wire

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

// Rejecter counts rejected messages (edge_link_rejected_total{kind,reason})
// and logs them, at most once per kind/reason per LogEvery.
type Rejecter struct {
	counter  *prometheus.CounterVec
	log      zerolog.Logger
	logEvery time.Duration

	mu         sync.Mutex           // guards lastLogged and suppressed
	lastLogged map[string]time.Time // kind/reason -> last log time
	suppressed map[string]int       // kind/reason -> rejections not logged since
}

// NewRejecter registers the rejection counter with reg (nil: not registered)
// and returns a Rejecter logging through log.
func NewRejecter(reg prometheus.Registerer, log zerolog.Logger) (*Rejecter, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edge_link_rejected_total",
		Help: "Messages from the cloud link rejected, by message kind and reason.",
	}, []string{"kind", "reason"})
	if reg != nil {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return &Rejecter{counter: c, log: log, logEvery: 10 * time.Second,
		lastLogged: map[string]time.Time{}, suppressed: map[string]int{}}, nil
}

// Observe counts and logs err if it is a rejection (or any other error, as
// kind "unknown"), and returns err unchanged. A nil err is ignored.
func (r *Rejecter) Observe(topic string, err error) error {
	if err == nil {
		return nil
	}
	kind, reason := ReasonOf(err)
	if kind == "" {
		kind, reason = "unknown", "error"
	}
	r.counter.WithLabelValues(kind, reason).Inc()
	key := kind + "/" + reason
	now := time.Now()
	r.mu.Lock()
	if now.Sub(r.lastLogged[key]) < r.logEvery {
		r.suppressed[key]++
		r.mu.Unlock()
		return err
	}
	n := r.suppressed[key]
	r.suppressed[key] = 0
	r.lastLogged[key] = now
	r.mu.Unlock()
	if len(topic) > 200 {
		topic = topic[:200]
	}
	r.log.Warn().Str("kind", kind).Str("reason", reason).Str("topic", topic).
		Int("suppressed", n).Err(err).Msg("rejected message")
	return err
}

// Count returns the number of rejections counted for kind/reason (for tests
// and status).
func (r *Rejecter) Count(kind, reason string) float64 {
	return testutil.ToFloat64(r.counter.WithLabelValues(kind, reason))
}
