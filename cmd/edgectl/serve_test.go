package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/sync/fleetsim"
	"github.com/edgeai/edge-node/sync/rollout"
	"github.com/edgeai/edge-node/sync/wire"
)

func TestServeToken(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name, file, env, want, err string
	}{
		{"neither: read-only", "", "", "", ""},
		{"env", "", " from-env\n", "from-env", ""},
		{"file beats env", file("ok", "s3cret\n"), "from-env", "s3cret", ""},
		{"file missing", filepath.Join(dir, "none"), "", "", "--token-file"},
		{"file empty", file("empty", " \n"), "", "", "want one line"},
		{"file two lines", file("two", "a\nb\n"), "", "", "want one line"},
		{"file too long", file("long", strings.Repeat("x", 4097)), "", "", "want one line"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("EDGECTL_SERVE_TOKEN", c.env)
			got, err := serveToken(c.file)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("token %q, err %v; want an error saying %q", got, err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("token %q, err %v; want %q", got, err, c.want)
			}
		})
	}
}

// TestServeCarriesCommands: a command given on the page for a rollout no
// controller drives is carried out by serve's carrier, as `edgectl
// rollout CMD` would: abort holds it, rollback then rolls it back.
func TestServeCarriesCommands(t *testing.T) {
	m, _ := startCams(t, 4, fleetsim.Profile{Download: 50 * time.Millisecond, Gate: 50 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	state := filepath.Join(t.TempDir(), "r.db")
	run(t, "--broker", m.URL(), "--retained-wait", "300ms", "rollout", "--state", state,
		"start", "--id", "r1", "--model", "det", "--version", "2", "--target", "cams", "--detach", "--force")
	g := &globalFlags{broker: m.URL(), root: wire.DefaultRoot, quiet: 300 * time.Millisecond, connectTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	k := newCarrier(ctx, g, state, &wg, zerolog.Nop())
	st := rollout.NewStore(state)
	for _, c := range []struct {
		cmd  string
		want rollout.Phase
	}{{rollout.CmdAbort, rollout.PhaseHeld}, {rollout.CmdRollback, rollout.PhaseRolledBack}} {
		if _, err := st.Command("r1", c.cmd); err != nil {
			t.Fatal(err)
		}
		k.carry("r1", c.cmd)
		k.carry("r1", c.cmd) // a second click while it runs starts nothing more
		wg.Wait()
		r, err := st.Get("r1")
		if err != nil || r.Phase != c.want || r.Command != "" {
			t.Fatalf("after %s: %v, phase %s, command %q; want %s", c.cmd, err, r.Phase, r.Command, c.want)
		}
	}
	if _, held, err := st.LeaseOf("r1"); err != nil || held {
		t.Fatalf("lease after the carrier: held %v, %v", held, err)
	}
}
