// Package testwait is the one polling wait of the module's tests: For
// checks a condition until it holds or a deadline passes. Import it from
// _test.go files only (scripts/deadcode.sh checks that no production
// package does).
package testwait

import (
	"testing"
	"time"
)

// For calls cond until it returns true, and fails the test (t.Fatalf,
// naming what) when timeout passes first. The deadline only stops a test
// that would otherwise hang until the binary's -timeout; choose it generous
// (the machines that run the tests are shared), and assert timing, if at
// all, separately. cond runs on the caller's goroutine, first at once, then
// at intervals growing from 100 µs to 20 ms, so a condition that soon holds
// is seen soon and a long wait does not spin. Call For from the test's
// goroutine (t.Fatalf must be).
func For(t testing.TB, what string, cond func() bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := 100 * time.Microsecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}
