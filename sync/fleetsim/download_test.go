package fleetsim

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/wire"
)

// TestRealDownload: with Profile.RealDownload simulated nodes fetch the
// version from the broker for real (real mosquitto): a published version
// ends Active on every node with its bytes counted as downloaded and
// received; a version deployed before its manifest is published waits
// (ManifestNotPublished) and is taken once it is; a manifest whose file hash
// does not match its chunks fails ChecksumMismatch; one signed by an
// untrusted key fails SignatureInvalid.
func TestRealDownload(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	tp := wire.Topics{Root: wire.DefaultRoot}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	keys := models.KeySet{}
	keys.Add(pub)
	const nodes = 3
	f, err := Start(ctx, Config{BrokerURL: m.URL(), Topics: tp, Nodes: nodes, Initial: map[string]string{"det": "1"},
		Keys: keys, Profile: Profile{RealDownload: true}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l := cloudLink(t, m.URL())

	file := filepath.Join(t.TempDir(), "model.onnx")
	data := make([]byte, 3<<20)
	rand.Read(data)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	publish := func(version string, signer ed25519.PrivateKey) models.Manifest {
		t.Helper()
		man, _, err := fleet.PublishModel(ctx, l, tp, "det", version, []fleet.FileSpec{{Path: file, Name: "model.onnx", Role: wire.RoleModel}}, signer, fleet.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return man
	}
	deploy := func(version string) {
		t.Helper()
		for _, id := range f.IDs() {
			if _, err := fleet.DeployWith(ctx, l, tp, fleet.Target{Node: id}, "det", wire.ModelSpec{Version: version},
				fleet.DeployOptions{Quiet: 200 * time.Millisecond, ReplaceInvalid: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// states waits until every node reports version with state(reason).
	states := func(version, want string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			views, err := fleet.ReadNodes(ctx, l, tp, 200*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			var got []string
			for _, v := range views {
				ms := v.Status.Models["det"]
				s := ms.State
				if ms.Reason != "" {
					s += "(" + ms.Reason + ")"
				}
				got = append(got, ms.Version+" "+s)
				if ms.Version == version && s == want {
					n++
				}
			}
			if n == nodes {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("want every node at %s %s, got %s", version, want, strings.Join(got, ", "))
			}
		}
	}

	man := publish("2", key)
	before := f.Stats()
	deploy("2")
	states("2", "Active")
	after := f.Stats()
	if got, want := after.DownloadedBytes-before.DownloadedBytes, int64(nodes*len(data)); got != want {
		t.Errorf("downloaded %d bytes, want %d (every node the whole file once)", got, want)
	}
	if got := after.ReceivedBytes - before.ReceivedBytes; got < int64(nodes*len(data)) {
		t.Errorf("received %d bytes from the broker, want at least %d", got, nodes*len(data))
	}

	// Deployed before it is published: Waiting, then taken.
	deploy("3")
	states("3", "Waiting(ManifestNotPublished)")
	publish("3", key)
	states("3", "Active")

	// A manifest whose file hash is not its chunks' bytes.
	bad := man
	bad.Version = "4"
	bad.Files = append([]models.FileRef(nil), man.Files...)
	bad.Files[0].SHA256 = strings.Repeat("ab", 32)
	signed, err := wire.SignManifest(bad, key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(signed)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Publish(ctx, tp.Manifest("det", "4"), true, b); err != nil {
		t.Fatal(err)
	}
	deploy("4")
	states("4", "Failed(ChecksumMismatch)")

	// Signed by a key the nodes do not trust.
	_, evil, _ := ed25519.GenerateKey(rand.Reader)
	publish("5", evil)
	deploy("5")
	states("5", "Failed(SignatureInvalid)")
}
