package models

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Manifest describes one model version as the cloud publishes it: the files
// that make it up, each named by sha256 and cut into content-defined chunks
// for transfer. It travels as the JSON payload of a SignedManifest.
type Manifest struct {
	// Protocol is the manifest format version (currently 1).
	Protocol int `json:"protocol"`
	// Model and Version name the model version.
	Model   string `json:"model"`
	Version string `json:"version"`
	// Created is when the version was published (RFC 3339).
	Created string `json:"created"`
	// Files are the version's files. One has Role "model" (the .onnx
	// graph); others are ONNX external-data files or configs. A version
	// with no graph of its own (an ensemble: its Config names the models
	// it chains) has none.
	Files []FileRef `json:"files"`
	// Config is the optional per-model config (YAML, the same format as a
	// model repository's config.yaml).
	Config string `json:"config,omitempty"`
	// Golden are optional warm-up inputs with expected outputs.
	Golden []GoldenCase `json:"golden,omitempty"`
	// Lineage is where the version came from (training run, data set,
	// source commit, evaluation metrics); optional, signed with the rest.
	Lineage *Lineage `json:"lineage,omitempty"`
}

// FileRef is one file of a version.
type FileRef struct {
	// Path is the file's name inside the version folder ("model.onnx",
	// "weights.bin"); a plain relative path, no "..".
	Path   string     `json:"path"`
	Role   string     `json:"role"` // "model", "external_data", "config"
	SHA256 string     `json:"sha256"`
	Size   int64      `json:"size"`
	Chunks []ChunkRef `json:"chunks"`
}

// ChunkRef is one content-defined chunk of a file, in file order.
type ChunkRef struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// GoldenCase is one warm-up request and the outputs it must give. Tensors are
// in the KServe v2 JSON form; Tolerance is the largest absolute difference
// accepted for float outputs.
type GoldenCase struct {
	Inputs    []GoldenTensor `json:"inputs"`
	Outputs   []GoldenTensor `json:"outputs"`
	Tolerance float64        `json:"tolerance"`
}

// GoldenTensor is a small tensor in KServe v2 JSON form (flat data).
type GoldenTensor struct {
	Name     string    `json:"name"`
	Datatype string    `json:"datatype"`
	Shape    []int64   `json:"shape"`
	Data     []float64 `json:"data"`
}

// SignedManifest is what travels and what is stored: the manifest's exact
// JSON bytes, base64 in Payload, and an ed25519 signature over them by the
// key named KeyID.
type SignedManifest struct {
	Payload   []byte `json:"payload"`
	KeyID     string `json:"key_id"`
	Signature []byte `json:"signature"`
}

// ManifestProtocol is the only manifest format version this node accepts.
const ManifestProtocol = 1

// Limits on manifests. A manifest bigger than these is refused before any
// work is done on it.
const (
	MaxManifestBytes = 4 << 20  // encoded Manifest JSON
	MaxSignedBytes   = 6 << 20  // encoded SignedManifest JSON (base64 payload)
	MaxFiles         = 64       // files per version
	MaxFileSize      = 64 << 30 // one file
	MaxChunkSize     = 64 << 20 // one content-defined chunk
	MaxChunks        = 1 << 20  // chunks per file
	MaxConfigBytes   = 1 << 20  // Manifest.Config
	MaxGoldenCases   = 64
)

// File roles.
const (
	RoleModel        = "model"
	RoleExternalData = "external_data"
	RoleConfig       = "config"
)

