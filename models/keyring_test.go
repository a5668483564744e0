package models_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/edgeai/edge-node/models"
)

func newPub(t *testing.T) (ed25519.PublicKey, string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, models.KeyID(pub)
}

// TestKeyring: configured keys are trusted until revoked; listed keys until
// the list expires (plus the clock skew); revocations outlive expiry; an
// older or equal list is refused.
func TestKeyring(t *testing.T) {
	cfgPub, cfgID := newPub(t)
	listPub, listID := newPub(t)
	_, revokedID := newPub(t)
	_, unknownID := newPub(t)
	base := models.KeySet{}
	base.Add(cfgPub)
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	r := models.NewKeyring(base, func() time.Time { return now })
	if _, err := r.Key(listID); !errors.Is(err, models.ErrKeyUnknown) {
		t.Fatalf("a listed key before any list: %v", err)
	}
	listed := models.KeySet{}
	listed.Add(listPub)
	expires := now.Add(time.Hour)
	if err := r.SetList(models.TrustList{Version: 2, Expires: expires, Keys: listed, Revoked: map[string]bool{revokedID: true}}); err != nil {
		t.Fatal(err)
	}
	check := func(when string, want map[string]error) {
		t.Helper()
		for id, w := range want {
			_, err := r.Key(id)
			if (w == nil) != (err == nil) || (w != nil && !errors.Is(err, w)) {
				t.Errorf("%s: Key(%s) = %v, want %v", when, id, err, w)
			}
			if err != nil && !errors.Is(err, models.ErrSignatureInvalid) {
				t.Errorf("%s: %v does not wrap ErrSignatureInvalid", when, err)
			}
		}
	}
	check("in force", map[string]error{cfgID: nil, listID: nil, revokedID: models.ErrKeyRevoked, unknownID: models.ErrKeyUnknown})
	now = expires.Add(models.ClockSkew / 2)
	check("inside the skew", map[string]error{listID: nil})
	now = expires.Add(2 * models.ClockSkew)
	check("expired", map[string]error{cfgID: nil, listID: models.ErrKeyExpired, revokedID: models.ErrKeyRevoked})
	for _, v := range []uint64{1, 2} {
		if err := r.SetList(models.TrustList{Version: v, Expires: now.Add(time.Hour), Keys: models.KeySet{}}); !errors.Is(err, models.ErrStaleKeyList) {
			t.Errorf("list version %d over version 2: %v", v, err)
		}
	}
	// A newer list revokes a configured key and renews the listed one.
	if err := r.SetList(models.TrustList{Version: 3, Expires: now.Add(time.Hour), Keys: listed, Revoked: map[string]bool{cfgID: true}}); err != nil {
		t.Fatal(err)
	}
	check("list 3", map[string]error{cfgID: models.ErrKeyRevoked, listID: nil, revokedID: models.ErrKeyUnknown})
	if l, ok := r.List(); !ok || l.Version != 3 {
		t.Fatalf("List() = %+v %v", l, ok)
	}
	if _, err := models.LookupKey(nil, cfgID); !errors.Is(err, models.ErrKeyUnknown) {
		t.Fatalf("LookupKey(nil) = %v", err)
	}
}
