package edgenode_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// THIRD_PARTY_NOTICES is generated from the module graph of what ships:
// every module linked into cmd/edge-node, cmd/edgectl and cmd/edge-controller (go list -deps,
// tests excluded, for linux/amd64 and linux/arm64 as `make dist` builds
// them) with the licence and notice files in its module cache folder, the
// Go standard library, and ONNX Runtime (the library the archive and image
// carry). TestThirdPartyNotices fails when the file drifts;
// `make generate-notices` (this test with -update) rewrites it.
var updateNotices = flag.Bool("update", false, "rewrite THIRD_PARTY_NOTICES")

const noticesFile = "THIRD_PARTY_NOTICES"

// licenceFile matches the files of a module's root that carry its terms.
var licenceFile = regexp.MustCompile(`(?i)^(licen[cs]e|unlicen[cs]e|copying|notice|patents)([-._].*)?$`)

// linkedModule is a module whose packages a shipped binary links.
type linkedModule struct{ Path, Version, Dir string }

// linkedModules lists the modules linked into the shipped commands for each
// release platform, sorted by path.
func linkedModules(t *testing.T) []linkedModule {
	t.Helper()
	seen := map[string]linkedModule{}
	for _, arch := range []string{"amd64", "arm64"} {
		cmd := exec.Command("go", "list", "-deps", "-json=Module", "./cmd/edge-node", "./cmd/edgectl", "./cmd/edge-controller")
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=1", "GOFLAGS=-mod=readonly")
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("go list: %v\n%s", err, ee.Stderr)
			}
			t.Fatalf("go list: %v", err)
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		for dec.More() {
			var p struct {
				Module *struct {
					Path, Version, Dir string
					Main               bool
					Replace            *struct{ Path, Version, Dir string }
				}
			}
			if err := dec.Decode(&p); err != nil {
				t.Fatal(err)
			}
			m := p.Module
			if m == nil || m.Main { // the standard library, or this module
				continue
			}
			lm := linkedModule{m.Path, m.Version, m.Dir}
			if r := m.Replace; r != nil {
				lm = linkedModule{m.Path, r.Version, r.Dir}
			}
			seen[lm.Path] = lm
		}
	}
	var mods []linkedModule
	for _, m := range seen {
		mods = append(mods, m)
	}
	slices.SortFunc(mods, func(a, b linkedModule) int { return strings.Compare(a.Path, b.Path) })
	return mods
}

// licenceTexts reads the licence and notice files at the root of dir,
// sorted by name. A module without one is an error: someone must look.
func licenceTexts(dir string) ([][2]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out [][2]string
	for _, e := range entries {
		if e.Type().IsRegular() && licenceFile.MatchString(e.Name()) {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				return nil, err
			}
			out = append(out, [2]string{e.Name(), string(b)})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no LICENSE, COPYING or NOTICE file", dir)
	}
	return out, nil
}

// ortLicense is ONNX Runtime's LICENSE (github.com/microsoft/onnxruntime).
// The onnxruntime-node npm package the library comes from carries no
// licence file, only "license": "MIT" in its package.json, which
// ortPackage checks.
const ortLicense = `MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
`

// ortPackage reads name, version and licence from the package.json of the
// onnxruntime-node tarball in .cache/npm that scripts/setup.sh pins.
func ortPackage(t *testing.T) (name, version string) {
	t.Helper()
	setup, err := os.ReadFile("scripts/setup.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ORT_NPM=onnxruntime-node@(\S+)$`).FindSubmatch(setup)
	if m == nil {
		t.Fatal("scripts/setup.sh pins no ORT_NPM=onnxruntime-node@VERSION")
	}
	path := filepath.Join(".cache", "npm", "onnxruntime-node-"+string(m[1])+".tgz")
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !*updateNotices {
		t.Skipf("%s missing (make setup fetches it): ONNX Runtime's entry can't be checked, so the notices are not compared", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: package/package.json: %v", path, err)
		}
		if h.Name != "package/package.json" {
			continue
		}
		var pkg struct{ Name, Version, License string }
		if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&pkg); err != nil {
			t.Fatalf("%s: package.json: %v", path, err)
		}
		if pkg.License != "MIT" {
			t.Fatalf("%s declares licence %q: ortLicense (MIT) no longer holds", path, pkg.License)
		}
		return pkg.Name, pkg.Version
	}
}

// generateNotices writes THIRD_PARTY_NOTICES.
func generateNotices(t *testing.T) []byte {
	t.Helper()
	ortName, ortVersion := ortPackage(t)
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	goLicence, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "LICENSE"))
	if err != nil {
		t.Fatal(err)
	}

	type entry struct {
		title string
		files [][2]string
	}
	entries := []entry{
		{fmt.Sprintf("ONNX Runtime %s (lib/libonnxruntime.so.1, from the npm package %s)", ortVersion, ortName), [][2]string{{"LICENSE", ortLicense}}},
		{"The Go standard library and runtime (linked into every binary)", [][2]string{{"LICENSE", string(goLicence)}}},
	}
	for _, m := range linkedModules(t) {
		files, err := licenceTexts(m.Dir)
		if err != nil {
			t.Fatalf("%s %s: %v", m.Path, m.Version, err)
		}
		entries = append(entries, entry{m.Path + " " + m.Version, files})
	}

	var b bytes.Buffer
	b.WriteString(`Third-party software in edge-node's binaries, release archives and image

edge-node itself is under the Apache License 2.0 (LICENSE). The binaries link
the Go modules below and load ONNX Runtime at run time. This file is generated
from the module graph of cmd/edge-node, cmd/edgectl and cmd/edge-controller (make generate-notices);
a test fails when it drifts. Each entry gives the licence and notice files of
that component as its authors ship them.

Contents:
`)
	for _, e := range entries {
		fmt.Fprintf(&b, "  %s\n", e.title)
	}
	rule := strings.Repeat("=", 78)
	for _, e := range entries {
		fmt.Fprintf(&b, "\n%s\n%s\n%s\n", rule, e.title, rule)
		for _, f := range e.files {
			text := strings.TrimRight(strings.ReplaceAll(f[1], "\r\n", "\n"), " \n\t")
			fmt.Fprintf(&b, "\n--- %s\n\n%s\n", f[0], text)
		}
	}
	return b.Bytes()
}

func TestThirdPartyNotices(t *testing.T) {
	got := generateNotices(t)
	if *updateNotices {
		if err := os.WriteFile(noticesFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(noticesFile)
	if err != nil {
		t.Fatalf("%v (make generate-notices writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is out of date with the module graph: run make generate-notices", noticesFile)
	}
}
