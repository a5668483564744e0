// Package repository reads a Triton-style model repository folder, which
// the node imports into its store at boot:
//
//	<dir>/<name>/config.yaml          optional per-model config (format: the node's)
//	<dir>/<name>/<version>/model.onnx the graph
//	<dir>/<name>/<version>/<file>     ONNX external-data files beside it
//
// A model whose config.yaml says it has no graph of its own (Scan's
// graphless hook: an ensemble, whose config names the models it chains)
// has version folders without model.onnx that hold its other files, such
// as a character dictionary.
// Names and versions must match the patterns in models (ValidModelName,
// ValidVersion): a version folder is 1–64 characters of [A-Za-z0-9_.-]
// starting with a letter or digit ("1", "2", "2024-06-01", "v1.2.0").
// Anything that does not fit — a bad name, a version folder without
// model.onnx, a nested folder, an unreadable config.yaml or one the caller's
// validator rejects — is
// reported as a Problem and skipped; the rest of the repository is still
// returned. Hidden entries (starting with '.') are ignored silently.
package repository

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/edgeai/edge-node/models"
)

// Entry is one model version found in the repository.
type Entry struct {
	Name, Version string
	// Dir is the version folder.
	Dir string
	// ModelFile is Dir/model.onnx; empty for a version of a graphless
	// model (an ensemble's version folder holds only its other files, such
	// as a dictionary).
	ModelFile string
	// ExtraFiles are the other regular files in Dir (external data),
	// sorted.
	ExtraFiles []string
	// Config is the model's config.yaml bytes (nil if absent).
	Config []byte
}

// MaxConfigBytes bounds a config.yaml.
const MaxConfigBytes = models.MaxConfigBytes

// Problem is a part of the repository that was skipped, and why.
type Problem struct {
	Path string
	Err  error
}

func (p Problem) String() string { return p.Path + ": " + p.Err.Error() }

// Result is what Scan found.
type Result struct {
	Entries  []Entry
	Problems []Problem
}

// Scan reads the repository at dir. Only an unreadable dir itself is an
// error; everything below it that is wrong becomes a Problem. validate, if
// not nil, checks each config.yaml; the config format belongs to the node
// (its execution providers and session options), not to the store.
// graphless, if not nil, says whether a config.yaml describes a model with
// no graph of its own (an ensemble), whose version folders need no
// model.onnx.
func Scan(dir string, validate func([]byte) error, graphless func([]byte) bool) (Result, error) {
	var res Result
	ents, err := os.ReadDir(dir)
	if err != nil {
		return res, fmt.Errorf("model repository %s: %w", dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(dir, name)
		if strings.HasPrefix(name, ".") {
			continue
		}
		if !isDir(p) {
			res.problem(p, errors.New("not a model folder"))
			continue
		}
		if err := models.ValidModelName(name); err != nil {
			res.problem(p, err)
			continue
		}
		res.scanModel(name, p, validate, graphless)
	}
	sort.Slice(res.Entries, func(i, j int) bool {
		a, b := res.Entries[i], res.Entries[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return models.CompareVersions(a.Version, b.Version) < 0
	})
	return res, nil
}

func (r *Result) problem(path string, err error) { r.Problems = append(r.Problems, Problem{path, err}) }

func (r *Result) scanModel(name, dir string, validate func([]byte) error, graphless func([]byte) bool) {
	var cfgBytes []byte
	cfgPath := filepath.Join(dir, "config.yaml")
	if b, err := os.ReadFile(cfgPath); err == nil {
		switch {
		case len(b) > MaxConfigBytes:
			err = fmt.Errorf("%d bytes (max %d): %w", len(b), MaxConfigBytes, models.ErrInvalidArgument)
		case validate != nil:
			err = validate(b)
		}
		if err != nil {
			r.problem(cfgPath, err)
			return
		}
		cfgBytes = b
	} else if !errors.Is(err, fs.ErrNotExist) {
		r.problem(cfgPath, err)
		return
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		r.problem(dir, err)
		return
	}
	for _, e := range ents {
		v := e.Name()
		p := filepath.Join(dir, v)
		if strings.HasPrefix(v, ".") || v == "config.yaml" {
			continue
		}
		if !isDir(p) {
			r.problem(p, errors.New("ignored: not a version folder"))
			continue
		}
		if err := models.ValidVersion(v); err != nil {
			r.problem(p, err)
			continue
		}
		entry, err := scanVersion(name, v, p, cfgBytes != nil && graphless != nil && graphless(cfgBytes))
		if err != nil {
			r.problem(p, err)
			continue
		}
		entry.Config = cfgBytes
		r.Entries = append(r.Entries, entry)
	}
}

// scanVersion reads one version folder. It needs a model.onnx, unless the
// model's config says it has no graph of its own (graphless: an ensemble,
// whose folder holds its other files).
func scanVersion(name, version, dir string, graphless bool) (Entry, error) {
	e := Entry{Name: name, Version: version, Dir: dir, ModelFile: filepath.Join(dir, "model.onnx")}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return e, err
	}
	found := false
	for _, de := range ents {
		n := de.Name()
		p := filepath.Join(dir, n)
		if strings.HasPrefix(n, ".") {
			continue
		}
		fi, err := os.Stat(p) // follows symlinks: a linked model file is fine
		if err != nil {
			return e, err
		}
		if !fi.Mode().IsRegular() {
			return e, fmt.Errorf("%s: not a regular file (nested folders are not supported): %w", n, models.ErrInvalidArgument)
		}
		if err := models.ValidFilePath(n); err != nil {
			return e, err
		}
		if n == "model.onnx" {
			found = true
			continue
		}
		e.ExtraFiles = append(e.ExtraFiles, p)
	}
	switch {
	case !found && !graphless:
		return e, fmt.Errorf("no model.onnx: %w", models.ErrNotFound)
	case !found:
		e.ModelFile = ""
	}
	sort.Strings(e.ExtraFiles)
	return e, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
