package wire

import (
	"crypto/ed25519"
	"encoding/json"
	"time"

	"github.com/edgeai/edge-node/models"
)

// Limits of a key list.
const (
	MaxListedKeys  = 64
	MaxRevokedKeys = 1024
)

// KeyList is the signed, versioned list of signing keys published retained
// on Topics.Keys, signed by a root key (docs/protocol.md "Key rotation and
// revocation"). Nodes take a list only with a Version above the one they
// hold (persisted in their store), trust its Keys until Expires, and refuse
// its Revoked key ids, configured keys included, until a newer list says
// otherwise (expiry does not end a revocation).
type KeyList struct {
	Protocol int    `json:"protocol"`
	Version  uint64 `json:"version"`
	// Expires (RFC 3339, required) ends the trust in Keys.
	Expires string      `json:"expires"`
	Keys    []ListedKey `json:"keys"`
	// Revoked are key ids (16 hex digits, models.KeyID).
	Revoked []string `json:"revoked,omitempty"`
}

// ListedKey is one signing key of a KeyList.
type ListedKey struct {
	KeyID string `json:"key_id"`
	// PublicKey is the 32-byte ed25519 key (standard base64 in JSON).
	PublicKey []byte `json:"public_key"`
}

// SignedKeyList is the envelope a KeyList travels in, signed by a root key.
type SignedKeyList = Envelope

// Validate checks every field of l.
func (l KeyList) Validate() error {
	const k = KindKeys
	if err := checkProtocol(k, l.Protocol); err != nil {
		return err
	}
	if l.Version == 0 {
		return Reject(k, ReasonBadField, "version must be > 0")
	}
	if err := checkJSONInt(k, "version", l.Version); err != nil {
		return err
	}
	if err := checkTime(k, "expires", l.Expires, true); err != nil {
		return err
	}
	if len(l.Keys) > MaxListedKeys {
		return Reject(k, ReasonTooLarge, "%d keys, limit %d", len(l.Keys), MaxListedKeys)
	}
	if len(l.Revoked) > MaxRevokedKeys {
		return Reject(k, ReasonTooLarge, "%d revoked keys, limit %d", len(l.Revoked), MaxRevokedKeys)
	}
	revoked := make(map[string]bool, len(l.Revoked))
	for _, id := range l.Revoked {
		if !validKeyID(id) {
			return Reject(k, ReasonBadField, "revoked: key id %.40q: want 16 lowercase hex digits", id)
		}
		revoked[id] = true
	}
	seen := make(map[string]bool, len(l.Keys))
	for _, key := range l.Keys {
		if len(key.PublicKey) != ed25519.PublicKeySize {
			return Reject(k, ReasonBadField, "keys: key %.40q: %d bytes, want %d", key.KeyID, len(key.PublicKey), ed25519.PublicKeySize)
		}
		if id := models.KeyID(key.PublicKey); key.KeyID != id {
			return Reject(k, ReasonBadField, "keys: key_id %.40q, the key's id is %s", key.KeyID, id)
		}
		if seen[key.KeyID] {
			return Reject(k, ReasonBadField, "keys: key %s listed twice", key.KeyID)
		}
		if revoked[key.KeyID] {
			return Reject(k, ReasonBadField, "keys: key %s is both listed and revoked", key.KeyID)
		}
		seen[key.KeyID] = true
	}
	return nil
}

func validKeyID(s string) bool {
	if len(s) != 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Trust converts a valid l into the models.TrustList a models.Keyring puts
// in force.
func (l KeyList) Trust() models.TrustList {
	exp, _ := time.Parse(time.RFC3339Nano, l.Expires) // valid: Validate checked it
	t := models.TrustList{Version: l.Version, Expires: exp, Keys: models.KeySet{}, Revoked: map[string]bool{}}
	for _, k := range l.Keys {
		t.Keys.Add(ed25519.PublicKey(k.PublicKey))
	}
	for _, id := range l.Revoked {
		t.Revoked[id] = true
	}
	return t
}

// SignKeyList validates l and returns the signed message to publish
// retained on Topics.Keys; root is a root key's private half.
func SignKeyList(l KeyList, root ed25519.PrivateKey) ([]byte, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(SignedKeyList{Payload: payload, KeyID: KeyID(root.Public().(ed25519.PublicKey)), Signature: ed25519.Sign(root, payload)})
	if err != nil {
		return nil, err
	}
	if len(b) > MaxControlBytes {
		return nil, Reject(KindKeys, ReasonOversize, "signed key list of %d bytes, limit %d", len(b), MaxControlBytes)
	}
	return b, nil
}

// DecodeKeyList decodes a signed key list, checks its signature against the
// root keys and validates the list. It does not look at expiry or version:
// the node refuses an arriving list that has expired (ReasonExpired) or is
// not newer than its own (models.Keyring.SetList), but keeps the one it
// stored past its expiry, for its revocations and its version. Every error
// is a *RejectError.
func DecodeKeyList(b []byte, roots models.KeySet) (KeyList, error) {
	const k = KindKeys
	env, err := decodeKeyListEnvelope(b)
	if err != nil {
		return KeyList{}, err
	}
	pub, err := roots.Key(env.KeyID)
	if err != nil {
		return KeyList{}, Reject(k, ReasonUnknownKey, "key list signed by %.40q, not a root key (cloud.root_key_files)", env.KeyID)
	}
	if len(env.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, env.Payload, env.Signature) {
		return KeyList{}, Reject(k, ReasonBadSignature, "signature by root key %.40q does not verify", env.KeyID)
	}
	return decodeKeyListPayload(env.Payload)
}

// ReadKeyList decodes and validates a signed key list without checking its
// signature, for writers and display (edgectl keys): which version is
// retained and which key signed it. Nodes use DecodeKeyList.
func ReadKeyList(b []byte) (KeyList, SignedKeyList, error) {
	env, err := decodeKeyListEnvelope(b)
	if err != nil {
		return KeyList{}, env, err
	}
	l, err := decodeKeyListPayload(env.Payload)
	return l, env, err
}

func decodeKeyListEnvelope(b []byte) (SignedKeyList, error) {
	var env SignedKeyList
	if err := decodeStrict(KindKeys, b, MaxControlBytes, &env); err != nil {
		return env, err
	}
	if len(env.Payload) == 0 {
		return env, Reject(KindKeys, ReasonBadField, "empty payload")
	}
	return env, nil
}

func decodeKeyListPayload(b []byte) (KeyList, error) {
	var l KeyList
	if err := decodeStrict(KindKeys, b, MaxControlBytes, &l); err != nil {
		return KeyList{}, err
	}
	if err := l.Validate(); err != nil {
		return KeyList{}, err
	}
	return l, nil
}

// Expired reports whether l has expired at now (past Expires plus
// models.ClockSkew).
func (l KeyList) Expired(now time.Time) bool {
	exp, err := time.Parse(time.RFC3339Nano, l.Expires)
	return err != nil || now.After(exp.Add(models.ClockSkew))
}
