package wire

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/models"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func shaOf(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

var sha1x = strings.Repeat("a", 64)

func goodManifest() models.Manifest {
	return models.Manifest{Protocol: 1, Model: "m", Version: "1", Created: "2025-01-01T00:00:00Z",
		Files: []models.FileRef{{Path: "model.onnx", Role: RoleModel, SHA256: sha1x, Size: 30,
			Chunks: []models.ChunkRef{{SHA256: shaOf([]byte("c1")), Size: 10}, {SHA256: shaOf([]byte("c2")), Size: 20}}}}}
}

func testKey(t testing.TB) (ed25519.PrivateKey, models.KeySet) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := models.KeySet{}
	k.Add(priv.Public().(ed25519.PublicKey))
	return priv, k
}

func signedBytes(t testing.TB, priv ed25519.PrivateKey, payload []byte) []byte {
	sm := models.SignedManifest{Payload: payload, KeyID: KeyID(priv.Public().(ed25519.PublicKey)), Signature: ed25519.Sign(priv, payload)}
	b, err := json.Marshal(sm)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeDesiredRejects(t *testing.T) {
	cases := []struct {
		name, in, reason string
	}{
		{"empty", ``, ReasonBadJSON},
		{"not json", `{{{`, ReasonBadJSON},
		{"null", `null`, ReasonUnknownProtocol},
		{"array", `[]`, ReasonBadJSON},
		{"wrong type generation", `{"protocol":1,"generation":"7","models":{}}`, ReasonBadJSON},
		{"negative generation", `{"protocol":1,"generation":-1,"models":{}}`, ReasonBadJSON},
		{"zero generation", `{"protocol":1,"generation":0,"models":{}}`, ReasonBadField},
		{"unknown field", `{"protocol":1,"generation":1,"models":{},"evil":true}`, ReasonBadJSON},
		{"unknown nested field", `{"protocol":1,"generation":1,"models":{"m":{"version":"1","x":1}}}`, ReasonBadJSON},
		{"protocol 2", `{"protocol":2,"generation":1,"models":{}}`, ReasonUnknownProtocol},
		{"trailing", `{"protocol":1,"generation":1,"models":{}} {}`, ReasonBadJSON},
		{"bad model name", `{"protocol":1,"generation":1,"models":{"../x":{"version":"1"}}}`, ReasonBadField},
		{"wildcard model", `{"protocol":1,"generation":1,"models":{"a+":{"version":"1"}}}`, ReasonBadField},
		{"missing version", `{"protocol":1,"generation":1,"models":{"m":{}}}`, ReasonBadField},
		{"absent with version", `{"protocol":1,"generation":1,"models":{"m":{"absent":true,"version":"1"}}}`, ReasonBadField},
		{"bad strategy", `{"protocol":1,"generation":1,"models":{"m":{"version":"1","strategy":{"kind":"yolo"}}}}`, ReasonBadField},
		{"canary over 100", `{"protocol":1,"generation":1,"models":{"m":{"version":"1","strategy":{"kind":"canary","canary_percent":150}}}}`, ReasonBadField},
		{"gate on wrong kind", `{"protocol":1,"generation":1,"models":{"m":{"version":"1","strategy":{"kind":"canary","gates":{"max_abs_diff":1}}}}}`, ReasonBadField},
		{"bad time", `{"protocol":1,"generation":1,"updated":"yesterday","models":{}}`, ReasonBadField},
		{"oversize", `{"protocol":1,"generation":1,"models":{},"updated":"` + strings.Repeat("x", MaxControlBytes) + `"}`, ReasonOversize},
		{"huge generation", `{"protocol":1,"generation":1e30,"models":{}}`, ReasonBadJSON},
		{"generation 2^64-1 (issue 14)", `{"protocol":1,"generation":18446744073709551615,"models":{}}`, ReasonBadField},
		{"generation 2^53", `{"protocol":1,"generation":9007199254740992,"models":{}}`, ReasonBadField},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeDesired([]byte(c.in))
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("err = %v, want a rejection", err)
			}
			if _, r := ReasonOf(err); r != c.reason {
				t.Fatalf("reason = %q (%v), want %q", r, err, c.reason)
			}
		})
	}
}