// Validate checks everything the store relies on: protocol, names (see
// ValidModelName and ValidVersion), one "model" file (or none with a
// config: an ensemble), safe unique
// paths, well-formed digests and sizes, and chunk lists that can describe
// their files: each chunk 1 … MaxChunkSize bytes, the sizes adding up to the
// file's (so no chunk starts or ends past the end), a single chunk named as
// its file, and one size for each sha256 throughout the manifest (a sha256
// names one content, hence one size). A file may list no chunks (a local
// import); the link requires them. Errors wrap ErrInvalidArgument.
func (m *Manifest) Validate() error {
	if m.Protocol != ManifestProtocol {
		return fmt.Errorf("manifest: protocol %d, want %d: %w", m.Protocol, ManifestProtocol, ErrInvalidArgument)
	}
	if err := ValidModelName(m.Model); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := ValidVersion(m.Version); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if m.Created != "" {
		if _, err := time.Parse(time.RFC3339, m.Created); err != nil {
			return fmt.Errorf("manifest: created %q is not RFC 3339: %w", m.Created, ErrInvalidArgument)
		}
	}
	if len(m.Files) == 0 || len(m.Files) > MaxFiles {
		return fmt.Errorf("manifest: %d files (want 1..%d): %w", len(m.Files), MaxFiles, ErrInvalidArgument)
	}
	if len(m.Config) > MaxConfigBytes {
		return fmt.Errorf("manifest: config of %d bytes (max %d): %w", len(m.Config), MaxConfigBytes, ErrInvalidArgument)
	}
	if len(m.Golden) > MaxGoldenCases {
		return fmt.Errorf("manifest: %d golden cases (max %d): %w", len(m.Golden), MaxGoldenCases, ErrInvalidArgument)
	}
	if m.Lineage != nil {
		if err := m.Lineage.Validate(); err != nil {
			return fmt.Errorf("manifest: %w", err)
		}
	}
	paths := make(map[string]bool, len(m.Files))
	sizes := map[string]int64{} // sha256 (file or chunk) -> its size
	sameSize := func(what, sha string, size int64) error {
		if prev, ok := sizes[sha]; ok && prev != size {
			return fmt.Errorf("manifest: %s: sha256 %.16s… is listed with %d and %d bytes: %w", what, sha, prev, size, ErrInvalidArgument)
		}
		sizes[sha] = size
		return nil
	}
	nmodel := 0
	for i := range m.Files {
		f := &m.Files[i]
		if err := ValidFilePath(f.Path); err != nil {
			return fmt.Errorf("manifest: file %d: %w", i, err)
		}
		if paths[f.Path] {
			return fmt.Errorf("manifest: file path %q twice: %w", f.Path, ErrInvalidArgument)
		}
		paths[f.Path] = true
		switch f.Role {
		case RoleModel:
			nmodel++
		case RoleExternalData, RoleConfig:
		default:
			return fmt.Errorf("manifest: file %q: role %q: %w", f.Path, f.Role, ErrInvalidArgument)
		}
		if err := ValidDigest(f.SHA256); err != nil {
			return fmt.Errorf("manifest: file %q: %w", f.Path, err)
		}
		if f.Size < 0 || f.Size > MaxFileSize {
			return fmt.Errorf("manifest: file %q: size %d: %w", f.Path, f.Size, ErrInvalidArgument)
		}
		if err := sameSize(fmt.Sprintf("file %q", f.Path), f.SHA256, f.Size); err != nil {
			return err
		}
		if len(f.Chunks) > MaxChunks {
			return fmt.Errorf("manifest: file %q: %d chunks: %w", f.Path, len(f.Chunks), ErrInvalidArgument)
		}
		var sum int64
		for j, c := range f.Chunks {
			if err := ValidDigest(c.SHA256); err != nil {
				return fmt.Errorf("manifest: file %q chunk %d: %w", f.Path, j, err)
			}
			if c.Size <= 0 || c.Size > MaxChunkSize {
				return fmt.Errorf("manifest: file %q chunk %d: size %d: %w", f.Path, j, c.Size, ErrInvalidArgument)
			}
			if err := sameSize(fmt.Sprintf("file %q chunk %d", f.Path, j), c.SHA256, c.Size); err != nil {
				return err
			}
			sum += c.Size
		}
		if len(f.Chunks) > 0 && sum != f.Size {
			return fmt.Errorf("manifest: file %q: chunks add up to %d, size is %d: %w", f.Path, sum, f.Size, ErrInvalidArgument)
		}
		if len(f.Chunks) == 1 && f.Chunks[0].SHA256 != f.SHA256 {
			return fmt.Errorf("manifest: file %q: its one chunk is the whole file but is named %.16s…, not the file's sha256: %w", f.Path, f.Chunks[0].SHA256, ErrInvalidArgument)
		}
	}
	switch {
	case nmodel > 1:
		return fmt.Errorf("manifest: %d files with role %q, want at most 1: %w", nmodel, RoleModel, ErrInvalidArgument)
	case nmodel == 0 && m.Config == "":
		return fmt.Errorf("manifest: no file with role %q and no config: a version without a graph (an ensemble) needs a config that says what it runs: %w", RoleModel, ErrInvalidArgument)
	}
	return nil
}

// ModelFile returns the file with Role "model".
func (m *Manifest) ModelFile() (FileRef, bool) {
	for _, f := range m.Files {
		if f.Role == RoleModel {
			return f, true
		}
	}
	return FileRef{}, false
}

