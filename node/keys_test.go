package node

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/wire"
)

// TestCloudKeyListRotatesAndRevokes drives the signed key list against a
// real node on mosquitto: a key the node does not have is brought by a list
// signed by its root key (and the desired state it had refused for that key
// is taken without being published again); a list signed by any other key
// is refused; a newer list revokes the configured key; a replayed older list
// is stale; after a restart with the retained list cleared the node still
// holds the revocation (its store); a signed state past its expiry is
// refused.
func TestCloudKeyListRotatesAndRevokes(t *testing.T) {
	e, cfg, root, rotated := keyListEnv(t)
	rn := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()

	rejected := func(kind, reason string) float64 {
		return metricValue(t, rn.url, `edge_link_rejected_total{kind="`+kind+`",reason="`+reason+`"}`)
	}

	// Rotation: version 2 and its desired state are signed by a key the node
	// is not configured with.
	e.publish(rotated, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"), nil)
	e.deploySigned(rotated, "ppocr_cls", "2", fleet.DeployOptions{})
	waitFor(t, "the state signed by the new key refused before a list names it", func() bool { return rejected("desired", "unknown_key") >= 1 })
	publishKeyList(t, ctx, e, rotated, 9, []ed25519.PrivateKey{rotated})
	waitFor(t, "a list not signed by a root key refused", func() bool { return rejected("keys", "unknown_key") >= 1 })
	if a := activeVersion(t, rn.url, "ppocr_cls"); a != "1" {
		t.Fatalf("active %q after a forged key list", a)
	}
	list1 := publishKeyList(t, ctx, e, root, 1, []ed25519.PrivateKey{rotated})
	waitFor(t, "version 2 active once the root-signed list brings its key", func() bool { return activeVersion(t, rn.url, "ppocr_cls") == "2" })
	if v := metricValue(t, rn.url, "edge_key_list_version"); v != 1 {
		t.Fatalf("edge_key_list_version %v, want 1", v)
	}

	// Revocation of the configured key, which the node still trusts today.
	configured := wire.KeyID(e.key.Public().(ed25519.PublicKey))
	publishKeyList(t, ctx, e, root, 2, []ed25519.PrivateKey{rotated}, configured)
	waitFor(t, "key list 2 in force", func() bool { return metricValue(t, rn.url, "edge_key_list_version") == 2 })
	e.deploySigned(e.key, "ppocr_cls", "1", fleet.DeployOptions{ReplaceInvalid: true})
	waitFor(t, "the state signed by the revoked key refused", func() bool { return rejected("desired", "revoked_key") >= 1 })

	// A replay of list 1 (which trusted nothing it revokes now) is stale.
	if err := e.link.Publish(ctx, cloudTopics.Keys(), false, list1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replayed list 1 stale", func() bool { return rejected("keys", "stale_generation") >= 1 })

	// Restart with no list retained on the broker: the node's store holds
	// list 2, revocation included.
	if err := e.link.Publish(ctx, cloudTopics.Keys(), true, nil); err != nil {
		t.Fatal(err)
	}
	rn.stop(t)
	rn = startNode(t, cfg)
	if v := metricValue(t, rn.url, "edge_key_list_version"); v != 2 {
		t.Fatalf("edge_key_list_version %v after a restart, want 2 (from the store)", v)
	}
	d := e.deploySigned(e.key, "ppocr_cls", "1", fleet.DeployOptions{ReplaceInvalid: true})
	waitFor(t, "the revoked key still refused after the restart", func() bool { return rejected("desired", "revoked_key") >= 1 })

	// Expiry: a state signed by a trusted key, past its expires.
	stale := wire.DesiredState{Protocol: wire.Protocol, Generation: d.Generation + 1, Target: "node/n1",
		Expires: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), Models: map[string]wire.ModelSpec{"ppocr_cls": {Version: "2"}}}
	b, err := wire.SignDesired(stale, rotated)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.link.Publish(ctx, cloudTopics.NodeDesired("n1"), true, b); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the expired signed state refused", func() bool { return rejected("desired", "expired") >= 1 })
	// A renewal (next generation, new expiry) by the trusted key is taken.
	r := e.deploySigned(rotated, "", "", fleet.DeployOptions{ReplaceInvalid: true, Expires: time.Hour})
	waitFor(t, "the renewed state accepted", func() bool {
		st, ok := e.status()
		return ok && st.Desired.Node == r.Generation
	})
	if a := activeVersion(t, rn.url, "ppocr_cls"); a != "2" {
		t.Fatalf("active %q, want 2: no refused state may change what runs", a)
	}
	exp, err := time.Parse(time.RFC3339, r.Expires)
	if err != nil {
		t.Fatal(err)
	}
	if v := metricValue(t, rn.url, `edge_desired_expires_timestamp_seconds{source="node"}`); v != float64(exp.Unix()) {
		t.Fatalf("edge_desired_expires_timestamp_seconds %v, want %d (the renewed state's expires)", v, exp.Unix())
	}
}

// TestManifestTakenWhenKeyListBringsItsKey: a manifest signed by a key the
// node does not trust yet fails (SignatureInvalid) under a desired state
// signed by a trusted key; once a root-signed key list names the manifest's
// key, the node takes the version without a new desired state (the fleet's
// decision stands; only the trust it needed arrived late).
func TestManifestTakenWhenKeyListBringsItsKey(t *testing.T) {
	e, cfg, root, rotated := keyListEnv(t)
	rn := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()

	e.publish(rotated, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"), nil)
	d := e.deploySigned(e.key, "ppocr_cls", "2", fleet.DeployOptions{})
	waitFor(t, "status: v2 Failed(SignatureInvalid)", func() bool {
		st, _ := e.status()
		ms := st.Models["ppocr_cls"]
		return ms.Version == "2" && ms.State == "Failed" && ms.Reason == "SignatureInvalid"
	})
	publishKeyList(t, ctx, e, root, 1, []ed25519.PrivateKey{rotated})
	waitFor(t, "version 2 active once the list brings its manifest's key", func() bool { return activeVersion(t, rn.url, "ppocr_cls") == "2" })
	if st, _ := e.status(); st.Desired.Node != d.Generation {
		t.Errorf("desired generation %d, want %d: no new desired state was published", st.Desired.Node, d.Generation)
	}
}

// keyListEnv is a cloud env and the config of a node serving ppocr_cls 1
// that takes only signed desired state and trusts key lists signed by root;
// rotated is a key it does not trust until a list names it.
func keyListEnv(t *testing.T) (e *cloudEnv, cfg Config, root, rotated ed25519.PrivateKey) {
	t.Helper()
	e = newCloudEnv(t)
	root, rootPub := newKeyFile(t, e.src, "root")
	rotated, _ = newKeyFile(t, e.src, "rotated")
	repo := t.TempDir()
	addToRepo(t, repo, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""))
	cfg = e.nodeConfig(t.TempDir(), repo, e.m.URL())
	cfg.Cloud.AllowUnsignedDesired = false
	cfg.Cloud.RootKeyFiles = []string{rootPub}
	return e, cfg, root, rotated
}

// publishKeyList publishes (retained) a key list of version listing keys and
// revoking revoked, expiring in an hour, signed by signer, and returns its
// bytes.
func publishKeyList(t *testing.T, ctx context.Context, e *cloudEnv, signer ed25519.PrivateKey, version uint64, keys []ed25519.PrivateKey, revoked ...string) []byte {
	t.Helper()
	l := wire.KeyList{Protocol: wire.Protocol, Version: version, Expires: time.Now().Add(time.Hour).UTC().Format(time.RFC3339), Revoked: revoked}
	for _, k := range keys {
		pub := k.Public().(ed25519.PublicKey)
		l.Keys = append(l.Keys, wire.ListedKey{KeyID: wire.KeyID(pub), PublicKey: pub})
	}
	b, err := wire.SignKeyList(l, signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.link.Publish(ctx, cloudTopics.Keys(), true, b); err != nil {
		t.Fatal(err)
	}
	return b
}
