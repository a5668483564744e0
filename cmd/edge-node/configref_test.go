package main

import (
	"bytes"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/edgeai/edge-node/node"
)

// The configuration reference (docs/config.md) and the full commented
// example (deploy/config.example.yaml) are generated from node.Config: its
// yaml tags, node.DefaultConfig(), the doc comments in the source, and the
// flags bindConfigFlags binds to each field. The test fails when either
// file drifts; `make generate-docs` (this test with -update) rewrites them.

var update = flag.Bool("update", false, "rewrite docs/config.md and deploy/config.example.yaml")

const modulePath = "github.com/edgeai/edge-node"

// configKey is one leaf of the configuration.
type configKey struct {
	key, typ, def, flag, env, doc string
	depth                         int    // nesting level, for the example
	section                       string // set on a struct's own line instead of a leaf
}

// fieldDocs holds the doc comments of struct fields by "pkgpath.Type.Field".
// A field without a comment takes the previous field's (the source groups
// related fields under one comment).
type fieldDocs map[string]string

func (d fieldDocs) load(t *testing.T, pkgPath string) {
	t.Helper()
	if !strings.HasPrefix(pkgPath, modulePath) {
		t.Fatalf("config type from outside the module: %s", pkgPath)
	}
	dir := filepath.Join("..", "..", strings.TrimPrefix(pkgPath, modulePath))
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			prev := ""
			for _, fl := range st.Fields.List {
				doc := prev
				if fl.Doc != nil {
					doc = strings.Join(strings.Fields(fl.Doc.Text()), " ")
				}
				prev = doc
				for _, name := range fl.Names {
					d[pkgPath+"."+ts.Name.Name+"."+name.Name] = doc
				}
				if len(fl.Names) == 0 { // embedded
					d[pkgPath+"."+ts.Name.Name+"."+fmt.Sprint(fl.Type)] = doc
				}
			}
			return false
		})
	}
}

// configKeys walks node.DefaultConfig() and returns every key in order.
func configKeys(t *testing.T) []configKey {
	t.Helper()
	cfg := node.DefaultConfig()
	fs := pflag.NewFlagSet("ref", pflag.ContinueOnError)
	bindConfigFlags(fs, &cfg)
	flagsByAddr := map[uintptr]string{}
	fs.VisitAll(func(f *pflag.Flag) {
		if v := reflect.ValueOf(f.Value); v.Kind() == reflect.Pointer {
			flagsByAddr[v.Pointer()] = f.Name
		}
	})
	docs := fieldDocs{}
	loaded := map[string]bool{}
	var out []configKey
	var walk func(v reflect.Value, prefix string, depth int)
	walk = func(v reflect.Value, prefix string, depth int) {
		typ := v.Type()
		if !loaded[typ.PkgPath()] {
			docs.load(t, typ.PkgPath())
			loaded[typ.PkgPath()] = true
		}
		for i := range typ.NumField() {
			sf := typ.Field(i)
			tag := sf.Tag.Get("yaml")
			if tag == "-" || !sf.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			fv := v.Field(i)
			doc := docs[typ.PkgPath()+"."+typ.Name()+"."+sf.Name]
			if opts == "inline" {
				walk(fv, prefix, depth)
				continue
			}
			if name == "" {
				t.Fatalf("%s.%s has no yaml name", typ.Name(), sf.Name)
			}
			if doc == "" {
				t.Errorf("config key %s%s (%s.%s) has no doc comment", prefix, name, typ.Name(), sf.Name)
			}
			if sf.Type.Kind() == reflect.Struct && sf.Type != reflect.TypeFor[time.Duration]() {
				out = append(out, configKey{key: prefix + name, section: name, doc: doc, depth: depth})
				walk(fv, prefix+name+".", depth+1)
				continue
			}
			k := configKey{key: prefix + name, typ: typeName(sf.Type), def: yamlValue(fv), doc: doc, depth: depth}
			if fl, ok := flagsByAddr[fv.Addr().Pointer()]; ok {
				k.flag = "--" + fl
				k.env = envPrefix + strings.ToUpper(strings.ReplaceAll(fl, "-", "_"))
			}
			out = append(out, k)
		}
	}
	walk(reflect.ValueOf(&cfg).Elem(), "", 0)
	// The variables resolveConfig reads beside the flags.
	for i := range out {
		switch out[i].key {
		case "ort_library":
			out[i].env += " (or ONNXRUNTIME_LIB)"
		case "cloud.password":
			out[i].env = envPrefix + "BROKER_PASSWORD"
		case "kubeedge.eventbus.password":
			out[i].env = envPrefix + "KUBEEDGE_EVENTBUS_PASSWORD"
		case "tracing.headers":
			out[i].env = envPrefix + "TRACING_HEADERS"
		}
	}
	return out
}

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "duration"
	case t.Kind() == reflect.Slice:
		return "list of " + typeName(t.Elem())
	case t.Kind() == reflect.Map:
		return "map of " + typeName(t.Key()) + " to " + typeName(t.Elem())
	}
	return t.Kind().String()
}

