package wire_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/wire"
)

// TestProtocolDocMatchesCode keeps docs/protocol.md from drifting from the
// code: it must name (in backticks) every rejection reason and kind, every
// version state and reason, every JSON field of every payload, the file
// roles and strategy words, and state every enforced limit's figure.
func TestProtocolDocMatchesCode(t *testing.T) {
	b, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	need := func(what, s string) {
		t.Helper()
		if !strings.Contains(doc, s) {
			t.Errorf("docs/protocol.md does not name %s %s", what, s)
		}
	}
	for _, v := range stringConsts(t, "errors.go", func(name, _ string) bool {
		return strings.HasPrefix(name, "Reason") || strings.HasPrefix(name, "Kind")
	}) {
		need("the rejection reason or kind", "`"+v+"`")
	}
	for _, v := range stringConsts(t, "../../models/state.go", func(_, typ string) bool { return typ == "State" || typ == "Reason" }) {
		need("the version state or reason", "`"+v+"`")
	}
	for _, v := range []any{
		wire.DesiredState{}, wire.ModelSpec{}, wire.RolloutRef{}, models.Strategy{}, models.Gates{},
		models.SignedManifest{}, models.Manifest{}, models.FileRef{}, models.ChunkRef{}, models.GoldenCase{},
		models.GoldenTensor{}, models.Lineage{}, wire.Status{}, wire.AppliedGenerations{}, wire.ModelStatus{},
		wire.Presence{}, wire.Event{}, wire.KeyList{}, wire.ListedKey{},
	} {
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			if !strings.Contains(doc, "`"+name+"`") && !strings.Contains(doc, "."+name+"`") {
				t.Errorf("docs/protocol.md does not name %s field `%s`", rt.Name(), name)
			}
		}
	}
	for _, v := range []string{models.RoleModel, models.RoleExternalData, models.RoleConfig,
		string(models.StrategyImmediate), string(models.StrategyCanary), string(models.StrategyShadow),
		string(models.Rollback), string(models.Hold)} {
		need("the value", "`"+v+"`")
	}
	for name, n := range map[string]int64{
		"wire.MaxMessageBytes": wire.MaxMessageBytes, "wire.MaxChunkBytes": wire.MaxChunkBytes,
		"wire.MaxControlBytes": wire.MaxControlBytes, "wire.MaxModels": wire.MaxModels,
		"wire.MaxFiles": wire.MaxFiles, "wire.MaxLabels": wire.MaxLabels,
		"wire.MaxGeneration": wire.MaxGeneration, "wire.DefaultMaxModelBytes": wire.DefaultMaxModelBytes,
		"wire.MaxListedKeys": wire.MaxListedKeys, "wire.MaxRevokedKeys": wire.MaxRevokedKeys,
		"mqttlink.DefaultMaxMessageBytes": mqttlink.DefaultMaxMessageBytes,
		"mqttlink.MinMaxMessageBytes":     mqttlink.MinMaxMessageBytes,
	} {
		need("the figure of "+name, commas(n))
	}
}

// stringConsts returns the values of the string constants declared in file
// (relative to this package) whose name and declared type keep accepts.
func stringConsts(t *testing.T, file string, keep func(name, typ string) bool) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, sp := range gd.Specs {
			vs := sp.(*ast.ValueSpec)
			typ := ""
			if id, ok := vs.Type.(*ast.Ident); ok {
				typ = id.Name
			}
			for i, n := range vs.Names {
				if i >= len(vs.Values) || !keep(n.Name, typ) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					out = append(out, v)
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no constants found in %s", file)
	}
	return out
}

// commas writes n with thousands separators (1,048,576), as the doc does.
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// workedExample builds docs/protocol.md's worked example: a two-chunk
// version signed with the ed25519 key whose seed is 32 bytes of 0x01, and a
// signed desired state asking node n1 for it. ed25519 signatures are
// deterministic, so every byte is reproducible.
func workedExample(t *testing.T) map[string]string {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	pub := priv.Public().(ed25519.PublicKey)
	c1, c2 := []byte("hello "), []byte("edge\n")
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	m := models.Manifest{Protocol: 1, Model: "demo", Version: "1", Created: "2026-12-01T00:00:00Z",
		Files: []models.FileRef{{Path: "model.onnx", Role: models.RoleModel, SHA256: sum([]byte("hello edge\n")), Size: 11,
			Chunks: []models.ChunkRef{{SHA256: sum(c1), Size: 6}, {SHA256: sum(c2), Size: 5}}}}}
	sm, err := wire.SignManifest(m, priv)
	if err != nil {
		t.Fatal(err)
	}
	env, err := json.Marshal(sm)
	if err != nil {
		t.Fatal(err)
	}
	keys := models.KeySet{}
	keys.Add(pub)
	if _, _, err := wire.DecodeSignedManifest(env, keys, 0); err != nil {
		t.Fatalf("the example manifest does not decode: %v", err)
	}
	ds, err := wire.SignDesired(wire.DesiredState{Protocol: 1, Generation: 1, Target: "node/n1",
		Models: map[string]wire.ModelSpec{"demo": {Version: "1"}}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	var sd wire.SignedDesired
	if err := json.Unmarshal(ds, &sd); err != nil {
		t.Fatal(err)
	}
	tp := wire.Topics{Root: wire.DefaultRoot}
	return map[string]string{
		"public key (base64)":    base64.StdEncoding.EncodeToString(pub),
		"key id":                 wire.KeyID(pub),
		"manifest JSON (signed)": string(sm.Payload),
		"manifest topic":         tp.Manifest("demo", "1"),
		"manifest message":       string(env),
		"chunk 1 topic":          tp.Chunk(sum(c1)),
		"chunk 2 topic":          tp.Chunk(sum(c2)),
		"desired JSON (signed)":  string(sd.Payload),
		"desired message":        string(ds),
		"desired topic":          tp.NodeDesired("n1"),
		"file sha256":            sum([]byte("hello edge\n")),
	}
}

// TestProtocolDocWorkedExample: the worked example's bytes in
// docs/protocol.md are what the code produces (and decodes).
func TestProtocolDocWorkedExample(t *testing.T) {
	b, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	for what, want := range workedExample(t) {
		if !strings.Contains(string(b), want) {
			t.Errorf("docs/protocol.md's worked example lacks the %s:\n%s", what, want)
		}
	}
}
