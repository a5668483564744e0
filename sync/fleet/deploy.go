package fleet

import (
	"context"
	"fmt"
	"time"

	"github.com/edgeai/edge-node/sync/wire"
)

// Target is a node or a group (exactly one set).
type Target struct {
	Node  string
	Group string
}

// Topic is the target's desired-state topic.
func (t Target) Topic(tp wire.Topics) (string, error) {
	switch {
	case t.Node != "" && t.Group == "":
		return tp.NodeDesired(t.Node), wire.ValidName(t.Node)
	case t.Group != "" && t.Node == "":
		return tp.GroupDesired(t.Group), wire.ValidName(t.Group)
	}
	return "", fmt.Errorf("fleet: exactly one of node or group")
}

// Link is what deploy and status need (*mqttlink.Link).
type Link interface {
	Publisher
	Subscriber
}

// Deploy reads the target's retained desired state, sets model to spec (or
// removes it with spec.Absent), and publishes it retained with the next
// generation. MQTT has no compare-and-swap: concurrent writers to one target
// race (docs/protocol.md); quiet bounds the wait for the retained state.
func Deploy(ctx context.Context, link Link, tp wire.Topics, target Target, model string, spec wire.ModelSpec, quiet time.Duration) (wire.DesiredState, error) {
	topic, err := target.Topic(tp)
	if err != nil {
		return wire.DesiredState{}, err
	}
	cur, err := ReadRetained(ctx, link, topic, quiet)
	if err != nil {
		return wire.DesiredState{}, err
	}
	return DeployOnto(ctx, link, tp, target, model, spec, cur)
}

// DeployOnto is Deploy over retained messages already read (they must
// include the target's desired-state topic when it has one), so a caller
// that reads more (status, manifests) waits for retained messages once.
func DeployOnto(ctx context.Context, link Publisher, tp wire.Topics, target Target, model string, spec wire.ModelSpec, retained map[string][]byte) (wire.DesiredState, error) {
	topic, err := target.Topic(tp)
	if err != nil {
		return wire.DesiredState{}, err
	}
	d := wire.DesiredState{Protocol: wire.Protocol, Models: map[string]wire.ModelSpec{}}
	if b, ok := retained[topic]; ok {
		prev, err := wire.DecodeDesired(b)
		if err != nil {
			return wire.DesiredState{}, fmt.Errorf("fleet: current desired state on %s is invalid (fix or clear it): %w", topic, err)
		}
		d = prev
	}
	d.Generation++
	d.Updated = time.Now().UTC().Format(time.RFC3339)
	if d.Models == nil {
		d.Models = map[string]wire.ModelSpec{}
	}
	d.Models[model] = spec
	b, err := d.Encode()
	if err != nil {
		return wire.DesiredState{}, err
	}
	return d, link.Publish(ctx, topic, true, b)
}

// NodeView is what the cloud knows about one node.
type NodeView struct {
	Node     string
	Status   *wire.Status
	Presence *wire.Presence
	// Err is the decode error of a malformed status or presence.
	Err error
}

// ReadNodes returns every node's retained status and presence.
func ReadNodes(ctx context.Context, link Subscriber, tp wire.Topics, quiet time.Duration) (map[string]*NodeView, error) {
	got, err := ReadRetainedAll(ctx, link, quiet, tp.AllStatus(), tp.AllPresence())
	if err != nil {
		return nil, err
	}
	return NodeViews(tp, got), nil
}

// NodeViews folds the status and presence messages among retained (other
// topics are skipped) into one view per node.
func NodeViews(tp wire.Topics, retained map[string][]byte) map[string]*NodeView {
	out := map[string]*NodeView{}
	for topic, b := range retained {
		if _, leaf, err := tp.ParseNodeTopic(topic); err == nil && (leaf == "status" || leaf == "presence") {
			ApplyNodeMessage(tp, out, topic, b)
		}
	}
	return out
}

// ApplyNodeMessage folds one status or presence message into views and
// returns the node it was about ("" if the topic is not a node topic).
func ApplyNodeMessage(tp wire.Topics, views map[string]*NodeView, topic string, b []byte) string {
	node, leaf, err := tp.ParseNodeTopic(topic)
	if err != nil {
		return ""
	}
	v := views[node]
	if v == nil {
		v = &NodeView{Node: node}
		views[node] = v
	}
	switch leaf {
	case "status":
		s, err := wire.DecodeStatus(b)
		if err != nil {
			v.Err = err
		} else {
			v.Status = &s
		}
	case "presence":
		p, err := wire.DecodePresence(b)
		if err != nil {
			v.Err = err
		} else {
			v.Presence = &p
		}
	}
	return node
}
