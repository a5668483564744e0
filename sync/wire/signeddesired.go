package wire

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edgeai/edge-node/models"
)

// Envelope is a signed payload, the shape of a manifest's envelope
// (models.SignedManifest): Payload is the signed JSON exactly as signed
// (standard base64 in the message), Signature the ed25519 signature over
// those bytes by the key KeyID names.
type Envelope struct {
	Payload   []byte `json:"payload"`
	KeyID     string `json:"key_id"`
	Signature []byte `json:"signature"`
}

// SignedDesired is a desired state signed like a manifest. The signed state
// names its Target, so it cannot be replayed onto another node's or group's
// topic, and carries its generation, so an older one replayed on its own
// topic is stale.
type SignedDesired = Envelope

// DesiredPolicy says which desired-state messages a node accepts. The zero
// value accepts unsigned ones (and verifies signed ones against no key).
type DesiredPolicy struct {
	// Keys verify signed desired state (the node's manifest keys).
	Keys models.Keys
	// RequireSigned refuses unsigned desired state (ReasonUnsigned).
	RequireSigned bool
	// Now is the clock a state's expires is read on (nil: the system
	// clock).
	Now func() time.Time
	// IgnoreExpiry accepts a state past its expires: a writer building on
	// its own retained state (fleet.DecodeOwn), which it is about to renew.
	IgnoreExpiry bool
}

// checkExpiry refuses a state past its Expires (plus models.ClockSkew).
func (p DesiredPolicy) checkExpiry(d DesiredState) error {
	if d.Expires == "" || p.IgnoreExpiry {
		return nil
	}
	exp, err := time.Parse(time.RFC3339Nano, d.Expires) // valid: DecodeDesired checked it
	if err != nil {
		return Reject(KindDesired, ReasonBadField, "expires: %v", err)
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	if t := now(); t.After(exp.Add(models.ClockSkew)) {
		return Reject(KindDesired, ReasonExpired, "generation %d expired at %s (now %s)", d.Generation,
			exp.UTC().Format(time.RFC3339), t.UTC().Format(time.RFC3339))
	}
	return nil
}

// DesiredTarget returns the Target a desired state on topic must name:
// "node/{node}" or "group/{group}".
func (t Topics) DesiredTarget(topic string) (string, error) {
	if g, err := t.ParseGroupDesired(topic); err == nil {
		return "group/" + g, nil
	}
	if n, leaf, err := t.ParseNodeTopic(topic); err == nil && leaf == "desired" {
		return "node/" + n, nil
	}
	return "", Reject(KindTopic, ReasonBadTopic, "not a desired-state topic: %.200q", topic)
}

func validTarget(s string) error {
	kind, name, ok := strings.Cut(s, "/")
	if !ok || (kind != "node" && kind != "group") {
		return fmt.Errorf("target %.80q: want node/{id} or group/{name}", s)
	}
	return ValidName(name)
}

// SignDesired validates d, which must name its Target, and returns the
// signed message to publish on the target's desired topic.
func SignDesired(d DesiredState, priv ed25519.PrivateKey) ([]byte, error) {
	if d.Target == "" {
		return nil, Reject(KindDesired, ReasonBadField, "a signed desired state must name its target")
	}
	payload, err := d.Encode()
	if err != nil {
		return nil, err
	}
	pub := priv.Public().(ed25519.PublicKey)
	b, err := json.Marshal(SignedDesired{Payload: payload, KeyID: KeyID(pub), Signature: ed25519.Sign(priv, payload)})
	if err != nil {
		return nil, err
	}
	if len(b) > MaxControlBytes {
		return nil, Reject(KindDesired, ReasonOversize, "signed desired state of %d bytes, limit %d", len(b), MaxControlBytes)
	}
	return b, nil
}

// DecodeDesiredMessage decodes a message from the desired-state topic whose
// target (DesiredTarget) is target: a SignedDesired envelope (an object with
// a "payload") or, unless p.RequireSigned, a plain DesiredState. A signed
// one must verify against p.Keys and name target; an unsigned one that names
// a target must name this one. signed reports which it was.
func DecodeDesiredMessage(b []byte, target string, p DesiredPolicy) (d DesiredState, signed bool, err error) {
	const k = KindDesired
	if len(b) > MaxControlBytes {
		return DesiredState{}, false, Reject(k, ReasonOversize, "%d bytes, limit %d", len(b), MaxControlBytes)
	}
	var sd SignedDesired
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if dec.Decode(&sd) == nil && len(sd.Payload) > 0 {
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return DesiredState{}, true, Reject(k, ReasonBadJSON, "trailing data after JSON value")
		}
		pub, err := models.LookupKey(p.Keys, sd.KeyID)
		if err != nil {
			return DesiredState{}, true, keyReject(k, err)
		}
		if len(sd.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, sd.Payload, sd.Signature) {
			return DesiredState{}, true, Reject(k, ReasonBadSignature, "signature by key %.40q does not verify", sd.KeyID)
		}
		if d, err = DecodeDesired(sd.Payload); err != nil {
			return DesiredState{}, true, err
		}
		if d.Target != target {
			return DesiredState{}, true, Reject(k, ReasonWrongTarget, "signed for %.80q, published on %s's topic", d.Target, target)
		}
		if err := p.checkExpiry(d); err != nil {
			return DesiredState{}, true, err
		}
		return d, true, nil
	}
	if p.RequireSigned {
		return DesiredState{}, false, Reject(k, ReasonUnsigned, "this node accepts only desired state signed by a trusted key (cloud.allow_unsigned_desired is false)")
	}
	if d, err = DecodeDesired(b); err != nil {
		return DesiredState{}, false, err
	}
	if d.Target != "" && d.Target != target {
		return DesiredState{}, false, Reject(k, ReasonWrongTarget, "names %.80q, published on %s's topic", d.Target, target)
	}
	if err := p.checkExpiry(d); err != nil {
		return DesiredState{}, false, err
	}
	return d, false, nil
}
