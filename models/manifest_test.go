package models

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func hexsum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func testManifest() Manifest {
	data := []byte("onnx bytes")
	return Manifest{Protocol: 1, Model: "vad", Version: "2", Created: "2025-01-02T03:04:05Z",
		Files: []FileRef{{Path: "model.onnx", Role: RoleModel, SHA256: hexsum(data), Size: int64(len(data)),
			Chunks: []ChunkRef{{SHA256: hexsum(data[:4]), Size: 4}, {SHA256: hexsum(data[4:]), Size: 6}}}}}
}

// newKeySet trusts the given public keys, each under its KeyID.
func newKeySet(pubs ...ed25519.PublicKey) KeySet {
	ks := KeySet{}
	for _, p := range pubs {
		ks.Add(p)
	}
	return ks
}

func testKey(t testing.TB, seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	priv := ed25519.NewKeyFromSeed(s)
	return priv.Public().(ed25519.PublicKey), priv
}

func TestDecodeManifestBad(t *testing.T) {
	good, err := json.Marshal(testManifest())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeManifest(good); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	mut := func(f func(m *Manifest)) string {
		m := testManifest()
		f(&m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	bad := map[string]string{
		"empty":           "",
		"not json":        "{",
		"array":           "[]",
		"trailing":        string(good) + "{}",
		"unknown field":   strings.Replace(string(good), `"protocol"`, `"extra":1,"protocol"`, 1),
		"protocol 2":      mut(func(m *Manifest) { m.Protocol = 2 }),
		"bad model":       mut(func(m *Manifest) { m.Model = "../etc" }),
		"bad version":     mut(func(m *Manifest) { m.Version = "" }),
		"bad created":     mut(func(m *Manifest) { m.Created = "yesterday" }),
		"no files":        mut(func(m *Manifest) { m.Files = nil }),
		"no model role":   mut(func(m *Manifest) { m.Files[0].Role = RoleExternalData }),
		"unknown role":    mut(func(m *Manifest) { m.Files[0].Role = "exe" }),
		"two models":      mut(func(m *Manifest) { f := m.Files[0]; f.Path = "b.onnx"; m.Files = append(m.Files, f) }),
		"dup path":        mut(func(m *Manifest) { f := m.Files[0]; f.Role = RoleConfig; m.Files = append(m.Files, f) }),
		"path traversal":  mut(func(m *Manifest) { m.Files[0].Path = "../../x" }),
		"absolute path":   mut(func(m *Manifest) { m.Files[0].Path = "/x" }),
		"upper hex":       mut(func(m *Manifest) { m.Files[0].SHA256 = strings.ToUpper(m.Files[0].SHA256) }),
		"short digest":    mut(func(m *Manifest) { m.Files[0].SHA256 = "abc" }),
		"negative size":   mut(func(m *Manifest) { m.Files[0].Size = -1 }),
		"chunks mismatch": mut(func(m *Manifest) { m.Files[0].Chunks[0].Size = 5 }),
		"zero chunk":      mut(func(m *Manifest) { m.Files[0].Chunks[0].Size = 0 }),
		"chunks past end": mut(func(m *Manifest) { m.Files[0].Chunks[1].Size = 7 }),
		"negative chunk":  mut(func(m *Manifest) { m.Files[0].Chunks[0].Size = -4; m.Files[0].Chunks[1].Size = 14 }),
		"oversize chunk": mut(func(m *Manifest) {
			m.Files[0].Size = MaxChunkSize + 1
			m.Files[0].Chunks = []ChunkRef{{SHA256: m.Files[0].SHA256, Size: MaxChunkSize + 1}}
		}),
		"one sha two sizes": mut(func(m *Manifest) { m.Files[0].Chunks[1].SHA256 = m.Files[0].Chunks[0].SHA256 }),
		"one chunk not the file": mut(func(m *Manifest) {
			m.Files[0].Chunks = []ChunkRef{{SHA256: m.Files[0].Chunks[0].SHA256, Size: m.Files[0].Size}}
		}),
		"file sha two sizes": mut(func(m *Manifest) {
			f := m.Files[0]
			f.Path, f.Role, f.Size, f.Chunks = "copy.bin", RoleExternalData, 9, []ChunkRef{{SHA256: f.SHA256, Size: 9}}
			m.Files = append(m.Files, f)
		}),
		"bad chunk digest":     mut(func(m *Manifest) { m.Files[0].Chunks[0].SHA256 = "zz" }),
		"huge config":          mut(func(m *Manifest) { m.Config = strings.Repeat("x", MaxConfigBytes+1) }),
		"lineage run":          mut(func(m *Manifest) { m.Lineage = &Lineage{TrainingRun: "run with spaces"} }),
		"lineage long run":     mut(func(m *Manifest) { m.Lineage = &Lineage{TrainingRun: strings.Repeat("r", 129)} }),
		"lineage dataset":      mut(func(m *Manifest) { m.Lineage = &Lineage{DatasetDigest: strings.Repeat("a", 64)} }),
		"lineage dataset case": mut(func(m *Manifest) { m.Lineage = &Lineage{DatasetDigest: "sha256:" + strings.Repeat("A", 64)} }),
		"lineage commit":       mut(func(m *Manifest) { m.Lineage = &Lineage{SourceCommit: "abc"} }),
		"lineage commit hex":   mut(func(m *Manifest) { m.Lineage = &Lineage{SourceCommit: "zzzzzzzz"} }),
		"lineage metric name":  mut(func(m *Manifest) { m.Lineage = &Lineage{Metrics: map[string]float64{"Acc uracy": 1}} }),
		"lineage metric unknown field": strings.Replace(mut(func(m *Manifest) { m.Lineage = &Lineage{TrainingRun: "r"} }),
			`"training_run"`, `"trainer":1,"training_run"`, 1),
		"lineage metric string": strings.Replace(mut(func(m *Manifest) { m.Lineage = &Lineage{Metrics: map[string]float64{"acc": 1}} }),
			`"acc":1`, `"acc":"high"`, 1),
		"lineage too many metrics": mut(func(m *Manifest) {
			m.Lineage = &Lineage{Metrics: map[string]float64{}}
			for i := range MaxLineageMetrics + 1 {
				m.Lineage.Metrics[fmt.Sprintf("m%d", i)] = 1
			}
		}),
		"too big": strings.Repeat(" ", MaxManifestBytes+1),
	}
	for name, in := range bad {
		if _, err := DecodeManifest([]byte(in)); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
}

func TestSignatures(t *testing.T) {
	oldPub, oldPriv := testKey(t, 1)
	newPub, newPriv := testKey(t, 2)
	_, evilPriv := testKey(t, 3)
	keys := newKeySet(oldPub, newPub)
	ids := map[string]string{"old": KeyID(oldPub), "new": KeyID(newPub)}
	m := testManifest()
	// sign signs with priv and names the key id (a wrong name is a forgery).
	sign := func(id string, priv ed25519.PrivateKey) SignedManifest {
		sm, err := SignManifest(m, priv)
		if err != nil {
			t.Fatal(err)
		}
		if real, ok := ids[id]; ok {
			sm.KeyID = real
		} else {
			sm.KeyID = id
		}
		return sm
	}
	// Good signatures, by both keys (rotation: nodes trust both during the overlap).
	for _, id := range []string{"old", "new"} {
		priv := map[string]ed25519.PrivateKey{"old": oldPriv, "new": newPriv}[id]
		b, _ := json.Marshal(sign(id, priv))
		_, got, err := OpenSignedManifest(b, keys)
		if err != nil || got.Version != m.Version {
			t.Fatalf("key %s: %v", id, err)
		}
	}
	// After rotation the old key is dropped: its signatures no longer verify.
	if _, err := VerifyManifest(sign("old", oldPriv), newKeySet(newPub)); !errors.Is(err, ErrSignatureInvalid) {
		t.Errorf("rotated-out key: %v", err)
	}
	unsigned := sign("old", oldPriv)
	unsigned.Signature = nil
	forged := sign("old", oldPriv)
	forged.Payload = []byte(strings.Replace(string(forged.Payload), `"vad"`, `"vax"`, 1))
	wrongKey := sign("old", evilPriv)
	unknownKey := sign("attacker", evilPriv)
	shortSig := sign("old", oldPriv)
	shortSig.Signature = shortSig.Signature[:10]
	for name, sm := range map[string]SignedManifest{"unsigned": unsigned, "forged payload": forged, "wrong key": wrongKey, "unknown key id": unknownKey, "short signature": shortSig} {
		if _, err := VerifyManifest(sm, keys); !errors.Is(err, ErrSignatureInvalid) {
			t.Errorf("%s: %v, want ErrSignatureInvalid", name, err)
		}
	}
	// A valid signature over a bad manifest is ErrInvalidArgument, not accepted.
	payload := []byte(`{"protocol":1}`)
	sm := SignedManifest{Payload: payload, KeyID: ids["old"], Signature: ed25519.Sign(oldPriv, payload)}
	if _, err := VerifyManifest(sm, keys); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("signed garbage: %v", err)
	}
}

func TestDecodeSignedManifestBad(t *testing.T) {
	for name, in := range map[string]string{
		"empty": "", "not json": "nope", "no payload": `{"key_id":"a"}`, "bad base64": `{"payload":"!!!"}`,
		"unknown field": `{"payload":"eA==","x":1}`, "trailing": `{"payload":"eA=="} 1`, "number": `5`,
	} {
		if _, err := DecodeSignedManifest([]byte(in)); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
}

func TestParseTrustedKeysBad(t *testing.T) {
	pub, _ := testKey(t, 1)
	good := base64.StdEncoding.EncodeToString(pub)
	if ks, err := ParseTrustedKeys(map[string]string{KeyID(pub): good}); err != nil || len(ks) != 1 {
		t.Fatalf("good key: %v", err)
	}
	for name, cfg := range map[string]map[string]string{
		"bad id":     {"../k": good},
		"other id":   {"k1": good},
		"empty id":   {"": good},
		"not base64": {"k": "***"},
		"short key":  {"k": base64.StdEncoding.EncodeToString(pub[:31])},
		"long key":   {"k": base64.StdEncoding.EncodeToString(append(pub, 0))},
	} {
		if _, err := ParseTrustedKeys(cfg); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
}

// FuzzOpenSignedManifest feeds arbitrary envelopes through decode+verify:
// no panic, and anything accepted must be valid and signed by a trusted key.
func FuzzOpenSignedManifest(f *testing.F) {
	pub, priv := testKey(f, 1)
	keys := newKeySet(pub)
	sm, err := SignManifest(testManifest(), priv)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := json.Marshal(sm)
	f.Add(good)
	f.Add([]byte(`{"payload":"eA==","key_id":"` + KeyID(pub) + `","signature":"AAAA"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sm, m, err := OpenSignedManifest(b, keys)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) && !errors.Is(err, ErrSignatureInvalid) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if !ed25519.Verify(pub, sm.Payload, sm.Signature) {
			t.Fatal("accepted an envelope that does not verify")
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an invalid manifest: %v", err)
		}
	})
}

// FuzzDecodeManifest: no panic; accepted manifests validate and re-encode.
func FuzzDecodeManifest(f *testing.F) {
	good, _ := json.Marshal(testManifest())
	f.Add(good)
	f.Add([]byte(`{"protocol":1,"model":"a","version":"1","files":[{"path":"model.onnx","role":"model","sha256":"` + strings.Repeat("0", 64) + `","size":0,"chunks":[]}]}`))
	lm := testManifest()
	lm.Lineage = testLineage()
	withLineage, _ := json.Marshal(lm)
	f.Add(withLineage)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if _, err := EncodeManifest(m); err != nil {
			t.Fatalf("accepted manifest does not re-encode: %v", err)
		}
	})
}

// TestManifestGraphless: a version with no model file (an ensemble) is
// valid only with a config saying what it runs.
func TestManifestGraphless(t *testing.T) {
	m := testManifest()
	m.Files[0].Role, m.Files[0].Path = RoleExternalData, "ppocr_keys_v1.txt"
	if err := m.Validate(); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "needs a config") {
		t.Errorf("no model file, no config: %v", err)
	}
	m.Config = "ensemble: {ocr: {}}\n"
	if err := m.Validate(); err != nil {
		t.Errorf("no model file, a config: %v", err)
	}
	if _, ok := m.ModelFile(); ok {
		t.Error("ModelFile found one")
	}
}

func testLineage() *Lineage {
	return &Lineage{TrainingRun: "mlflow:run-4f2a", DatasetDigest: "sha256:" + strings.Repeat("ab", 32),
		SourceCommit: "0123456789abcdef0123456789abcdef01234567", Metrics: map[string]float64{"cer.test": 0.031, "accuracy": 0.97}}
}

// TestManifestLineage: a manifest's lineage decodes, is covered by its
// signature, and renders as metadata parameters.
func TestManifestLineage(t *testing.T) {
	m := testManifest()
	m.Lineage = testLineage()
	pub, priv := testKey(t, 7)
	sm, err := SignManifest(m, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyManifest(sm, newKeySet(pub))
	if err != nil {
		t.Fatal(err)
	}
	if got.Lineage == nil || got.Lineage.TrainingRun != "mlflow:run-4f2a" || got.Lineage.Metrics["cer.test"] != 0.031 {
		t.Fatalf("lineage %+v", got.Lineage)
	}
	// Another training run in the same envelope: the signature fails.
	sm.Payload = bytes.Replace(sm.Payload, []byte("run-4f2a"), []byte("run-0000"), 1)
	if _, err := VerifyManifest(sm, newKeySet(pub)); !errors.Is(err, ErrSignatureInvalid) {
		t.Errorf("tampered lineage: %v, want ErrSignatureInvalid", err)
	}
	p := got.Lineage.Parameters()
	want := map[string]string{"training_run": "mlflow:run-4f2a", "dataset_digest": m.Lineage.DatasetDigest,
		"source_commit": m.Lineage.SourceCommit, "metric.accuracy": "0.97", "metric.cer.test": "0.031"}
	if fmt.Sprint(p) != fmt.Sprint(want) {
		t.Errorf("parameters %v, want %v", p, want)
	}
	if (*Lineage)(nil).Parameters() != nil {
		t.Error("nil lineage has parameters")
	}
	// No lineage: nothing in the JSON.
	b, _ := json.Marshal(testManifest())
	if bytes.Contains(b, []byte("lineage")) {
		t.Errorf("manifest without lineage encodes it: %s", b)
	}
}
