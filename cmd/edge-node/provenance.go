package main

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/edgeai/edge-node/node"
)

// configSources records where the config's values came from, so that a
// validation error, which names a config key, can also name what the
// operator wrote: the config file, an EDGE_NODE_* variable or a flag.
// Validation runs once, on the merged config (a file may leave a value to
// the environment), so without this an error could not say which layer to
// fix.
type configSources struct {
	cfg  *node.Config
	file string            // path of the config file; "" for none
	set  map[string]string // config key → environment variable or flag that set it last
}

func newConfigSources(cfg *node.Config, file string) *configSources {
	return &configSources{cfg: cfg, file: file, set: map[string]string{}}
}

// record notes that source (an environment variable or "--flag") set the
// config field(s) the flag fl is bound to.
func (s *configSources) record(fl *pflag.Flag, source string) {
	var ptrs []uintptr
	switch v := reflect.ValueOf(fl.Value); v.Kind() {
	case reflect.Pointer:
		ptrs = append(ptrs, v.Pointer())
	case reflect.Array: // bothStrings: one flag, two fields
		for i := range v.Len() {
			ptrs = append(ptrs, v.Index(i).Pointer())
		}
	}
	for _, l := range configLeaves(s.cfg) {
		for _, p := range ptrs {
			if l.v.Addr().Pointer() == p {
				s.set[l.key] = source
			}
		}
	}
}

// explain adds to a validation error where the keys it names were set. The
// node's validation errors start with the dotted key they concern
// ("log.level ...", "kubeedge.dmi: ..."); the sources of that key and of
// every key under it are named: the variable or flag that set it, or the
// config file for a value that differs from the default and was set by
// neither.
func (s *configSources) explain(err error) error {
	msg := err.Error()
	lead := msg
	if i := strings.IndexAny(msg, " :"); i >= 0 {
		lead = msg[:i]
	}
	def := node.DefaultConfig()
	defaults := map[string]reflect.Value{}
	for _, l := range configLeaves(&def) {
		defaults[l.key] = l.v
	}
	var from []string
	for _, l := range configLeaves(s.cfg) {
		if l.key != lead && !strings.HasPrefix(l.key, lead+".") {
			continue
		}
		switch src, ok := s.set[l.key]; {
		case ok:
			from = append(from, l.key+" from "+src)
		case s.file != "" && !reflect.DeepEqual(l.v.Interface(), defaults[l.key].Interface()):
			from = append(from, l.key+" from "+s.file)
		}
	}
	if len(from) == 0 {
		return err
	}
	sort.Strings(from)
	return fmt.Errorf("%w (%s)", err, strings.Join(from, "; "))
}

// configLeaf is one settable config value and its dotted YAML key.
type configLeaf struct {
	key string
	v   reflect.Value // addressable
}

// configLeaves lists every leaf of cfg by its YAML key (sections are walked,
// inline structs flattened; durations, lists and maps are leaves).
func configLeaves(cfg *node.Config) []configLeaf {
	var out []configLeaf
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		typ := v.Type()
		for i := range typ.NumField() {
			sf := typ.Field(i)
			tag := sf.Tag.Get("yaml")
			if tag == "-" || !sf.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			fv := v.Field(i)
			switch {
			case opts == "inline":
				walk(fv, prefix)
			case sf.Type.Kind() == reflect.Struct && sf.Type != reflect.TypeFor[time.Duration]():
				walk(fv, prefix+name+".")
			default:
				out = append(out, configLeaf{key: prefix + name, v: fv})
			}
		}
	}
	walk(reflect.ValueOf(cfg).Elem(), "")
	return out
}
