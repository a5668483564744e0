package fleet

import (
	"context"
	"sync"
	"time"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/wire"
)

// Subscriber is what reading retained state needs (*mqttlink.Link).
type Subscriber interface {
	Subscribe(ctx context.Context, h mqttlink.Handler, filters ...string) error
	Unsubscribe(ctx context.Context, filters ...string) error
}

// ReadRetained subscribes to filter and collects the retained messages the
// broker sends, until no new one arrived for quiet after the SUBACK (MQTT
// has no "end of retained" marker), or ctx ends. The link must be connected.
func ReadRetained(ctx context.Context, link Subscriber, filter string, quiet time.Duration) (map[string][]byte, error) {
	return ReadRetainedAll(ctx, link, quiet, filter)
}

// ReadRetainedAll is ReadRetained over several filters at once: one
// SUBSCRIBE and one quiet wait for all of them.
func ReadRetainedAll(ctx context.Context, link Subscriber, quiet time.Duration, filters ...string) (map[string][]byte, error) {
	var mu sync.Mutex
	got := map[string][]byte{}
	kick := make(chan struct{}, 1)
	h := func(topic string, payload []byte) {
		mu.Lock()
		got[topic] = append([]byte(nil), payload...)
		mu.Unlock()
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if err := link.Subscribe(ctx, h, filters...); err != nil {
		return nil, err
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = link.Unsubscribe(uctx, filters...)
	}()
	t := time.NewTimer(quiet)
	defer t.Stop()
	for {
		select {
		case <-kick:
			t.Reset(quiet)
		case <-t.C:
			mu.Lock()
			defer mu.Unlock()
			out := make(map[string][]byte, len(got))
			for k, v := range got {
				if len(v) > 0 { // an empty retained payload is a deletion
					out[k] = v
				}
			}
			return out, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// ReadManifest reads and verifies the retained manifest of model/version.
func ReadManifest(ctx context.Context, link Subscriber, t wire.Topics, model, version string, keys models.KeySet, quiet time.Duration) (models.Manifest, bool, error) {
	topic := t.Manifest(model, version)
	got, err := ReadRetained(ctx, link, topic, quiet)
	if err != nil {
		return models.Manifest{}, false, err
	}
	b, ok := got[topic]
	if !ok {
		return models.Manifest{}, false, nil
	}
	m, _, err := wire.DecodeSignedManifest(b, keys, 0)
	return m, err == nil, err
}
