package models

import (
	"fmt"
	"path"
	"regexp"
	"strings"
)

// Name patterns. Model names, versions and file path components become
// directory and file names on disk, so they are restricted to characters
// that are safe everywhere:
//
//   - model name: ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$ (1–128 characters, no
//     leading '.', '_' or '-')
//   - version:    ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ (1–64 characters;
//     Triton's integer versions "1", "2" match, so do "2024-06-01" and
//     "v1.2.0")
//   - file path:  '/'-separated components, each matching the version
//     pattern; at most 8 components, no "." or "..", no absolute path
//   - digest:     64 lowercase hex characters (a sha256)
var (
	modelNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	versionPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	digestPattern    = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidModelName returns nil if name is a legal model name.
func ValidModelName(name string) error {
	if !modelNamePattern.MatchString(name) {
		return fmt.Errorf("model name %q: want %s: %w", name, modelNamePattern, ErrInvalidArgument)
	}
	return nil
}

// ValidVersion returns nil if v is a legal version string.
func ValidVersion(v string) error {
	if !versionPattern.MatchString(v) {
		return fmt.Errorf("version %q: want %s: %w", v, versionPattern, ErrInvalidArgument)
	}
	return nil
}

// ValidDigest returns nil if d is 64 lowercase hex characters.
func ValidDigest(d string) error {
	if !digestPattern.MatchString(d) {
		return fmt.Errorf("sha256 %q: want 64 lowercase hex characters: %w", d, ErrInvalidArgument)
	}
	return nil
}

// ValidFilePath returns nil if p is a safe relative path for a file inside a
// version folder.
func ValidFilePath(p string) error {
	if p == "" || path.Clean(p) != p || strings.HasPrefix(p, "/") {
		return fmt.Errorf("file path %q: not a clean relative path: %w", p, ErrInvalidArgument)
	}
	parts := strings.Split(p, "/")
	if len(parts) > 8 {
		return fmt.Errorf("file path %q: more than 8 components: %w", p, ErrInvalidArgument)
	}
	for _, c := range parts {
		if !versionPattern.MatchString(c) {
			return fmt.Errorf("file path %q: component %q: want %s: %w", p, c, versionPattern, ErrInvalidArgument)
		}
	}
	return nil
}

// CompareVersions orders version strings: two all-digit versions compare
// numerically ("9" < "10"), anything else compares as strings, and an
// all-digit version sorts before a non-numeric one.
func CompareVersions(a, b string) int {
	na, nb := allDigits(a), allDigits(b)
	switch {
	case na && nb:
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			return cmpInt(len(a), len(b))
		}
		return strings.Compare(a, b)
	case na:
		return -1
	case nb:
		return 1
	}
	return strings.Compare(a, b)
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
