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

func listedKey(priv ed25519.PrivateKey) ListedKey {
	pub := priv.Public().(ed25519.PublicKey)
	return ListedKey{KeyID: KeyID(pub), PublicKey: pub}
}

func TestDecodeKeyList(t *testing.T) {
	root, roots := testKey(t)
	signer, _ := testKey(t)
	other, _ := testKey(t)
	soon := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	l := KeyList{Protocol: 1, Version: 3, Expires: soon, Keys: []ListedKey{listedKey(signer)}, Revoked: []string{"0123456789abcdef"}}
	good, err := SignKeyList(l, root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeKeyList(good, roots)
	if err != nil || got.Version != 3 || len(got.Keys) != 1 || got.Revoked[0] != "0123456789abcdef" {
		t.Fatalf("good list: %+v %v", got, err)
	}
	tr := got.Trust()
	if _, err := tr.Keys.Key(KeyID(signer.Public().(ed25519.PublicKey))); err != nil || !tr.Revoked["0123456789abcdef"] || tr.Version != 3 {
		t.Fatalf("Trust() = %+v", tr)
	}
	// signedList signs raw payload bytes with root, bypassing SignKeyList's
	// validation, to build the lists a hostile or buggy publisher could.
	signedList := func(payload string) []byte { return signedBytes(t, root, []byte(payload)) }
	with := func(f func(*KeyList)) []byte {
		c := l
		c.Keys = append([]ListedKey(nil), l.Keys...)
		f(&c)
		b, _ := json.Marshal(c)
		return signedBytes(t, root, b)
	}
	var env Envelope
	_ = json.Unmarshal(good, &env)
	env.Payload = []byte(strings.Replace(string(env.Payload), `"version":3`, `"version":4`, 1))
	tampered, _ := json.Marshal(env)
	many := make([]ListedKey, MaxListedKeys+1)
	for i := range many {
		k, _ := testKey(t)
		many[i] = listedKey(k)
	}
	for _, c := range []struct {
		name   string
		in     []byte
		reason string
	}{
		{"not JSON", []byte("nope"), ReasonBadJSON},
		{"oversize", []byte(`{"payload":"` + strings.Repeat("A", MaxControlBytes) + `"}`), ReasonOversize},
		{"trailing data", append(append([]byte(nil), good...), '{', '}'), ReasonBadJSON},
		{"unknown envelope field", []byte(strings.Replace(string(good), `"key_id"`, `"x":1,"key_id"`, 1)), ReasonBadJSON},
		{"empty payload", []byte(`{"payload":"","key_id":"x","signature":""}`), ReasonBadField},
		{"signed by a key that is not a root", func() []byte { b, _ := SignKeyList(l, signer); return b }(), ReasonUnknownKey},
		{"tampered payload", tampered, ReasonBadSignature},
		{"short signature", []byte(`{"payload":"e30=","key_id":"` + KeyID(root.Public().(ed25519.PublicKey)) + `","signature":"AAAA"}`), ReasonBadSignature},
		{"payload not JSON", signedList("nope"), ReasonBadJSON},
		{"unknown payload field", signedList(`{"protocol":1,"version":1,"expires":"` + soon + `","keys":[],"x":1}`), ReasonBadJSON},
		{"protocol 2", with(func(k *KeyList) { k.Protocol = 2 }), ReasonUnknownProtocol},
		{"version 0", with(func(k *KeyList) { k.Version = 0 }), ReasonBadField},
		{"version over 2^53-1", with(func(k *KeyList) { k.Version = 1 << 60 }), ReasonBadField},
		{"no expires", with(func(k *KeyList) { k.Expires = "" }), ReasonBadField},
		{"expires not RFC 3339", with(func(k *KeyList) { k.Expires = "next year" }), ReasonBadField},
		{"a 31-byte key", with(func(k *KeyList) { k.Keys[0].PublicKey = k.Keys[0].PublicKey[:31] }), ReasonBadField},
		{"a key under another key's id", with(func(k *KeyList) { k.Keys[0].KeyID = KeyID(other.Public().(ed25519.PublicKey)) }), ReasonBadField},
		{"a key listed twice", with(func(k *KeyList) { k.Keys = append(k.Keys, k.Keys[0]) }), ReasonBadField},
		{"a key listed and revoked", with(func(k *KeyList) { k.Revoked = []string{k.Keys[0].KeyID} }), ReasonBadField},
		{"a revoked id that is not 16 hex", with(func(k *KeyList) { k.Revoked = []string{"0123456789ABCDEF"} }), ReasonBadField},
		{"too many keys", with(func(k *KeyList) { k.Keys = many }), ReasonTooLarge},
		{"too many revoked", with(func(k *KeyList) { k.Revoked = make([]string, MaxRevokedKeys+1) }), ReasonTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeKeyList(c.in, roots)
			if kind, r := ReasonOf(err); r != c.reason || kind != KindKeys {
				t.Fatalf("%s/%s (%v), want keys/%s", kind, r, err, c.reason)
			}
		})
	}
	// ReadKeyList reads a list whatever signed it; it still validates.
	if rl, env, err := ReadKeyList(func() []byte { b, _ := SignKeyList(l, signer); return b }()); err != nil || rl.Version != 3 || env.KeyID != KeyID(signer.Public().(ed25519.PublicKey)) {
		t.Fatalf("ReadKeyList: %+v %s %v", rl, env.KeyID, err)
	}
	if _, _, err := ReadKeyList(with(func(k *KeyList) { k.Version = 0 })); err == nil {
		t.Fatal("ReadKeyList accepted version 0")
	}
	if _, err := SignKeyList(KeyList{Protocol: 1, Version: 1, Expires: soon, Revoked: make([]string, 2)}, root); err == nil {
		t.Fatal("signed an invalid list")
	}
	past := l
	past.Expires = time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	if !past.Expired(time.Now()) || l.Expired(time.Now()) || !l.Expired(time.Now().Add(2*time.Hour)) || l.Expired(time.Now().Add(time.Hour+models.ClockSkew/2)) {
		t.Fatal("Expired disagrees with expires and the clock-skew allowance")
	}
}

func FuzzDecodeKeyList(f *testing.F) {
	root, roots := testKey(f)
	signer, _ := testKey(f)
	b, err := SignKeyList(KeyList{Protocol: 1, Version: 2, Expires: "2027-01-01T00:00:00Z", Keys: []ListedKey{listedKey(signer)}, Revoked: []string{"0123456789abcdef"}}, root)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"payload":"e30=","key_id":"0123456789abcdef","signature":"AAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Signed by the fuzzer's bytes as the payload, so the payload decoder
		// sees arbitrary input past the signature check.
		for _, in := range [][]byte{b, signedBytes(t, root, b)} {
			l, err := DecodeKeyList(in, roots)
			if err != nil {
				if !errors.Is(err, ErrRejected) {
					t.Fatalf("error is not a rejection: %v", err)
				}
				continue
			}
			if err := l.Validate(); err != nil {
				t.Fatalf("accepted an invalid list: %v", err)
			}
			if len(l.Trust().Keys) != len(l.Keys) {
				t.Fatal("Trust() lost a key")
			}
		}
	})
}
