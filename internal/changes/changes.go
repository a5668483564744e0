// Package changes fans change notifications out to subscribers: a Feed's
// Notify gives every subscriber's channel a value, coalesced (a slow reader
// gets one value for many changes and reads the current state itself), so
// a notifier never blocks and no one polls.
package changes

import (
	"context"
	"sync"
)

// Feed is a set of subscribers. The zero value is ready to use.
type Feed struct {
	mu     sync.Mutex // guards subs and closed
	subs   map[chan struct{}]struct{}
	closed bool
}

// Subscribe returns a channel that receives a value after each Notify
// (coalesced). It is closed when ctx ends or the feed closes.
func (f *Feed) Subscribe(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		close(ch)
		return ch
	}
	if f.subs == nil {
		f.subs = map[chan struct{}]struct{}{}
	}
	f.subs[ch] = struct{}{}
	context.AfterFunc(ctx, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[ch]; ok {
			delete(f.subs, ch)
			close(ch)
		}
	})
	return ch
}

// Notify tells every subscriber that something changed.
func (f *Feed) Notify() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Close closes every subscriber's channel; later Subscribes get a closed
// channel. It is idempotent.
func (f *Feed) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for ch := range f.subs {
		close(ch)
	}
	f.subs = nil
}
