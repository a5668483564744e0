package fleet

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgeai/edge-node/models"
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

// DeployOptions tune DeployWith.
type DeployOptions struct {
	// Quiet bounds the wait for retained messages (ReadRetained).
	Quiet time.Duration
	// ReplaceInvalid replaces a retained state that does not decode (bad
	// JSON, a generation over 2^53-1, a signature that does not verify
	// against Key) by one holding only the deployed model, at the
	// generation after the highest that the nodes' retained status reports
	// for the target: the nodes rejected the invalid state and still hold
	// their last valid generation, so a lower one would be stale to them.
	ReplaceInvalid bool
	// Key, when set, signs the desired state (wire.SignDesired); the
	// retained state it builds on must then be signed by the same key.
	// Without it the state is published unsigned.
	Key ed25519.PrivateKey
	// Expires, with Key, sets the signed state's expires this far from
	// now: the nodes refuse it after that, so it must be renewed (edgectl
	// deploy --renew) before. Zero: no expiry.
	Expires time.Duration
}

// DeployWith reads the target's retained desired state, sets model to spec
// (or removes it with spec.Absent), and publishes it retained with the next
// generation (naming its target when signed). MQTT has no compare-and-swap:
// concurrent writers to one target race (docs/protocol.md).
//
// A generation is at most wire.MaxGeneration: DeployWith never wraps, it
// fails. An invalid retained state (one the nodes reject) fails it too,
// unless opts.ReplaceInvalid.
func DeployWith(ctx context.Context, link Link, tp wire.Topics, target Target, model string, spec wire.ModelSpec, opts DeployOptions) (wire.DesiredState, error) {
	topic, err := target.Topic(tp)
	if err != nil {
		return wire.DesiredState{}, err
	}
	cur, err := ReadRetained(ctx, link, topic, opts.Quiet)
	if err != nil {
		return wire.DesiredState{}, err
	}
	return DeployOnto(ctx, link, tp, target, model, spec, cur, opts)
}

// DeployOnto is DeployWith over retained messages already read (they must
// include the target's desired-state topic when it has one), so a caller
// that reads more (status, manifests) waits for retained messages once. An
// empty model changes no entry: the state is only written again at the next
// generation (with a new expiry: a renewal).
func DeployOnto(ctx context.Context, link Link, tp wire.Topics, target Target, model string, spec wire.ModelSpec, retained map[string][]byte, opts DeployOptions) (wire.DesiredState, error) {
	topic, err := target.Topic(tp)
	if err != nil {
		return wire.DesiredState{}, err
	}
	want, err := tp.DesiredTarget(topic)
	if err != nil {
		return wire.DesiredState{}, err
	}
	d := wire.DesiredState{Protocol: wire.Protocol, Models: map[string]wire.ModelSpec{}}
	if b, ok := retained[topic]; ok {
		prev, err := DecodeOwn(b, want, opts.Key)
		switch {
		case err == nil:
			d = prev
		case !opts.ReplaceInvalid:
			return wire.DesiredState{}, fmt.Errorf("fleet: current desired state on %s is invalid (replace it: edgectl deploy --replace-invalid): %w", topic, err)
		default:
			if d.Generation, err = reportedGeneration(ctx, link, tp, target, opts.Quiet); err != nil {
				return wire.DesiredState{}, err
			}
		}
	}
	if d.Generation >= wire.MaxGeneration {
		return wire.DesiredState{}, fmt.Errorf("fleet: %s is at generation %d, the largest there is (2^53-1)", topic, d.Generation)
	}
	d.Generation++
	d.Updated = time.Now().UTC().Format(time.RFC3339)
	// Only a signed state names its target: nodes older than the field
	// reject unknown fields, and an unsigned state gains nothing from it.
	d.Target = ""
	if opts.Key != nil {
		d.Target = want
	}
	d.Expires = ""
	if opts.Expires > 0 {
		if opts.Key == nil {
			return wire.DesiredState{}, errors.New("fleet: an expiry needs a signing key (only a signed state's expires protects anything)")
		}
		d.Expires = time.Now().Add(opts.Expires).UTC().Format(time.RFC3339)
	}
	if d.Models == nil {
		d.Models = map[string]wire.ModelSpec{}
	}
	if model != "" {
		d.Models[model] = spec
	}
	var b []byte
	if opts.Key != nil {
		b, err = wire.SignDesired(d, opts.Key)
	} else {
		b, err = d.Encode()
	}
	if err != nil {
		return wire.DesiredState{}, err
	}
	return d, link.Publish(ctx, topic, true, b)
}

// DecodeOwn decodes the retained desired state a writer builds on (target
// is the topic's, wire.Topics.DesiredTarget): with a key, only a state
// signed by that key; without one, an unsigned state or the payload of a
// signed one (whose signature the nodes check, not the writer).
func DecodeOwn(b []byte, target string, key ed25519.PrivateKey) (wire.DesiredState, error) {
	if key != nil {
		ks := models.KeySet{}
		ks.Add(key.Public().(ed25519.PublicKey))
		d, _, err := wire.DecodeDesiredMessage(b, target, wire.DesiredPolicy{Keys: ks, RequireSigned: true, IgnoreExpiry: true})
		return d, err
	}
	var sd wire.SignedDesired
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if dec.Decode(&sd) == nil && len(sd.Payload) > 0 {
		b = sd.Payload
	}
	d, err := wire.DecodeDesired(b)
	if err == nil && d.Target != "" && d.Target != target {
		err = fmt.Errorf("it names %s", d.Target)
	}
	return d, err
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

// reportedGeneration is the highest generation of target's desired state
// that any node's retained status reports (statuses that do not decode are
// skipped).
func reportedGeneration(ctx context.Context, link Subscriber, tp wire.Topics, target Target, quiet time.Duration) (uint64, error) {
	views, err := ReadNodes(ctx, link, tp, quiet)
	if err != nil {
		return 0, err
	}
	var top uint64
	for _, v := range views {
		if v.Status == nil {
			continue
		}
		g := v.Status.Desired.Groups[target.Group]
		if target.Node != "" {
			if v.Node != target.Node {
				continue
			}
			g = v.Status.Desired.Node
		}
		top = max(top, g)
	}
	return top, nil
}
