package testwait

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeT records a Fatalf instead of stopping the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = format
	panic(f)
}

func TestForReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	For(t, "the third call", func() bool { return n.Add(1) == 3 }, time.Minute)
	if n.Load() != 3 {
		t.Fatalf("cond called %d times", n.Load())
	}
}

func TestForFailsAtTheDeadline(t *testing.T) {
	ft := &fakeT{TB: t}
	start := time.Now()
	func() {
		defer func() {
			if r := recover(); r != ft {
				panic(r)
			}
		}()
		For(ft, "never", func() bool { return false }, 50*time.Millisecond)
	}()
	if !strings.Contains(ft.failed, "timed out") {
		t.Fatalf("For did not fail: %q", ft.failed)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("failed before the deadline")
	}
}
