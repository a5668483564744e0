// Package logtest checks the JSON log lines zerolog writes, for tests: one
// copy of the rule that a line names each key once (a JSON decoder keeps
// the last of a duplicate, so a repeated key silently loses a value in any
// log pipeline). Imported by tests only (scripts/deadcode.sh HELPERS).
package logtest

import (
	"encoding/json"
	"fmt"
	"strings"
)

// RepeatedKey returns the first top-level key that line, one JSON object,
// names twice, or "" when every key is named once. It fails when line is
// not a JSON object.
func RepeatedKey(line string) (string, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", fmt.Errorf("not a JSON object: %.200q", line)
	}
	seen := map[string]bool{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return "", fmt.Errorf("%.200q: %w", line, err)
		}
		key := k.(string)
		if seen[key] {
			return key, nil
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", fmt.Errorf("%.200q: %w", line, err)
		}
	}
	return "", nil
}
