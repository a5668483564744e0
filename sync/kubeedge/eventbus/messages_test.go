package eventbus

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeai/edge-node/sync/kubeedge"
)

// A delta exactly as EdgeCore's dttype.BuildDeviceTwinDelta marshals it.
const kubeEdgeDelta = `{"event_id":"a1","timestamp":1718000000456,
 "twin":{"m.version":{"expected":{"value":"2","metadata":{"timestamp":1718000000000}},"actual":{"value":"1","metadata":{"timestamp":1717000000000}},"optional":false,"metadata":{"type":"string"}},
         "m.rollout":{"expected":{"value":"canary:5","metadata":{"timestamp":1718000000000}},"actual":{"value":"canary:5"},"metadata":{"type":"string"}},
         "old.version":{"expected":{"value":"4"},"metadata":{"type":"deleted"}}},
 "delta":{"m.version":"2"}}`

func TestDecodeDelta(t *testing.T) {
	d, err := DecodeDelta([]byte(kubeEdgeDelta))
	if err != nil {
		t.Fatal(err)
	}
	got := Desired(d.Twin, d.Delta)
	want := []kubeedge.Property{{Name: "m.rollout", Value: "canary:5"}, {Name: "m.version", Value: "2"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("desired %v, want %v", got, want)
	}
	if d.EventID != "a1" || d.Timestamp != 1718000000456 {
		t.Fatalf("base %+v", d.BaseMessage)
	}
}

func TestDecodeTwinResultError(t *testing.T) {
	_, err := DecodeTwinResult([]byte(`{"event_id":"x","timestamp":1,"code":404,"reason":"device not found"}`))
	var er *ErrorResult
	if !errors.As(err, &er) || er.Code != 404 || er.Reason != "device not found" {
		t.Fatalf("err %v", err)
	}
}

// TestDecodeBad is the table of bad payloads for both decoders.
func TestDecodeBad(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"delta":{`)
	for i := 0; i <= MaxTwins; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"n` + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + itoa(i) + `":"1"`)
	}
	b.WriteString(`}}`)
	for _, tc := range []struct{ name, payload string }{
		{"empty", ``},
		{"spaces", `   `},
		{"not JSON", `twin`},
		{"array", `[{"twin":{}}]`},
		{"string", `"x"`},
		{"null", `null`},
		{"truncated", `{"event_id":"a","twin":{`},
		{"two objects", `{} {}`},
		{"timestamp as string", `{"timestamp":"now"}`},
		{"twin as array", `{"twin":[]}`},
		{"expected value as number", `{"twin":{"m.version":{"expected":{"value":2}}}}`},
		{"delta value as object", `{"delta":{"m.version":{}}}`},
		{"optional as string", `{"twin":{"m":{"optional":"yes"}}}`},
		{"too large", `{"event_id":"` + strings.Repeat("x", MaxPayload) + `"}`},
		{"too many twins", b.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeDelta([]byte(tc.payload)); err == nil {
				t.Errorf("DecodeDelta accepted %.80q", tc.payload)
			}
			if tc.name == "delta value as object" || tc.name == "too many twins" {
				return // not fields of a twin result
			}
			if _, err := DecodeTwinResult([]byte(tc.payload)); err == nil {
				t.Errorf("DecodeTwinResult accepted %.80q", tc.payload)
			}
		})
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestEncodeReport(t *testing.T) {
	now := time.UnixMilli(1718000000789)
	b, err := EncodeReport([]kubeedge.TwinValue{{Name: "m.version", Reported: "2"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	var u TwinUpdate
	if err := json.Unmarshal(b, &u); err != nil {
		t.Fatal(err)
	}
	tw := u.Twin["m.version"]
	if u.EventID == "" || u.Timestamp != 1718000000789 || tw == nil || *tw.Actual.Value != "2" || tw.Expected != nil || tw.Metadata.Type != "string" || tw.Actual.Metadata.Timestamp != 1718000000789 {
		t.Fatalf("%s", b)
	}
	if _, err := EncodeReport([]kubeedge.TwinValue{{Name: "m.version", Reported: "a b"}}, now); err == nil {
		t.Fatal("value outside the alphabet encoded")
	}
}

// FuzzDecodeDelta: no panic; whatever decodes yields bounded desired values.
func FuzzDecodeDelta(f *testing.F) {
	f.Add([]byte(kubeEdgeDelta))
	f.Add([]byte(`{"twin":{"m.version":{"expected":{"value":"1"}}},"delta":{}}`))
	f.Add([]byte(`{"event_id":"x","timestamp":1,"code":404,"reason":"r"}`))
	f.Add([]byte(`{"twin":{"a":null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDelta(b)
		if err == nil {
			if p := Desired(d.Twin, d.Delta); len(p) > MaxTwins {
				t.Fatalf("%d desired values", len(p))
			}
			kubeedge.ParseDesired(Desired(d.Twin, d.Delta))
		}
		if r, err := DecodeTwinResult(b); err == nil {
			Desired(r.Twin, nil)
		}
	})
}