func TestDesiredRoundTripAndMerge(t *testing.T) {
	node := DesiredState{Protocol: 1, Generation: 3, Models: map[string]ModelSpec{
		"a": {Version: "2", Strategy: &Strategy{Kind: StrategyCanary, CanaryPercent: 10}, Rollout: &RolloutRef{ID: "r1", Wave: 2}},
		"b": {Absent: true},
	}}
	b, err := node.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeDesired(b)
	if err != nil {
		t.Fatal(err)
	}
	g1 := &DesiredState{Protocol: 1, Generation: 9, Models: map[string]ModelSpec{"a": {Version: "1"}, "b": {Version: "1"}, "c": {Version: "1"}}}
	g2 := &DesiredState{Protocol: 1, Generation: 9, Models: map[string]ModelSpec{"c": {Version: "2"}, "d": {Version: "5"}}}
	m := Merge(&got, []*DesiredState{g1, g2, nil})
	want := map[string]string{"a": "2", "c": "1", "d": "5"}
	if len(m) != len(want) {
		t.Fatalf("merge = %v", m)
	}
	for k, v := range want {
		if m[k].Version != v {
			t.Fatalf("merge[%s] = %+v, want version %s", k, m[k], v)
		}
	}
	if m["a"].Rollout == nil || m["a"].Rollout.Wave != 2 {
		t.Fatalf("rollout not carried: %+v", m["a"])
	}
}

func TestDecodeSignedManifestRejects(t *testing.T) {
	priv, keys := testKey(t)
	_, otherPriv := mustKey(t)
	good, err := json.Marshal(goodManifest())
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(*models.Manifest)) []byte {
		m := goodManifest()
		f(&m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return signedBytes(t, priv, b)
	}
	tampered := signedBytes(t, priv, good)
	tampered = []byte(strings.Replace(string(tampered), `"key_id"`, `"key_id"`, 1))
	var sm models.SignedManifest
	_ = json.Unmarshal(tampered, &sm)
	sm.Payload = append([]byte(nil), sm.Payload...)
	sm.Payload[5] ^= 1
	tamperedB, _ := json.Marshal(sm)

	cases := []struct {
		name   string
		in     []byte
		reason string
	}{
		{"not json", []byte(`nope`), ReasonBadJSON},
		{"unknown outer field", []byte(`{"payload":"","key_id":"x","signature":"","x":1}`), ReasonBadJSON},
		{"payload wrong type", []byte(`{"payload":5,"key_id":"x","signature":""}`), ReasonBadJSON},
		{"unknown key", signedBytes(t, otherPriv, good), ReasonUnknownKey},
		{"tampered payload", tamperedB, ReasonBadSignature},
		{"short signature", []byte(`{"payload":"e30=","key_id":"` + KeyID(priv.Public().(ed25519.PublicKey)) + `","signature":"AAAA"}`), ReasonBadSignature},
		{"signed garbage", signedBytes(t, priv, []byte(`{"protocol":1,"model":"m","nope":1}`)), ReasonBadJSON},
		{"protocol 0", mod(func(m *models.Manifest) { m.Protocol = 0 }), ReasonUnknownProtocol},
		{"10 GB", mod(func(m *models.Manifest) {
			m.Files[0].Size = 10 << 30
			m.Files[0].Chunks = []models.ChunkRef{{SHA256: sha1x, Size: 10 << 30}}
		}), ReasonTooLarge},
		{"chunks don't sum", mod(func(m *models.Manifest) { m.Files[0].Size = 31 }), ReasonBadField},
		{"chunks past the end", mod(func(m *models.Manifest) { m.Files[0].Chunks[1].Size = 21 }), ReasonBadField},
		{"chunks short of the end", mod(func(m *models.Manifest) { m.Files[0].Chunks[0].Size = 9 }), ReasonBadField},
		{"negative chunk", mod(func(m *models.Manifest) { m.Files[0].Chunks[0].Size = -10; m.Files[0].Chunks[1].Size = 40 }), ReasonBadField},
		{"no chunks", mod(func(m *models.Manifest) { m.Files[0].Chunks = nil }), ReasonBadField},
		{"one sha, two sizes", mod(func(m *models.Manifest) { m.Files[0].Chunks[1].SHA256 = m.Files[0].Chunks[0].SHA256 }), ReasonBadField},
		{"single chunk, not the file", mod(func(m *models.Manifest) {
			m.Files[0].Chunks = []models.ChunkRef{{SHA256: shaOf([]byte("c1")), Size: 30}}
		}), ReasonBadField},
		{"oversize chunk", mod(func(m *models.Manifest) {
			m.Files[0].Size = MaxChunkBytes + 1
			m.Files[0].Chunks = []models.ChunkRef{{SHA256: sha1x, Size: MaxChunkBytes + 1}}
		}), ReasonBadField},
		{"zero chunk", mod(func(m *models.Manifest) { m.Files[0].Chunks[0].Size = 0; m.Files[0].Size = 20 }), ReasonBadField},
		{"path traversal", mod(func(m *models.Manifest) { m.Files[0].Path = "../../etc/passwd" }), ReasonBadField},
		{"absolute path", mod(func(m *models.Manifest) { m.Files[0].Path = "/etc/passwd" }), ReasonBadField},
		{"bad sha", mod(func(m *models.Manifest) { m.Files[0].SHA256 = strings.Repeat("A", 64) }), ReasonBadField},
		{"no model role", mod(func(m *models.Manifest) { m.Files[0].Role = RoleConfig }), ReasonBadField},
		{"unknown role", mod(func(m *models.Manifest) { m.Files[0].Role = "exe" }), ReasonBadField},
		{"no files", mod(func(m *models.Manifest) { m.Files = nil }), ReasonBadField},
		{"bad model name", mod(func(m *models.Manifest) { m.Model = "#" }), ReasonBadField},
		{"negative size", mod(func(m *models.Manifest) { m.Files[0].Size = -1 }), ReasonTooLarge},
		{"payload in unpadded base64", []byte(`{"payload":"e30","key_id":"` + KeyID(priv.Public().(ed25519.PublicKey)) + `","signature":""}`), ReasonBadJSON},
		{"payload in URL-safe base64", []byte(`{"payload":"-_8=","key_id":"` + KeyID(priv.Public().(ed25519.PublicKey)) + `","signature":""}`), ReasonBadJSON},
		{"oversize message", append([]byte(`{"payload":"`), append([]byte(strings.Repeat("A", MaxMessageBytes)), `"}`...)...), ReasonOversize},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := DecodeSignedManifest(c.in, keys, 0)
			if _, r := ReasonOf(err); r != c.reason {
				t.Fatalf("reason = %q (%v), want %q", r, err, c.reason)
			}
		})
	}
	// And the good one passes, through SignManifest.
	sm2, err := SignManifest(goodManifest(), priv)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(sm2)
	m, _, err := DecodeSignedManifest(b, keys, 0)
	if err != nil || m.Model != "m" || len(m.Files[0].Chunks) != 2 {
		t.Fatalf("good manifest: %+v, %v", m, err)
	}
}

func mustKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func TestKeyPEMRoundTrip(t *testing.T) {
	_, priv := mustKey(t)
	privPEM, pubPEM, err := MarshalKeyPairPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := ParsePrivateKeyPEM(privPEM)
	if err != nil || !p2.Equal(priv) {
		t.Fatalf("private key round trip: %v", err)
	}
	pub, err := models.ParsePublicKeyPEM(pubPEM)
	if err != nil || !pub.Equal(priv.Public()) {
		t.Fatalf("public key round trip: %v", err)
	}
	if _, err := models.ParsePublicKeyPEM(privPEM); err == nil {
		t.Fatal("private PEM accepted as public key")
	}
	if _, err := ParsePrivateKeyPEM([]byte("garbage")); err == nil {
		t.Fatal("garbage accepted as private key")
	}
}

func TestCheckChunkAndTopics(t *testing.T) {
	tp, err := NewTopics("edgeai/v1/")
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("hello chunk")
	sha := shaOf(data)
	if err := CheckChunk(sha, data); err != nil {
		t.Fatal(err)
	}
	if _, r := ReasonOf(CheckChunk(sha, []byte("other"))); r != ReasonChunkMismatch {
		t.Fatalf("mismatch reason %q", r)
	}
	if _, r := ReasonOf(CheckChunk(sha, make([]byte, MaxChunkBytes+1))); r != ReasonOversize {
		t.Fatalf("oversize reason %q", r)
	}
	got, err := tp.ParseChunk(tp.Chunk(sha))
	if err != nil || got != sha {
		t.Fatalf("ParseChunk = %q, %v", got, err)
	}
	for _, bad := range []string{"edgeai/v1/chunks/" + strings.ToUpper(sha), "edgeai/v1/chunks/abc", "edgeai/v1/chunks/" + sha + "/x", "other/chunks/" + sha, ""} {
		if _, err := tp.ParseChunk(bad); !errors.Is(err, ErrRejected) {
			t.Errorf("ParseChunk(%q) accepted", bad)
		}
	}
	m, v, err := tp.ParseManifest(tp.Manifest("det", "2"))
	if err != nil || m != "det" || v != "2" {
		t.Fatalf("ParseManifest = %s %s %v", m, v, err)
	}
	n, leaf, err := tp.ParseNodeTopic(tp.Status("n1"))
	if err != nil || n != "n1" || leaf != "status" {
		t.Fatalf("ParseNodeTopic = %s %s %v", n, leaf, err)
	}
	if g, err := tp.ParseGroupDesired(tp.GroupDesired("g")); err != nil || g != "g" {
		t.Fatalf("ParseGroupDesired = %s %v", g, err)
	}
	for _, r := range []string{"", "/x", "a/#", "$SYS"} {
		if _, err := NewTopics(r); err == nil && r != "" {
			t.Errorf("NewTopics(%q) accepted", r)
		}
	}
	matches := []struct {
		f, t string
		ok   bool
	}{
		{"a/+/c", "a/b/c", true}, {"a/+/c", "a/b/d", false}, {"a/#", "a", true}, {"a/#", "a/b/c", true},
		{"#", "$SYS/x", false}, {"a/b", "a/b/c", false}, {"a/b/c", "a/b", false}, {"+/x", "$SYS/x", false},
	}
	for _, c := range matches {
		if Match(c.f, c.t) != c.ok {
			t.Errorf("Match(%q,%q) = %v", c.f, c.t, !c.ok)
		}
	}
}

