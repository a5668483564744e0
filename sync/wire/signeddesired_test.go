package wire

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeai/edge-node/models"
)

func signedDesired(t testing.TB, priv ed25519.PrivateKey, d DesiredState) []byte {
	t.Helper()
	b, err := SignDesired(d, priv)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeDesiredMessage(t *testing.T) {
	priv, keys := testKey(t)
	other, _ := testKey(t)
	d := DesiredState{Protocol: 1, Generation: 5, Target: "node/n1", Models: map[string]ModelSpec{"m": {Version: "2"}}}
	good := signedDesired(t, priv, d)
	var sd SignedDesired
	if err := json.Unmarshal(good, &sd); err != nil {
		t.Fatal(err)
	}
	sd.Payload = []byte(strings.Replace(string(sd.Payload), `"version":"2"`, `"version":"1"`, 1))
	tampered, _ := json.Marshal(sd)
	unsigned, _ := DesiredState{Protocol: 1, Generation: 5, Models: map[string]ModelSpec{}}.Encode()
	unsignedOther, _ := DesiredState{Protocol: 1, Generation: 5, Target: "node/n2", Models: map[string]ModelSpec{}}.Encode()
	strict := DesiredPolicy{Keys: keys, RequireSigned: true}
	lax := DesiredPolicy{Keys: keys}

	got, signed, err := DecodeDesiredMessage(good, "node/n1", strict)
	if err != nil || !signed || got.Generation != 5 || got.Models["m"].Version != "2" {
		t.Fatalf("good signed state: %+v %v %v", got, signed, err)
	}
	if _, signed, err := DecodeDesiredMessage(unsigned, "node/n1", lax); err != nil || signed {
		t.Fatalf("unsigned state where allowed: %v %v", signed, err)
	}
	for _, c := range []struct {
		name   string
		in     []byte
		target string
		p      DesiredPolicy
		reason string
	}{
		{"unsigned where signatures are required", unsigned, "node/n1", strict, ReasonUnsigned},
		{"signed by an untrusted key", signedDesired(t, other, d), "node/n1", strict, ReasonUnknownKey},
		{"tampered payload", tampered, "node/n1", strict, ReasonBadSignature},
		{"short signature", []byte(`{"payload":"e30=","key_id":"` + KeyID(priv.Public().(ed25519.PublicKey)) + `","signature":"AAAA"}`), "node/n1", strict, ReasonBadSignature},
		{"replayed onto another node's topic", good, "node/n2", strict, ReasonWrongTarget},
		{"replayed onto a group's topic", good, "group/cams", lax, ReasonWrongTarget},
		{"unsigned naming another node", unsignedOther, "node/n1", lax, ReasonWrongTarget},
		{"signed garbage", signedBytes(t, priv, []byte(`{"protocol":1}`)), "node/n1", strict, ReasonBadField},
		{"signed non-JSON", signedBytes(t, priv, []byte(`nope`)), "node/n1", strict, ReasonBadJSON},
		{"trailing data after the envelope", append(append([]byte(nil), good...), `{}`...), "node/n1", strict, ReasonBadJSON},
		{"unknown envelope field", []byte(strings.Replace(string(good), `"key_id"`, `"x":1,"key_id"`, 1)), "node/n1", strict, ReasonUnsigned},
		{"bad target in the payload", signedBytes(t, priv, []byte(`{"protocol":1,"generation":1,"target":"nodes/n1","models":{}}`)), "node/n1", strict, ReasonBadField},
		{"oversize", []byte(`{"payload":"` + strings.Repeat("A", MaxControlBytes) + `"}`), "node/n1", strict, ReasonOversize},
		{"signed, past its expires", signedDesired(t, priv, expiring(d, -time.Hour)), "node/n1", strict, ReasonExpired},
		{"unsigned, past its expires", mustEncode(t, expiring(DesiredState{Protocol: 1, Generation: 5, Models: map[string]ModelSpec{}}, -time.Hour)), "node/n1", lax, ReasonExpired},
		{"expires not RFC 3339", signedBytes(t, priv, []byte(`{"protocol":1,"generation":1,"target":"node/n1","expires":"tomorrow","models":{}}`)), "node/n1", strict, ReasonBadField},
		{"signed by a revoked key", good, "node/n1", DesiredPolicy{Keys: revokedRing(priv), RequireSigned: true}, ReasonRevokedKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := DecodeDesiredMessage(c.in, c.target, c.p)
			if _, r := ReasonOf(err); r != c.reason {
				t.Fatalf("reason %q (%v), want %q", r, err, c.reason)
			}
		})
	}
	if _, err := SignDesired(DesiredState{Protocol: 1, Generation: 1, Models: map[string]ModelSpec{}}, priv); err == nil {
		t.Fatal("signed a desired state without a target")
	}
	// Inside the clock-skew allowance, on an injected clock, and for a
	// writer building on its own state, an expiry does not refuse.
	for name, c := range map[string]struct {
		in []byte
		p  DesiredPolicy
	}{
		"expired less than the skew ago": {signedDesired(t, priv, expiring(d, -models.ClockSkew/2)), strict},
		"not expired yet":                {signedDesired(t, priv, expiring(d, time.Hour)), strict},
		"expired, on a clock before it": {signedDesired(t, priv, expiring(d, -time.Hour)),
			DesiredPolicy{Keys: keys, RequireSigned: true, Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }}},
		"expired, ignored by its writer": {signedDesired(t, priv, expiring(d, -time.Hour)), DesiredPolicy{Keys: keys, RequireSigned: true, IgnoreExpiry: true}},
	} {
		if _, _, err := DecodeDesiredMessage(c.in, "node/n1", c.p); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// expiring is d with expires set to now + in.
func expiring(d DesiredState, in time.Duration) DesiredState {
	d.Expires = time.Now().Add(in).UTC().Format(time.RFC3339)
	return d
}

func mustEncode(t testing.TB, d DesiredState) []byte {
	t.Helper()
	b, err := d.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// revokedRing trusts priv's key by configuration and revokes it by a key
// list.
func revokedRing(priv ed25519.PrivateKey) *models.Keyring {
	pub := priv.Public().(ed25519.PublicKey)
	base := models.KeySet{}
	base.Add(pub)
	r := models.NewKeyring(base, nil)
	if err := r.SetList(models.TrustList{Version: 1, Expires: time.Now().Add(time.Hour), Revoked: map[string]bool{KeyID(pub): true}}); err != nil {
		panic(err)
	}
	return r
}

func TestDesiredTarget(t *testing.T) {
	tp := Topics{Root: DefaultRoot}
	for topic, want := range map[string]string{tp.NodeDesired("n1"): "node/n1", tp.GroupDesired("cams"): "group/cams"} {
		if got, err := tp.DesiredTarget(topic); err != nil || got != want {
			t.Errorf("DesiredTarget(%s) = %q, %v; want %q", topic, got, err, want)
		}
	}
	for _, topic := range []string{tp.Status("n1"), "edgeai/v1/groups/cams/status", "x"} {
		if _, err := tp.DesiredTarget(topic); err == nil {
			t.Errorf("DesiredTarget(%s) accepted", topic)
		}
	}
}

func FuzzDecodeDesiredMessage(f *testing.F) {
	priv, keys := testKey(f)
	f.Add(signedDesired(f, priv, DesiredState{Protocol: 1, Generation: 3, Target: "node/n1", Models: map[string]ModelSpec{"m": {Version: "1"}}}))
	f.Add([]byte(`{"protocol":1,"generation":2,"models":{"m":{"absent":true}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, p := range []DesiredPolicy{{Keys: keys}, {Keys: keys, RequireSigned: true}} {
			d, signed, err := DecodeDesiredMessage(b, "node/n1", p)
			if err != nil {
				if !errors.Is(err, ErrRejected) {
					t.Fatalf("error is not a rejection: %v", err)
				}
				continue
			}
			if p.RequireSigned && !signed {
				t.Fatal("accepted an unsigned state where signatures are required")
			}
			if signed && d.Target != "node/n1" {
				t.Fatalf("accepted a signed state for %q", d.Target)
			}
		}
	})
}