// yamlValue is v as the example file writes it.
func yamlValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case time.Duration:
		return x.String()
	case string:
		return fmt.Sprintf("%q", x)
	}
	switch v.Kind() {
	case reflect.Slice:
		if v.Len() == 0 {
			return "[]"
		}
		var parts []string
		for i := range v.Len() {
			parts = append(parts, yamlValue(v.Index(i)))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case reflect.Map:
		if v.Len() == 0 {
			return "{}"
		}
		var parts []string
		for _, k := range v.MapKeys() {
			parts = append(parts, yamlValue(k)+": "+yamlValue(v.MapIndex(k)))
		}
		sort.Strings(parts)
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v.Interface())
}

func configReference(keys []configKey) []byte {
	var b bytes.Buffer
	b.WriteString(`# Configuration reference

<!-- Generated from node.Config by cmd/edge-node/configref_test.go: run ` + "`make generate-docs`" + `; do not edit. -->

Every key of the YAML config file (` + "`edge-node --config FILE`" + `), its type, its default, the flag and
` + "`EDGE_NODE_*`" + ` environment variable that override it (flags win over the environment, the environment over
the file), and what it does. Unknown keys are an error. Durations are Go durations (` + "`15s`, `2m`" + `).
The config is checked once, after file, environment and flags are merged, so a file may leave a value to
the environment; an error names the key and where it was set (the file, the variable or the flag).
A full commented example is deploy/config.example.yaml (` + "`config.example.yaml`" + ` in the release archive).

| key | type | default | flag / environment | description |
|---|---|---|---|---|
`)
	for _, k := range keys {
		if k.section != "" {
			continue
		}
		over := ""
		if k.flag != "" {
			over = "`" + k.flag + "`<br>"
		}
		if k.env != "" {
			over += "`" + k.env + "`"
		}
		doc := strings.ReplaceAll(k.doc, "|", `\|`)
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s | %s |\n", k.key, k.typ, k.def, over, doc)
	}
	return b.Bytes()
}

func configExample(keys []configKey) []byte {
	var b bytes.Buffer
	b.WriteString(`# edge-node configuration: /etc/edge-node/config.yaml (mode 0640).
# Generated from node.Config by cmd/edge-node/configref_test.go (make generate-docs); the reference with
# flags and environment variables is docs/config.md. Every key is listed with its default, commented out:
# uncomment what this device changes. Flags and EDGE_NODE_* environment override the file.
# The systemd unit sets ONNXRUNTIME_LIB (the ONNX Runtime library's path); see docs/operations.md.
`)
	for _, k := range keys {
		ind := strings.Repeat("  ", k.depth)
		b.WriteString("\n")
		for _, line := range wrap(k.doc, 100-len(ind)) {
			fmt.Fprintf(&b, "%s# %s\n", ind, line)
		}
		if k.section != "" {
			fmt.Fprintf(&b, "%s# %s:\n", ind, k.section)
			continue
		}
		name := k.key[strings.LastIndexByte(k.key, '.')+1:]
		fmt.Fprintf(&b, "%s# %s: %s\n", ind, name, k.def)
	}
	return b.Bytes()
}

func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

// TestConfigReference: docs/config.md and deploy/config.example.yaml are what
// the config structs say, every key has a doc comment, and the example is a
// config file edge-node accepts.
func TestConfigReference(t *testing.T) {
	keys := configKeys(t)
	for _, f := range []struct {
		path string
		want []byte
	}{
		{"../../docs/config.md", configReference(keys)},
		{"../../deploy/config.example.yaml", configExample(keys)},
	} {
		if *update {
			if err := os.WriteFile(f.path, f.want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(f.path)
		if err != nil || !bytes.Equal(got, f.want) {
			t.Errorf("%s is out of date with node.Config (%v): run `make generate-docs`", f.path, err)
		}
	}
	if _, err := node.LoadConfigFile("../../deploy/config.example.yaml", node.DefaultConfig()); err != nil {
		t.Errorf("the example config does not load: %v", err)
	}
}
