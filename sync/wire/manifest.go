package wire

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"

	"github.com/edgeai/edge-node/models"
)

// File roles in a manifest.
const (
	RoleModel        = "model"
	RoleExternalData = "external_data"
	RoleConfig       = "config"
)

// KeyID names an ed25519 public key: the first 16 hex digits of the sha256 of
// its 32 raw bytes (models.KeyID: signing and verification live in models).
func KeyID(pub ed25519.PublicKey) string { return models.KeyID(pub) }

// ParsePrivateKeyPEM parses a PEM "PRIVATE KEY" (PKCS#8) holding an ed25519 key.
func ParsePrivateKeyPEM(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("no PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, want ed25519", k)
	}
	return priv, nil
}

// MarshalKeyPairPEM returns PEM encodings of an ed25519 key pair.
func MarshalKeyPairPEM(priv ed25519.PrivateKey) (privPEM, pubPEM []byte, err error) {
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	px, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: px}), nil
}

// SignManifest checks m against the transport's limits (ValidateManifest)
// and signs it with models.SignManifest, the one signing implementation.
func SignManifest(m models.Manifest, priv ed25519.PrivateKey) (models.SignedManifest, error) {
	if err := ValidateManifest(m, DefaultMaxModelBytes); err != nil {
		return models.SignedManifest{}, err
	}
	return models.SignManifest(m, priv)
}

// DecodeSignedManifest decodes a SignedManifest payload, checks its signature
// against keys (models.VerifySignature), and decodes and validates the
// manifest inside (ValidateManifest). maxModelBytes bounds the sum of the file
// sizes (0 means DefaultMaxModelBytes). Every error is a *RejectError.
func DecodeSignedManifest(b []byte, keys models.Keys, maxModelBytes int64) (models.Manifest, models.SignedManifest, error) {
	const k = KindManifest
	var sm models.SignedManifest
	if err := decodeStrict(k, b, MaxMessageBytes, &sm); err != nil {
		return models.Manifest{}, sm, err
	}
	if _, err := models.LookupKey(keys, sm.KeyID); err != nil {
		return models.Manifest{}, sm, keyReject(k, err)
	}
	if err := models.VerifySignature(sm, keys); err != nil {
		return models.Manifest{}, sm, &RejectError{Kind: k, Reason: ReasonBadSignature, Err: err}
	}
	var m models.Manifest
	if err := decodeStrict(k, sm.Payload, MaxMessageBytes, &m); err != nil {
		return models.Manifest{}, sm, err
	}
	if maxModelBytes <= 0 {
		maxModelBytes = DefaultMaxModelBytes
	}
	if err := ValidateManifest(m, maxModelBytes); err != nil {
		return models.Manifest{}, sm, err
	}
	return m, sm, nil
}

// ValidateManifest checks m for the link: the protocol, names usable in
// topics, the node's size limit (maxModelBytes bounds the sum of the file
// sizes), the structure models.Manifest.Validate checks (paths, roles,
// digests), and chunk lists that fit in messages (every file chunked, each
// chunk ≤ MaxChunkBytes).
func ValidateManifest(m models.Manifest, maxModelBytes int64) error {
	const k = KindManifest
	if err := checkProtocol(k, m.Protocol); err != nil {
		return err
	}
	if err := ValidName(m.Model); err != nil {
		return Reject(k, ReasonBadField, "model: %v", err)
	}
	if err := ValidName(m.Version); err != nil {
		return Reject(k, ReasonBadField, "version: %v", err)
	}
	if len(m.Files) > MaxFiles {
		return Reject(k, ReasonBadField, "%d files, want 1-%d", len(m.Files), MaxFiles)
	}
	var total int64
	for _, f := range m.Files {
		if f.Size < 0 || f.Size > maxModelBytes || total+f.Size > maxModelBytes {
			return Reject(k, ReasonTooLarge, "file %.80q: size %d brings the version over the limit of %d bytes", f.Path, f.Size, maxModelBytes)
		}
		total += f.Size
	}
	if err := m.Validate(); err != nil {
		return &RejectError{Kind: k, Reason: ReasonBadField, Err: err}
	}
	for _, f := range m.Files {
		var sum int64
		for j, c := range f.Chunks {
			if c.Size > MaxChunkBytes {
				return Reject(k, ReasonBadField, "file %s chunk %d: size %d, want 1-%d", f.Path, j, c.Size, MaxChunkBytes)
			}
			sum += c.Size
		}
		if sum != f.Size {
			return Reject(k, ReasonBadField, "file %s: chunks sum to %d bytes, file size is %d", f.Path, sum, f.Size)
		}
	}
	if len(m.Config) > MaxControlBytes {
		return Reject(k, ReasonBadField, "config: %d bytes, limit %d", len(m.Config), MaxControlBytes)
	}
	return nil
}

// CheckChunk verifies a chunk payload against the sha256 named in its topic.
func CheckChunk(sha string, payload []byte) error {
	if len(payload) > MaxChunkBytes {
		return Reject(KindChunk, ReasonOversize, "%d bytes, limit %d", len(payload), MaxChunkBytes)
	}
	sum := sha256.Sum256(payload)
	if got := hex.EncodeToString(sum[:]); got != sha {
		return Reject(KindChunk, ReasonChunkMismatch, "payload hashes to %s, topic names %s", got[:16], sha)
	}
	return nil
}
