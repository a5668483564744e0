// Package mqttlinktest starts mqttlink sessions for tests, the one copy of
// the "New, Run in a goroutine, stop at cleanup, wait until up" that every
// broker test needs. Import it from _test.go files only (scripts/deadcode.sh
// checks that no production package does).
package mqttlinktest

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/sync/mqttlink"
)

// Timeout bounds WaitUp (and Connect's wait): generous, because the
// machines that run the tests are shared; it only stops a hung test.
const Timeout = 2 * time.Minute

// Options are the optional parts of a test session.
type Options struct {
	// Outbox is flushed by the link after every connect (nil: none).
	Outbox mqttlink.Outbox
	// Registerer gets the link's metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Log is the link's logger (the zero Logger discards).
	Log zerolog.Logger
}

// Start runs a Link on cfg and returns at once, connected or not, with a
// function that stops it (Run's context cancelled, Run waited for, Close);
// the stop also runs when the test ends, and is idempotent. The backoff
// between connection attempts is 50–500 ms, whatever cfg says, so tests
// reconnect quickly.
func Start(t testing.TB, cfg mqttlink.Config, opts Options) (*mqttlink.Link, func()) {
	t.Helper()
	cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
	l, err := mqttlink.New(cfg, opts.Outbox, opts.Log, opts.Registerer)
	if err != nil {
		t.Fatalf("mqttlink %s: %v", cfg.ClientID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	stop := func() { cancel(); <-done; l.Close() }
	t.Cleanup(stop)
	return l, stop
}

// Connect starts a session as client clientID on url (mqttlink.DefaultConfig
// otherwise) until the test ends and waits until it is up.
func Connect(t testing.TB, url, clientID string) *mqttlink.Link {
	t.Helper()
	cfg := mqttlink.DefaultConfig()
	cfg.BrokerURL, cfg.ClientID = url, clientID
	l, _ := Start(t, cfg, Options{})
	WaitUp(t, l)
	return l
}

// WaitUp waits up to Timeout until l's session is up.
func WaitUp(t testing.TB, l *mqttlink.Link) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := l.WaitConnected(ctx); err != nil {
		t.Fatalf("mqtt session not up: %v", err)
	}
}