func TestStatusPresenceEventRejects(t *testing.T) {
	good := Status{Protocol: 1, Node: "n1", Time: "2025-01-01T00:00:00Z", Models: map[string]ModelStatus{"m": {Version: "1", State: "Active", BytesDone: 1, BytesTotal: 2, P99Ms: 3.5, Rollout: &RolloutRef{ID: "r1", Wave: 1},
		Lineage: &models.Lineage{TrainingRun: "run-1", Metrics: map[string]float64{"acc": 0.9}}}}, Labels: map[string]string{"arch": "arm64", "site": ""}}
	if b, err := good.Encode(); err != nil {
		t.Fatal(err)
	} else if _, err := DecodeStatus(b); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		decode func([]byte) error
		in     string
		reason string
	}{
		{"status bad json", decStatus, `{`, ReasonBadJSON},
		{"status no node", decStatus, `{"protocol":1,"node":"","time":"2025-01-01T00:00:00Z","desired":{"node":0},"models":{}}`, ReasonBadField},
		{"status no time", decStatus, `{"protocol":1,"node":"n","desired":{"node":0},"models":{}}`, ReasonBadField},
		{"status bytes", decStatus, `{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":0},"models":{"m":{"version":"1","state":"x","bytes_done":5,"bytes_total":1}}}`, ReasonBadField},
		{"status label key", decStatus, `{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":0},"models":{},"labels":{"a/b":"x"}}`, ReasonBadField},
		{"status label value", decStatus, `{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":0},"models":{},"labels":{"site":"x y"}}`, ReasonBadField},
		{"status label type", decStatus, `{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":0},"models":{},"labels":{"site":1}}`, ReasonBadJSON},
		{"status serving name", decStatus, `{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":0},"models":{"m":{"version":"2","state":"Waiting","reason":"Overridden","serving":"../1"}}}`, ReasonBadField},
		{"status p99", decStatus, `{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":0},"models":{"m":{"version":"1","state":"Active","p99_ms":-1}}}`, ReasonBadField},
		{"status rollout ref", decStatus, `{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":0},"models":{"m":{"version":"1","state":"Active","rollout":{"id":"r/1","wave":1}}}}`, ReasonBadField},
		{"status lineage commit", decStatus, `{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":0},"models":{"m":{"version":"1","state":"Active","lineage":{"source_commit":"xyz"}}}}`, ReasonBadField},
		{"status lineage unknown", decStatus, `{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":0},"models":{"m":{"version":"1","state":"Active","lineage":{"run":"1"}}}}`, ReasonBadJSON},
		{"status unknown", decStatus, `{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":0},"models":{},"z":1}`, ReasonBadJSON},
		{"presence wrong type", decPresence, `{"protocol":1,"node":"n","online":"yes"}`, ReasonBadJSON},
		{"presence protocol", decPresence, `{"protocol":3,"node":"n","online":true}`, ReasonUnknownProtocol},
		{"presence node", decPresence, `{"protocol":1,"node":"a/b","online":true}`, ReasonBadField},
		{"event no type", decEvent, `{"protocol":1,"node":"n","seq":1,"time":"2025-01-01T00:00:00Z","type":""}`, ReasonBadField},
		{"event long detail", decEvent, `{"protocol":1,"node":"n","seq":1,"time":"2025-01-01T00:00:00Z","type":"x","detail":"` + strings.Repeat("d", 5000) + `"}`, ReasonBadField},
		{"event oversize", decEvent, strings.Repeat(" ", MaxControlBytes+1), ReasonOversize},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, r := ReasonOf(c.decode([]byte(c.in))); r != c.reason {
				t.Fatalf("reason = %q, want %q", r, c.reason)
			}
		})
	}
}

