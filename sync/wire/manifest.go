package wire

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"path"
	"strings"

	"github.com/edgeai/edge-node/models"
)

// File roles in a manifest.
const (
	RoleModel        = "model"
	RoleExternalData = "external_data"
	RoleConfig       = "config"
)

// KeyID names an ed25519 public key: the first 16 hex digits of the sha256 of
// its 32 raw bytes.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Keyring is the set of public keys a node trusts, by KeyID.
type Keyring map[string]ed25519.PublicKey

// Add trusts pub.
func (k Keyring) Add(pub ed25519.PublicKey) { k[KeyID(pub)] = pub }

// ParsePublicKeyPEM parses a PEM "PUBLIC KEY" (PKIX) holding an ed25519 key.
func ParsePublicKeyPEM(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("no PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %T, want ed25519", k)
	}
	return pub, nil
}

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

// SignManifest validates m, encodes it and signs the exact bytes.
func SignManifest(m models.Manifest, priv ed25519.PrivateKey) (models.SignedManifest, error) {
	if err := ValidateManifest(m, DefaultMaxModelBytes); err != nil {
		return models.SignedManifest{}, err
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return models.SignedManifest{}, err
	}
	return models.SignedManifest{
		Payload:   payload,
		KeyID:     KeyID(priv.Public().(ed25519.PublicKey)),
		Signature: ed25519.Sign(priv, payload),
	}, nil
}

// DecodeSignedManifest decodes a SignedManifest payload, checks its signature
// against keys, and decodes and validates the manifest inside. maxModelBytes
// bounds the sum of the file sizes (0 means DefaultMaxModelBytes).
func DecodeSignedManifest(b []byte, keys Keyring, maxModelBytes int64) (models.Manifest, models.SignedManifest, error) {
	const k = KindManifest
	var sm models.SignedManifest
	if err := decodeStrict(k, b, MaxMessageBytes, &sm); err != nil {
		return models.Manifest{}, sm, err
	}
	pub, ok := keys[sm.KeyID]
	if !ok {
		return models.Manifest{}, sm, Reject(k, ReasonUnknownKey, "key %.40q is not trusted", sm.KeyID)
	}
	if len(sm.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, sm.Payload, sm.Signature) {
		return models.Manifest{}, sm, Reject(k, ReasonBadSignature, "signature by key %s does not verify", sm.KeyID)
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

// ValidateManifest checks every field of m; maxModelBytes bounds the sum of
// the file sizes.
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
	if err := checkTime(k, "created", m.Created, false); err != nil {
		return err
	}
	if len(m.Files) == 0 || len(m.Files) > MaxFiles {
		return Reject(k, ReasonBadField, "%d files, want 1-%d", len(m.Files), MaxFiles)
	}
	var total int64
	nModel := 0
	paths := map[string]bool{}
	for i, f := range m.Files {
		if err := validFilePath(f.Path); err != nil {
			return Reject(k, ReasonBadField, "file %d: %v", i, err)
		}
		if paths[f.Path] {
			return Reject(k, ReasonBadField, "file %d: duplicate path %q", i, f.Path)
		}
		paths[f.Path] = true
		switch f.Role {
		case RoleModel:
			nModel++
		case RoleExternalData, RoleConfig:
		default:
			return Reject(k, ReasonBadField, "file %s: unknown role %.40q", f.Path, f.Role)
		}
		if err := ValidSHA256(f.SHA256); err != nil {
			return Reject(k, ReasonBadField, "file %s: %v", f.Path, err)
		}
		if f.Size < 0 || f.Size > maxModelBytes || total+f.Size > maxModelBytes {
			return Reject(k, ReasonTooLarge, "file %s: size %d brings the version over the limit of %d bytes", f.Path, f.Size, maxModelBytes)
		}
		total += f.Size
		var sum int64
		for j, c := range f.Chunks {
			if err := ValidSHA256(c.SHA256); err != nil {
				return Reject(k, ReasonBadField, "file %s chunk %d: %v", f.Path, j, err)
			}
			if c.Size <= 0 || c.Size > MaxChunkBytes {
				return Reject(k, ReasonBadField, "file %s chunk %d: size %d, want 1-%d", f.Path, j, c.Size, MaxChunkBytes)
			}
			sum += c.Size
		}
		if sum != f.Size {
			return Reject(k, ReasonBadField, "file %s: chunks sum to %d bytes, file size is %d", f.Path, sum, f.Size)
		}
	}
	if nModel != 1 {
		return Reject(k, ReasonBadField, "%d files with role model, want exactly 1", nModel)
	}
	if len(m.Config) > MaxControlBytes {
		return Reject(k, ReasonBadField, "config: %d bytes, limit %d", len(m.Config), MaxControlBytes)
	}
	return nil
}

func validFilePath(p string) error {
	if p == "" || len(p) > 255 || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") ||
		strings.ContainsRune(p, 0) || path.Clean(p) != p || p == "." || p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("unsafe path %.80q", p)
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
