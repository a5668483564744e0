package logtest

import "testing"

func TestRepeatedKey(t *testing.T) {
	for _, tc := range []struct {
		line, want string
		bad        bool
	}{
		{line: `{"level":"info","message":"x"}`},
		{line: `{"a":{"a":1,"a":2},"b":1}`}, // nested objects are their own
		{line: `{"level":"info","dur":"1s","level":"warn"}`, want: "level"},
		{line: `{"a":1,"b":[1,2],"a":3}`, want: "a"},
		{line: `[1,2]`, bad: true},
		{line: `not json`, bad: true},
		{line: `{"a":`, bad: true},
		{line: ``, bad: true},
	} {
		got, err := RepeatedKey(tc.line)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("RepeatedKey(%q) = %q, %v; want %q, error %v", tc.line, got, err, tc.want, tc.bad)
		}
	}
}
