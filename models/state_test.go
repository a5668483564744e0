package models

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckTransition(t *testing.T) {
	legal := []struct{ from, to State }{
		{Announced, Downloading}, {Announced, Verifying}, {Downloading, Verifying}, {Verifying, Ready},
		{Ready, Loading}, {Loading, Warming}, {Warming, Canary}, {Warming, Shadow}, {Warming, Active},
		{Canary, Active}, {Canary, Retired}, {Shadow, Canary}, {Shadow, Active}, {Shadow, Retired},
		{Active, Retired}, {Retired, Loading}, {Retired, Active}, {Failed, Downloading}, {Failed, Verifying},
	}
	for _, tc := range legal {
		if err := CheckTransition(tc.from, tc.to, ""); err != nil {
			t.Errorf("%s → %s: %v, want legal", tc.from, tc.to, err)
		}
	}
	illegal := []struct{ from, to State }{
		{Announced, Ready}, {Announced, Active}, {Downloading, Ready}, {Verifying, Active},
		{Ready, Active}, {Ready, Warming}, {Loading, Active}, {Active, Canary}, {Active, Ready},
		{Retired, Ready}, {Failed, Active}, {Failed, Ready}, {Active, Active}, {Ready, Ready}, {Canary, Shadow},
	}
	for _, tc := range illegal {
		err := CheckTransition(tc.from, tc.to, "")
		var te *TransitionError
		if !errors.Is(err, ErrInvalidTransition) || !errors.As(err, &te) {
			t.Errorf("%s → %s: %v, want ErrInvalidTransition", tc.from, tc.to, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, string(tc.from)) || !strings.Contains(msg, string(tc.to)) {
			t.Errorf("error %q does not name both states", msg)
		}
	}
	// Every non-Failed state can fail, with a reason; exhaustively, the table
	// above plus these cover every pair.
	for _, from := range States {
		for _, r := range Reasons {
			err := CheckTransition(from, Failed, r)
			if (from == Failed) != (err != nil) {
				t.Errorf("%s → Failed(%s): %v", from, r, err)
			}
		}
		if err := CheckTransition(from, Failed, ""); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s → Failed without reason: %v, want ErrInvalidArgument", from, err)
		}
	}
	if err := CheckTransition(Ready, Loading, ReasonLoadError); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("reason on a non-failure: %v", err)
	}
	if err := CheckTransition("Bogus", Ready, ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unknown state: %v", err)
	}
	// The exhaustive pair count: legal moves are exactly the table.
	n := 0
	for _, from := range States {
		for _, to := range States {
			if to != Failed && CheckTransition(from, to, "") == nil {
				n++
			}
		}
	}
	if n != len(legal) {
		t.Errorf("%d legal non-failure moves, the test lists %d", n, len(legal))
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{{"1", "2", -1}, {"9", "10", -1}, {"10", "10", 0}, {"010", "10", 0}, {"2", "v1", -1}, {"v2", "v10", 1}, {"b", "a", 1}} {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestNames(t *testing.T) {
	good := []string{"1", "v1.2.0", "2024-06-01", "a_b"}
	bad := []string{"", ".", "..", ".hidden", "-x", "a/b", "a b", strings.Repeat("x", 65), "é"}
	for _, v := range good {
		if err := ValidVersion(v); err != nil {
			t.Errorf("ValidVersion(%q) = %v", v, err)
		}
	}
	for _, v := range bad {
		if err := ValidVersion(v); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ValidVersion(%q) = %v, want ErrInvalidArgument", v, err)
		}
	}
	for _, p := range []string{"/etc/passwd", "../x", "a/../../x", "a//b", "a/", "./a", ""} {
		if err := ValidFilePath(p); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ValidFilePath(%q) = %v, want ErrInvalidArgument", p, err)
		}
	}
	if err := ValidFilePath("data/weights.bin"); err != nil {
		t.Error(err)
	}
}