// DecodeManifest parses and validates a manifest's JSON bytes. Unknown
// fields, trailing data and anything over MaxManifestBytes are refused.
// Errors wrap ErrInvalidArgument.
func DecodeManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) > MaxManifestBytes {
		return m, fmt.Errorf("manifest: %d bytes (max %d): %w", len(b), MaxManifestBytes, ErrInvalidArgument)
	}
	if err := decodeStrict(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %v: %w", err, ErrInvalidArgument)
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// EncodeManifest validates m and returns its JSON bytes (the bytes that get
// signed).
func EncodeManifest(m Manifest) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// DecodeSignedManifest parses a SignedManifest envelope (it does not verify
// it: see VerifyManifest). Errors wrap ErrInvalidArgument.
func DecodeSignedManifest(b []byte) (SignedManifest, error) {
	var sm SignedManifest
	if len(b) > MaxSignedBytes {
		return sm, fmt.Errorf("signed manifest: %d bytes (max %d): %w", len(b), MaxSignedBytes, ErrInvalidArgument)
	}
	if err := decodeStrict(b, &sm); err != nil {
		return SignedManifest{}, fmt.Errorf("signed manifest: %v: %w", err, ErrInvalidArgument)
	}
	if len(sm.Payload) == 0 {
		return SignedManifest{}, fmt.Errorf("signed manifest: empty payload: %w", ErrInvalidArgument)
	}
	return sm, nil
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// KeySet is the set of trusted manifest-signing keys, by key ID (KeyID).
// Several keys are trusted at once so that keys can be rotated: publish with
// the new key while nodes still trust the old one, then drop the old one.
type KeySet map[string]ed25519.PublicKey

// KeyID names an ed25519 public key: the first 16 hex digits of the sha256
// of its 32 raw bytes. It is the key_id of every SignedManifest.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Add trusts pub under its KeyID.
func (ks KeySet) Add(pub ed25519.PublicKey) { ks[KeyID(pub)] = pub }

// ParseTrustedKeys builds a KeySet from config: key ID → standard base64 of
// a 32-byte ed25519 public key. The ID must be the key's KeyID (so that a
// key has one name everywhere). Errors wrap ErrInvalidArgument.
func ParseTrustedKeys(cfg map[string]string) (KeySet, error) {
	ks := make(KeySet, len(cfg))
	for id, s := range cfg {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("trusted key %.40q: %v: %w", id, err, ErrInvalidArgument)
		}
		if len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("trusted key %.40q: %d bytes, want %d: %w", id, len(b), ed25519.PublicKeySize, ErrInvalidArgument)
		}
		pub := ed25519.PublicKey(b)
		if want := KeyID(pub); id != want {
			return nil, fmt.Errorf("trusted key %.40q: the key's id is %s: %w", id, want, ErrInvalidArgument)
		}
		ks[id] = pub
	}
	return ks, nil
}

// ParsePublicKeyPEM parses a PEM "PUBLIC KEY" (PKIX) holding an ed25519 key,
// the format `edgectl keygen` writes. Errors wrap ErrInvalidArgument.
func ParsePublicKeyPEM(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("no PEM PUBLIC KEY block: %w", ErrInvalidArgument)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %v: %w", err, ErrInvalidArgument)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %T, want ed25519: %w", k, ErrInvalidArgument)
	}
	return pub, nil
}

// SignManifest encodes m and signs the exact bytes with priv; the envelope's
// key_id is KeyID of priv's public key.
func SignManifest(m Manifest, priv ed25519.PrivateKey) (SignedManifest, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return SignedManifest{}, fmt.Errorf("sign manifest: private key of %d bytes: %w", len(priv), ErrInvalidArgument)
	}
	payload, err := EncodeManifest(m)
	if err != nil {
		return SignedManifest{}, err
	}
	return SignedManifest{Payload: payload, KeyID: KeyID(priv.Public().(ed25519.PublicKey)), Signature: ed25519.Sign(priv, payload)}, nil
}

// VerifySignature checks sm's signature (only) against the trusted keys.
// An unsigned envelope, an unknown, revoked or expired key (Keys.Key) or a
// bad signature wrap ErrSignatureInvalid.
func VerifySignature(sm SignedManifest, keys Keys) error {
	if len(sm.Signature) == 0 {
		return fmt.Errorf("manifest unsigned: %w", ErrSignatureInvalid)
	}
	pub, err := LookupKey(keys, sm.KeyID)
	if err != nil {
		return fmt.Errorf("manifest signed by key %w", err)
	}
	if len(sm.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, sm.Payload, sm.Signature) {
		return fmt.Errorf("manifest signature by key %.40q does not verify: %w", sm.KeyID, ErrSignatureInvalid)
	}
	return nil
}

// VerifyManifest checks sm's signature against the trusted keys and then
// decodes and validates the payload. An unsigned envelope, an unknown key
// ID or a bad signature wrap ErrSignatureInvalid; a payload that verifies
// but does not decode wraps ErrInvalidArgument.
func VerifyManifest(sm SignedManifest, keys Keys) (Manifest, error) {
	if err := VerifySignature(sm, keys); err != nil {
		return Manifest{}, err
	}
	return DecodeManifest(sm.Payload)
}

// OpenSignedManifest is DecodeSignedManifest followed by VerifyManifest.
func OpenSignedManifest(b []byte, keys Keys) (SignedManifest, Manifest, error) {
	sm, err := DecodeSignedManifest(b)
	if err != nil {
		return SignedManifest{}, Manifest{}, err
	}
	m, err := VerifyManifest(sm, keys)
	if err != nil {
		return sm, Manifest{}, err
	}
	return sm, m, nil
}
