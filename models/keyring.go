package models

import (
	"crypto/ed25519"
	"fmt"
	"sync"
	"time"

	"github.com/edgeai/edge-node/errdefs"
)

// Keys finds the key a signature names: a fixed KeySet, or a Keyring (the
// configured keys plus a signed, versioned key list).
type Keys interface {
	// Key returns the trusted key named id, or an error wrapping
	// ErrKeyUnknown, ErrKeyRevoked or ErrKeyExpired (all three wrap
	// ErrSignatureInvalid).
	Key(id string) (ed25519.PublicKey, error)
}

var (
	// ErrKeyUnknown: no trusted key has that id.
	ErrKeyUnknown = errdefs.Sentinel(ErrSignatureInvalid, "key not trusted")
	// ErrKeyRevoked: the key list revokes that key.
	ErrKeyRevoked = errdefs.Sentinel(ErrSignatureInvalid, "key revoked")
	// ErrKeyExpired: the key comes only from a key list that has expired.
	ErrKeyExpired = errdefs.Sentinel(ErrSignatureInvalid, "key list expired")
	// ErrStaleKeyList: a key list not newer than the one in force.
	ErrStaleKeyList = errdefs.Sentinel(errdefs.ErrFailedPrecondition, "key list not newer")
)

// ClockSkew is how far past an expiry time signed metadata is still
// accepted, for devices whose clocks drift.
const ClockSkew = 5 * time.Minute

// LookupKey is keys.Key(id), with a nil keys trusting nothing.
func LookupKey(keys Keys, id string) (ed25519.PublicKey, error) {
	if keys == nil {
		return nil, fmt.Errorf("%.40q: %w", id, ErrKeyUnknown)
	}
	return keys.Key(id)
}

// Key implements Keys.
func (ks KeySet) Key(id string) (ed25519.PublicKey, error) {
	if pub, ok := ks[id]; ok {
		return pub, nil
	}
	return nil, fmt.Errorf("%.40q: %w", id, ErrKeyUnknown)
}

// TrustList is a verified key list (wire.KeyList): signing keys trusted
// until Expires, and key ids revoked while it is in force. Version orders lists: a node
// takes only a newer one.
type TrustList struct {
	Version uint64
	Expires time.Time
	Keys    KeySet
	Revoked map[string]bool
}

// Keyring is the node's trust in signing keys: the configured keys
// (store.trusted_keys, cloud.trusted_key_files) plus the newest key list
// signed by a root key. A revoked id is refused whoever lists it, the
// configured keys included, and stays revoked after the list expires (only
// a newer list, which the root signs, can drop a revocation). A key that only the list names is
// trusted until the list's Expires (plus ClockSkew): a broker that freezes
// the list cannot keep a key alive for ever. Safe for concurrent use.
type Keyring struct {
	base KeySet
	now  func() time.Time

	mu   sync.RWMutex
	list *TrustList
}

// NewKeyring trusts base; now is the clock expiry is read on (nil: the
// system clock).
func NewKeyring(base KeySet, now func() time.Time) *Keyring {
	if now == nil {
		now = time.Now
	}
	return &Keyring{base: base, now: now}
}

// Key implements Keys.
func (r *Keyring) Key(id string) (ed25519.PublicKey, error) {
	r.mu.RLock()
	l := r.list
	r.mu.RUnlock()
	if l != nil && l.Revoked[id] {
		return nil, fmt.Errorf("%.40q by key list version %d: %w", id, l.Version, ErrKeyRevoked)
	}
	if pub, ok := r.base[id]; ok {
		return pub, nil
	}
	if l != nil {
		if pub, ok := l.Keys[id]; ok {
			if r.now().After(l.Expires.Add(ClockSkew)) {
				return nil, fmt.Errorf("%.40q is trusted by key list version %d, which expired at %s: %w",
					id, l.Version, l.Expires.UTC().Format(time.RFC3339), ErrKeyExpired)
			}
			return pub, nil
		}
	}
	return nil, fmt.Errorf("%.40q: %w", id, ErrKeyUnknown)
}

// SetList puts l in force. A list whose Version is not above the one in
// force is refused (ErrStaleKeyList), so an old list replayed by the broker
// never brings back a revoked key.
func (r *Keyring) SetList(l TrustList) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.list != nil && l.Version <= r.list.Version {
		return fmt.Errorf("version %d, version %d in force: %w", l.Version, r.list.Version, ErrStaleKeyList)
	}
	r.list = &l
	return nil
}

// List returns the key list in force, if any.
func (r *Keyring) List() (TrustList, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.list == nil {
		return TrustList{}, false
	}
	return *r.list, true
}