func decStatus(b []byte) error   { _, err := DecodeStatus(b); return err }
func decPresence(b []byte) error { _, err := DecodePresence(b); return err }

// decEvent decodes an event as strictly as the other payloads (the cloud
// side has no event decoder yet; the node only encodes them).
func decEvent(b []byte) error {
	var e Event
	if err := decodeStrict(KindEvent, b, MaxControlBytes, &e); err != nil {
		return err
	}
	return e.Validate()
}

func TestRejecterCountsAndRateLimits(t *testing.T) {
	reg := prometheus.NewRegistry()
	var logged strings.Builder
	r, err := NewRejecter(reg, zerolog.New(&logged))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		_, err := DecodeDesired([]byte("{"))
		if r.Observe("t", err) == nil {
			t.Fatal("Observe dropped the error")
		}
	}
	if got := r.Count(KindDesired, ReasonBadJSON); got != 5 {
		t.Fatalf("count = %v, want 5", got)
	}
	if n := strings.Count(logged.String(), "rejected message"); n != 1 {
		t.Fatalf("logged %d times, want 1 (rate-limited)", n)
	}
	if _, err := NewRejecter(reg, zerolog.Nop()); err == nil {
		t.Fatal("second registration on the same registry succeeded")
	}
}

func FuzzDecodeDesired(f *testing.F) {
	f.Add([]byte(`{"protocol":1,"generation":1,"models":{"m":{"version":"1","strategy":{"kind":"canary","canary_percent":5}}}}`))
	f.Add([]byte(`{"protocol":1,"generation":2,"models":{"m":{"absent":true}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDesired(b)
		if err != nil {
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("error is not a rejection: %v", err)
			}
			return
		}
		if _, err := d.Encode(); err != nil {
			t.Fatalf("accepted state does not re-encode: %v", err)
		}
	})
}

func FuzzDecodeSignedManifest(f *testing.F) {
	priv, keys := testKey(f)
	good, _ := json.Marshal(goodManifest())
	f.Add(signedBytes(f, priv, good))
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, _, err := DecodeSignedManifest(b, keys, 0)
		if err != nil {
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("error is not a rejection: %v", err)
			}
			return
		}
		if err := ValidateManifest(m, DefaultMaxModelBytes); err != nil {
			t.Fatalf("accepted manifest fails validation: %v", err)
		}
	})
}

// FuzzManifestPayload fuzzes the inner manifest, signed with a trusted key,
// so the fuzzer gets past the signature check.
func FuzzManifestPayload(f *testing.F) {
	priv, keys := testKey(f)
	good, _ := json.Marshal(goodManifest())
	f.Add(good)
	f.Fuzz(func(t *testing.T, payload []byte) {
		_, _, err := DecodeSignedManifest(signedBytes(t, priv, payload), keys, 0)
		if err != nil && !errors.Is(err, ErrRejected) {
			t.Fatalf("error is not a rejection: %v", err)
		}
	})
}

func FuzzDecodeStatusPresenceEvent(f *testing.F) {
	f.Add([]byte(`{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":1},"models":{}}`))
	f.Add([]byte(`{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":1},"models":{"m":{"version":"2","state":"Canary","p99_ms":12.5,"rollout":{"id":"r1","wave":2}}},"labels":{"arch":"arm64","site":""}}`))
	f.Add([]byte(`{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":1},"models":{"m":{"version":"2","state":"Waiting","reason":"Overridden","serving":"1"}}}`))
	f.Add([]byte(`{"protocol":1,"node":"n","time":"2025-01-01T00:00:00Z","desired":{"node":1},"models":{"m":{"version":"2","state":"Active","lineage":{"training_run":"r-1","dataset_digest":"sha256:` + strings.Repeat("0", 64) + `","source_commit":"abcdef1","metrics":{"acc":0.9}}}}}`))
	f.Add([]byte(`{"protocol":1,"node":"n","online":false}`))
	f.Add([]byte(`{"protocol":1,"node":"n","seq":1,"time":"2025-01-01T00:00:00Z","type":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, dec := range []func([]byte) error{decStatus, decPresence, decEvent} {
			if err := dec(b); err != nil && !errors.Is(err, ErrRejected) {
				t.Fatalf("error is not a rejection: %v", err)
			}
		}
	})
}

func FuzzChunkTopic(f *testing.F) {
	tp, _ := NewTopics("")
	f.Add("edgeai/v1/chunks/"+sha1x, []byte("x"))
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		sha, err := tp.ParseChunk(topic)
		if err != nil {
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("error is not a rejection: %v", err)
			}
			return
		}
		if err := CheckChunk(sha, payload); err == nil && shaOf(payload) != sha {
			t.Fatal("accepted a chunk whose hash differs from its topic")
		}
	})
}

func TestTopicKindOf(t *testing.T) {
	tp := Topics{Root: DefaultRoot}
	sha := strings.Repeat("ab", 32)
	for topic, want := range map[string]string{
		tp.NodeDesired("n1"):       KindDesired,
		tp.GroupDesired("cams"):    KindDesired,
		tp.Manifest("m", "1"):      KindManifest,
		tp.Chunk(sha):              KindChunk,
		tp.Status("n1"):            KindStatus,
		tp.Presence("n1"):          KindPresence,
		tp.Events("n1"):            KindEvent,
		"edgeai/v1/nodes/n1/other": KindTopic,
		"elsewhere/x":              KindTopic,
	} {
		if got := tp.KindOf(topic); got != want {
			t.Errorf("KindOf(%q) = %q, want %q", topic, got, want)
		}
	}
}

// TestJSONSafeIntegers: 2^53-1 is the largest generation, event seq or byte
// count accepted, so that every JSON implementation reads it exactly.
func TestJSONSafeIntegers(t *testing.T) {
	if _, err := DecodeDesired([]byte(`{"protocol":1,"generation":9007199254740991,"models":{}}`)); err != nil {
		t.Fatalf("generation 2^53-1: %v", err)
	}
	if _, err := (DesiredState{Protocol: 1, Generation: MaxGeneration + 1}).Encode(); err == nil {
		t.Fatal("encoded a generation over 2^53-1")
	}
	st := Status{Protocol: 1, Node: "n1", Time: "2026-01-01T00:00:00Z", Desired: AppliedGenerations{Node: MaxGeneration + 1}}
	if _, r := ReasonOf(st.Validate()); r != ReasonBadField {
		t.Fatalf("status node generation over 2^53-1: reason %q", r)
	}
	st.Desired = AppliedGenerations{Groups: map[string]uint64{"g": MaxGeneration + 1}}
	if _, r := ReasonOf(st.Validate()); r != ReasonBadField {
		t.Fatalf("status group generation over 2^53-1: reason %q", r)
	}
	st.Desired = AppliedGenerations{}
	st.Models = map[string]ModelStatus{"m": {Version: "1", State: "Downloading", BytesDone: 1, BytesTotal: MaxJSONInt + 1}}
	if _, r := ReasonOf(st.Validate()); r != ReasonBadField {
		t.Fatalf("status bytes_total over 2^53-1: reason %q", r)
	}
	ev := Event{Protocol: 1, Node: "n1", Seq: MaxJSONInt + 1, Time: "2026-01-01T00:00:00Z", Type: "state"}
	if _, r := ReasonOf(ev.Validate()); r != ReasonBadField {
		t.Fatalf("event seq over 2^53-1: reason %q", r)
	}
}
