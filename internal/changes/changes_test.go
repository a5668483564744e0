package changes

import (
	"context"
	"testing"
	"time"
)

func TestFeedCoalescesAndCloses(t *testing.T) {
	var f Feed
	ctx, cancel := context.WithCancel(context.Background())
	a := f.Subscribe(ctx)
	b := f.Subscribe(context.Background())
	f.Notify()
	f.Notify() // coalesced with the first
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		default:
			t.Fatal("no value after Notify")
		}
		select {
		case <-ch:
			t.Fatal("two values for two Notifies before a read: not coalesced")
		default:
		}
	}
	cancel()
	select {
	case _, ok := <-a:
		if ok {
			t.Fatal("value after cancel")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("channel not closed after its context ended")
	}
	f.Close()
	f.Close()
	if _, ok := <-b; ok {
		t.Fatal("channel open after Close")
	}
	if _, ok := <-f.Subscribe(context.Background()); ok {
		t.Fatal("Subscribe after Close gave an open channel")
	}
}
