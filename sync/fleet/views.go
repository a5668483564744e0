package fleet

import (
	"sync"

	"github.com/edgeai/edge-node/sync/wire"
)

// LiveViews keeps every node's view up to date from a subscription to the
// nodes' status and presence topics (edgectl serve): Handle is the
// subscription's handler, Snapshot a copy for readers. Safe for
// concurrent use.
type LiveViews struct {
	tp       wire.Topics
	onChange func(node string)

	mu    sync.Mutex // guards views
	views map[string]*NodeView
}

// NewLiveViews returns empty views of the nodes under tp; onChange (may be
// nil) is called, outside the lock, after each message folded in.
func NewLiveViews(tp wire.Topics, onChange func(node string)) *LiveViews {
	return &LiveViews{tp: tp, onChange: onChange, views: map[string]*NodeView{}}
}

// Handle folds one status or presence message in (an mqttlink.Handler).
func (l *LiveViews) Handle(topic string, b []byte) {
	l.mu.Lock()
	node := ApplyNodeMessage(l.tp, l.views, topic, b)
	l.mu.Unlock()
	if node != "" && l.onChange != nil {
		l.onChange(node)
	}
}

// Snapshot returns a copy of every node's view (the views are copied; the
// decoded messages they point to are never changed, only replaced).
func (l *LiveViews) Snapshot() map[string]*NodeView {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]*NodeView, len(l.views))
	for k, v := range l.views {
		cp := *v
		out[k] = &cp
	}
	return out
}
