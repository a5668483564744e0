package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/wire"
)

// TestKeysPublishShow: keys publish signs and retains a list a root key
// verifies, numbers versions from the retained one, refuses an older
// version, and --keep carries keys and revocations; keys show reads it
// back (-o json, with and without the root's signature check).
func TestKeysPublishShow(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	dir := t.TempDir()
	for _, k := range []string{"root", "a", "b"} {
		run(t, "keygen", "--out", filepath.Join(dir, k))
	}
	p := func(k string) string { return filepath.Join(dir, k) }
	b := []string{"--broker", m.URL(), "--retained-wait", "300ms"}
	if _, err := runErr(t, append(b, "keys", "show")...); err == nil || !strings.Contains(err.Error(), "no key list is retained") {
		t.Fatalf("show with no list: %v", err)
	}
	out := run(t, append(b, "keys", "publish", "--root", p("root.key"), "--key", p("a.pub"), "--expires", "24h")...)
	if !strings.Contains(out, "key list version 1") || !strings.Contains(out, "1 keys, 0 revoked") {
		t.Fatalf("first publish: %q", out)
	}
	aID, bID := keyIDOf(t, p("a.pub")), keyIDOf(t, p("b.pub"))
	run(t, append(b, "keys", "publish", "--root", p("root.key"), "--key", p("b.pub"), "--revoke", aID, "--expires", "24h")...)
	for _, c := range []struct {
		args []string
		err  string
	}{
		{[]string{"keys", "publish", "--root", p("root.key"), "--version", "2", "--key", p("b.pub")}, "retained list is version 2"},
		{[]string{"keys", "publish", "--root", p("root.key"), "--expires", "-1h"}, "--expires must be a positive duration"},
		{[]string{"keys", "publish", "--root", p("a.pub")}, "PRIVATE KEY"},
		{[]string{"keys", "publish", "--root", p("root.key"), "--revoke", "nothex"}, "16 lowercase hex"},
		{[]string{"--broker", "tcp://127.0.0.1:1", "keys", "publish", "--root", p("root.key")}, "unreachable"},
		{[]string{"keys", "show", "-o", "yaml"}, `--output "yaml"`},
	} {
		args := c.args
		if !strings.HasPrefix(args[0], "--broker") {
			args = append(append([]string(nil), b...), args...)
		}
		if _, err := runErr(t, args...); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("edgectl %s: %v, want an error containing %q", strings.Join(c.args, " "), err, c.err)
		}
	}
	run(t, append(b, "keys", "publish", "--root", p("root.key"), "--keep", "--expires", "24h")...)
	var got keyListJSON
	if err := json.Unmarshal([]byte(run(t, append(b, "keys", "show", "--root-pub", p("root.pub"), "-o", "json")...)), &got); err != nil {
		t.Fatal(err)
	}
	if got.Version != 3 || got.Expired || got.Verified == nil || !*got.Verified || len(got.Keys) != 1 || got.Keys[0] != bID ||
		len(got.Revoked) != 1 || got.Revoked[0] != aID || got.SignedBy != keyIDOf(t, p("root.pub")) {
		t.Fatalf("keys show -o json after --keep: %+v", got)
	}
	if out := run(t, append(b, "keys", "show", "--root-pub", p("a.pub"))...); !strings.Contains(out, "NOT verified") {
		t.Fatalf("show checked against another key: %q", out)
	}
}

// TestDeployExpiresAndRenew: --expires puts an expiry inside the signed
// state; --renew re-signs it as it is at the next generation with a new one;
// both refuse to run without a key.
func TestDeployExpiresAndRenew(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	key := filepath.Join(t.TempDir(), "signing")
	run(t, "keygen", "--out", key)
	b := []string{"--broker", m.URL(), "--retained-wait", "300ms"}
	for _, c := range []struct {
		args []string
		err  string
	}{
		{[]string{"deploy", "--force", "--node", "n1", "--model", "det", "--version", "1", "--expires", "1h"}, "--expires needs --key"},
		{[]string{"deploy", "--node", "n1", "--renew", "--key", key + ".key"}, "--renew needs --key and --expires"},
		{[]string{"deploy", "--node", "n1", "--renew", "--model", "det", "--key", key + ".key", "--expires", "1h"}, "no --model"},
		{[]string{"deploy", "--node", "n1", "--version", "1"}, `"model" not set`},
	} {
		if _, err := runErr(t, append(append([]string(nil), b...), c.args...)...); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("edgectl %s: %v, want an error containing %q", strings.Join(c.args, " "), err, c.err)
		}
	}
	before := time.Now()
	if out := run(t, append(b, "deploy", "--force", "--node", "n1", "--model", "det", "--version", "1", "--key", key+".key", "--expires", "1h")...); !strings.Contains(out, "expires") {
		t.Fatalf("deploy --expires: %q", out)
	}
	if out := run(t, append(b, "deploy", "--node", "n1", "--renew", "--key", key+".key", "--expires", "48h")...); !strings.Contains(out, "generation 2: renewed") {
		t.Fatalf("deploy --renew: %q", out)
	}
	keys := models.KeySet{}
	pubs, err := readPublicKeys([]string{key + ".pub"})
	if err != nil {
		t.Fatal(err)
	}
	keys.Add(pubs[0])
	tp, l, closeFn, err := connect(context.Background(), &globalFlags{broker: m.URL(), root: wire.DefaultRoot, clientID: "reader"})
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	got, err := fleet.ReadRetained(context.Background(), l, tp.NodeDesired("n1"), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := wire.DecodeDesiredMessage(got[tp.NodeDesired("n1")], "node/n1", wire.DesiredPolicy{Keys: keys, RequireSigned: true})
	if err != nil {
		t.Fatal(err)
	}
	exp, err := time.Parse(time.RFC3339, d.Expires)
	if err != nil || d.Generation != 2 || d.Models["det"].Version != "1" || exp.Before(before.Add(47*time.Hour)) {
		t.Fatalf("renewed state %+v (expires %v)", d, err)
	}
}

func keyIDOf(t *testing.T, pubFile string) string {
	t.Helper()
	pubs, err := readPublicKeys([]string{pubFile})
	if err != nil {
		t.Fatal(err)
	}
	return wire.KeyID(pubs[0])
}
