package wire_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/wire"
)

// TestSchemasMatchDecoders checks docs/schema/*.schema.json against the
// decoders: every example in a schema decodes with the payload's decoder,
// and every object the decoder reads has exactly the decoder's fields in the
// schema, with additionalProperties false (the decoders reject unknown
// fields).
func TestSchemasMatchDecoders(t *testing.T) {
	strict := func(b []byte, v any) error {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		return dec.Decode(v)
	}
	examplePub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32)).Public().(ed25519.PublicKey)
	keys := models.KeySet{}
	keys.Add(examplePub)
	for _, c := range []struct {
		file   string
		typ    any
		decode func([]byte) error
	}{
		{"desired-state", wire.DesiredState{}, func(b []byte) error { _, err := wire.DecodeDesired(b); return err }},
		{"signed-envelope", models.SignedManifest{}, func(b []byte) error {
			_, _, err := wire.DecodeDesiredMessage(b, "node/n1", wire.DesiredPolicy{Keys: keys, RequireSigned: true})
			return err
		}},
		{"manifest", models.Manifest{}, func(b []byte) error {
			m, err := models.DecodeManifest(b)
			if err == nil {
				err = wire.ValidateManifest(m, wire.DefaultMaxModelBytes)
			}
			return err
		}},
		{"key-list", wire.KeyList{}, func(b []byte) error {
			var l wire.KeyList
			if err := strict(b, &l); err != nil {
				return err
			}
			return l.Validate()
		}},
		{"status", wire.Status{}, func(b []byte) error { _, err := wire.DecodeStatus(b); return err }},
		{"presence", wire.Presence{}, func(b []byte) error { _, err := wire.DecodePresence(b); return err }},
		{"event", wire.Event{}, func(b []byte) error {
			var e wire.Event
			if err := strict(b, &e); err != nil {
				return err
			}
			return e.Validate()
		}},
	} {
		t.Run(c.file, func(t *testing.T) {
			s := loadSchema(t, c.file+".schema.json")
			ex, _ := s["examples"].([]any)
			if len(ex) == 0 {
				t.Fatal("no examples")
			}
			for i, e := range ex {
				b, _ := json.Marshal(e)
				if err := c.decode(b); err != nil {
					t.Errorf("example %d does not decode: %v", i, err)
				}
			}
			checkSchemaFields(t, s, s, reflect.TypeOf(c.typ), c.file)
		})
	}
	// The signed desired envelope has the manifest envelope's fields.
	if a, b := jsonFields(reflect.TypeOf(models.SignedManifest{})), jsonFields(reflect.TypeOf(wire.Envelope{})); !slices.Equal(a, b) {
		t.Errorf("SignedManifest fields %v, Envelope fields %v: one envelope schema no longer fits manifests, desired state and key lists", a, b)
	}
}

func loadSchema(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../docs/schema", name))
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return s
}

func jsonFields(rt reflect.Type) []string {
	var out []string
	for i := range rt.NumField() {
		if name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// resolve follows a $ref ("#/$defs/x" in root, or "file.schema.json#/$defs/x").
func resolve(t *testing.T, root, node map[string]any) (map[string]any, map[string]any) {
	t.Helper()
	ref, ok := node["$ref"].(string)
	if !ok {
		return root, node
	}
	file, ptr, _ := strings.Cut(ref, "#")
	if file != "" {
		root = loadSchema(t, file)
	}
	cur := root
	for _, p := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		next, ok := cur[p].(map[string]any)
		if !ok {
			t.Fatalf("$ref %s does not resolve", ref)
		}
		cur = next
	}
	return resolve(t, root, cur)
}

// checkSchemaFields walks the Go type and its schema side by side.
func checkSchemaFields(t *testing.T, root, node map[string]any, rt reflect.Type, path string) {
	t.Helper()
	root, node = resolve(t, root, node)
	for rt.Kind() == reflect.Pointer {
		rt = rt.Elem()
	}
	switch rt.Kind() {
	case reflect.Struct:
		props, _ := node["properties"].(map[string]any)
		var names []string
		for k := range props {
			names = append(names, k)
		}
		sort.Strings(names)
		if want := jsonFields(rt); !slices.Equal(names, want) {
			t.Errorf("%s: schema properties %v, the decoder's fields %v", path, names, want)
		}
		if ap, ok := node["additionalProperties"].(bool); !ok || ap {
			t.Errorf("%s: additionalProperties must be false (unknown fields are rejected)", path)
		}
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			if sub, ok := props[name].(map[string]any); ok {
				checkSchemaFields(t, root, sub, rt.Field(i).Type, path+"."+name)
			}
		}
	case reflect.Slice:
		if rt.Elem().Kind() == reflect.Uint8 {
			return // []byte: a base64 string
		}
		items, ok := node["items"].(map[string]any)
		if !ok {
			t.Errorf("%s: an array without items", path)
			return
		}
		checkSchemaFields(t, root, items, rt.Elem(), path+"[]")
	case reflect.Map:
		ap, ok := node["additionalProperties"].(map[string]any)
		if !ok {
			t.Errorf("%s: a map without an additionalProperties schema", path)
			return
		}
		checkSchemaFields(t, root, ap, rt.Elem(), path+".*")
	}
}
