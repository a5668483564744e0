package wire_test

import (
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
		wire.Presence{}, wire.Event{},
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
