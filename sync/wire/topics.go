package wire

import (
	"fmt"
	"regexp"
	"strings"
)

// DefaultRoot is the default topic root. The "v1" is the protocol's major
// version: a breaking change gets a new root.
const DefaultRoot = "edgeai/v1"

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName reports whether s may be used as a node id, group, model name or
// version in a topic: 1–64 characters of [A-Za-z0-9._-], not starting with
// '.', '_' or '-'.
func ValidName(s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("invalid name %q: want 1-64 of [A-Za-z0-9._-], starting with a letter or digit", s)
	}
	return nil
}

// ValidSHA256 reports whether s is 64 lowercase hex digits.
func ValidSHA256(s string) error {
	if len(s) != 64 {
		return fmt.Errorf("invalid sha256 %.80q: want 64 lowercase hex digits", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("invalid sha256 %.80q: want 64 lowercase hex digits", s)
		}
	}
	return nil
}

// Topics builds and parses topic names under one root.
type Topics struct {
	Root string // e.g. "edgeai/v1", no trailing slash
}

// NewTopics checks root and returns Topics for it. An empty root means
// DefaultRoot.
func NewTopics(root string) (Topics, error) {
	if root == "" {
		root = DefaultRoot
	}
	root = strings.TrimSuffix(root, "/")
	if root == "" || strings.ContainsAny(root, "+#\x00") || strings.HasPrefix(root, "/") || strings.HasPrefix(root, "$") {
		return Topics{}, fmt.Errorf("invalid topic root %q", root)
	}
	return Topics{Root: root}, nil
}

// NodeDesired is the retained desired state of one node.
func (t Topics) NodeDesired(node string) string { return t.Root + "/nodes/" + node + "/desired" }

// GroupDesired is the retained desired state of a group of nodes.
func (t Topics) GroupDesired(group string) string { return t.Root + "/groups/" + group + "/desired" }

// Status is a node's retained status.
func (t Topics) Status(node string) string { return t.Root + "/nodes/" + node + "/status" }

// Presence is a node's retained presence (its Last Will sets online=false).
func (t Topics) Presence(node string) string { return t.Root + "/nodes/" + node + "/presence" }

// Keys is the retained, root-signed key list (KeyList).
func (t Topics) Keys() string { return t.Root + "/keys" }

// Events is a node's event stream (not retained).
func (t Topics) Events(node string) string { return t.Root + "/nodes/" + node + "/events" }

// Manifest is the retained signed manifest of a model version.
func (t Topics) Manifest(model, version string) string {
	return t.Root + "/models/" + model + "/versions/" + version + "/manifest"
}

// Chunk is the retained topic of one chunk, named by its sha256.
func (t Topics) Chunk(sha string) string { return t.Root + "/chunks/" + sha }

// AllStatus matches every node's status.
func (t Topics) AllStatus() string { return t.Root + "/nodes/+/status" }

// AllPresence matches every node's presence.
func (t Topics) AllPresence() string { return t.Root + "/nodes/+/presence" }

func (t Topics) rel(topic string) ([]string, bool) {
	if !strings.HasPrefix(topic, t.Root+"/") {
		return nil, false
	}
	return strings.Split(topic[len(t.Root)+1:], "/"), true
}

// ParseChunk returns the sha256 named by a chunk topic.
func (t Topics) ParseChunk(topic string) (string, error) {
	p, ok := t.rel(topic)
	if !ok || len(p) != 2 || p[0] != "chunks" {
		return "", Reject(KindTopic, ReasonBadTopic, "not a chunk topic: %.200q", topic)
	}
	if err := ValidSHA256(p[1]); err != nil {
		return "", &RejectError{Kind: KindChunk, Reason: ReasonBadTopic, Err: err}
	}
	return p[1], nil
}

// ParseManifest returns the model and version named by a manifest topic.
func (t Topics) ParseManifest(topic string) (model, version string, err error) {
	p, ok := t.rel(topic)
	if !ok || len(p) != 5 || p[0] != "models" || p[2] != "versions" || p[4] != "manifest" ||
		ValidName(p[1]) != nil || ValidName(p[3]) != nil {
		return "", "", Reject(KindTopic, ReasonBadTopic, "not a manifest topic: %.200q", topic)
	}
	return p[1], p[3], nil
}

// ParseNodeTopic returns the node id and the last segment ("desired",
// "status", "presence", "events") of a per-node topic.
func (t Topics) ParseNodeTopic(topic string) (node, leaf string, err error) {
	p, ok := t.rel(topic)
	if !ok || len(p) != 3 || p[0] != "nodes" || ValidName(p[1]) != nil {
		return "", "", Reject(KindTopic, ReasonBadTopic, "not a node topic: %.200q", topic)
	}
	switch p[2] {
	case "desired", "status", "presence", "events":
		return p[1], p[2], nil
	}
	return "", "", Reject(KindTopic, ReasonBadTopic, "unknown node topic: %.200q", topic)
}

// ParseGroupDesired returns the group named by a group desired-state topic.
func (t Topics) ParseGroupDesired(topic string) (string, error) {
	p, ok := t.rel(topic)
	if !ok || len(p) != 3 || p[0] != "groups" || p[2] != "desired" || ValidName(p[1]) != nil {
		return "", Reject(KindTopic, ReasonBadTopic, "not a group desired topic: %.200q", topic)
	}
	return p[1], nil
}

// KindOf names the kind of message a topic carries (KindDesired,
// KindManifest, KindChunk, KindStatus, KindPresence, KindEvent, KindKeys), KindTopic
// when it is none of the protocol's topics.
func (t Topics) KindOf(topic string) string {
	if _, err := t.ParseChunk(topic); err == nil {
		return KindChunk
	}
	if _, _, err := t.ParseManifest(topic); err == nil {
		return KindManifest
	}
	if _, err := t.ParseGroupDesired(topic); err == nil {
		return KindDesired
	}
	if topic == t.Keys() {
		return KindKeys
	}
	if _, leaf, err := t.ParseNodeTopic(topic); err == nil {
		return map[string]string{"desired": KindDesired, "status": KindStatus, "presence": KindPresence, "events": KindEvent}[leaf]
	}
	return KindTopic
}

// Match reports whether an MQTT topic filter (with + and # wildcards) matches
// a topic name.
func Match(filter, topic string) bool {
	if filter == topic {
		return true
	}
	fs := strings.Split(filter, "/")
	ts := strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return i < len(fs) && !(i == 0 && strings.HasPrefix(topic, "$"))
		}
		if i >= len(ts) {
			return false
		}
		if f == "+" {
			if i == 0 && strings.HasPrefix(topic, "$") {
				return false
			}
			continue
		}
		if f != ts[i] {
			return false
		}
	}
	return len(fs) == len(ts)
}
