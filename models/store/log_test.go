package store_test

import (
	"testing"

	"github.com/rs/zerolog"
)

// testLogger logs through t.Log at Warn and above.
func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewConsoleWriter(zerolog.ConsoleTestWriter(t))).Level(zerolog.WarnLevel)
}
