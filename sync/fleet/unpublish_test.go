package fleet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
	"github.com/edgeai/edge-node/sync/wire"
)

const quiet = 300 * time.Millisecond

// retainedChunks is the set of chunk names retained at the broker.
func retainedChunks(t *testing.T, l Subscriber, tp wire.Topics) map[string]bool {
	t.Helper()
	got, err := ReadRetained(context.Background(), l, tp.Root+"/chunks/+", quiet)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for topic := range got {
		sha, err := tp.ParseChunk(topic)
		if err != nil {
			t.Fatal(err)
		}
		out[sha] = true
	}
	return out
}

// TestUnpublish: unpublish clears a version's retained manifest and its
// chunks that no other published version lists, refuses while a desired
// state asks for the version, and with force clears it anyway.
func TestUnpublish(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	l := mqttlinktest.Connect(t, m.URL(), "edgectl-test")
	tp := wire.Topics{Root: wire.DefaultRoot}
	ctx := context.Background()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	v1 := make([]byte, 3<<20)
	_, _ = rand.Read(v1)
	v2 := append([]byte(nil), v1...)
	_, _ = rand.Read(v2[len(v2)-512<<10:]) // a fine-tune of the last 512 KiB
	publish := func(version string, data []byte, skip map[string]bool) models.Manifest {
		p := filepath.Join(dir, version+".onnx")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		man, _, err := PublishModel(ctx, l, tp, "det", version, []FileSpec{{Path: p, Name: "model.onnx", Role: wire.RoleModel}}, key, PublishOptions{Skip: skip})
		if err != nil {
			t.Fatal(err)
		}
		return man
	}
	m1 := publish("1", v1, nil)
	m2 := publish("2", v2, ChunkSet(m1))
	shared := 0
	for sha := range ChunkSet(m1) {
		if ChunkSet(m2)[sha] {
			shared++
		}
	}
	if shared == 0 || shared == len(ChunkSet(m1)) {
		t.Fatalf("%d of %d chunks shared: the test needs some, not all", shared, len(ChunkSet(m1)))
	}
	rep, err := RetainedReport(ctx, l, tp, quiet)
	if err != nil {
		t.Fatal(err)
	}
	unshared := func(m models.Manifest, other models.Manifest) (n int64) {
		for _, c := range m.Files[0].Chunks {
			if !ChunkSet(other)[c.SHA256] {
				n += c.Size
			}
		}
		return n
	}
	if len(rep) != 2 || rep[0].Version != "1" || rep[0].Bytes != int64(len(v1)) || rep[0].UnsharedBytes != unshared(m1, m2) ||
		rep[1].Version != "2" || rep[1].Chunks != len(ChunkSet(m2)) || rep[1].UnsharedBytes != unshared(m2, m1) {
		t.Fatalf("retained report %+v", rep)
	}
	if _, err := DeployWith(ctx, l, tp, Target{Group: "cams"}, "det", wire.ModelSpec{Version: "1"}, DeployOptions{Quiet: quiet}); err != nil {
		t.Fatal(err)
	}

	if _, err := Unpublish(ctx, l, tp, "det", "1", false, quiet); !errors.Is(err, ErrDesired) || !strings.Contains(err.Error(), tp.GroupDesired("cams")) {
		t.Fatalf("unpublish of a desired version: %v, want ErrDesired naming the group topic", err)
	}
	if _, ok, err := ReadManifest(ctx, l, tp, "det", "1", keysOf(key), quiet); !ok || err != nil {
		t.Fatalf("the refused unpublish touched the manifest: %v %v", ok, err)
	}

	if _, err := DeployWith(ctx, l, tp, Target{Group: "cams"}, "det", wire.ModelSpec{Version: "2"}, DeployOptions{Quiet: quiet}); err != nil {
		t.Fatal(err)
	}
	st, err := Unpublish(ctx, l, tp, "det", "1", false, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if st.BytesCleared != rep[0].UnsharedBytes {
		t.Fatalf("unpublish cleared %d bytes, the report said %d were version 1's alone", st.BytesCleared, rep[0].UnsharedBytes)
	}
	if st.ChunksKept != shared || st.ChunksCleared != len(ChunkSet(m1))-shared {
		t.Fatalf("stats %+v, want %d kept and %d cleared", st, shared, len(ChunkSet(m1))-shared)
	}
	if got := retainedChunks(t, l, tp); !maps.Equal(got, ChunkSet(m2)) {
		t.Fatalf("%d chunks retained after unpublishing 1, want exactly version 2's %d", len(got), len(ChunkSet(m2)))
	}
	if _, ok, _ := ReadManifest(ctx, l, tp, "det", "1", keysOf(key), quiet); ok {
		t.Fatal("version 1's manifest still retained")
	}
	if _, ok, err := ReadManifest(ctx, l, tp, "det", "2", keysOf(key), quiet); !ok || err != nil {
		t.Fatalf("version 2's manifest after unpublishing 1: %v %v", ok, err)
	}
	if _, err := Unpublish(ctx, l, tp, "det", "1", false, quiet); !errors.Is(err, ErrNotPublished) {
		t.Fatalf("second unpublish: %v, want ErrNotPublished", err)
	}

	st, err = Unpublish(ctx, l, tp, "det", "2", true, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.DesiredBy) != 1 || st.ChunksCleared != len(ChunkSet(m2)) {
		t.Fatalf("forced unpublish: %+v", st)
	}
	if got := retainedChunks(t, l, tp); len(got) != 0 {
		t.Fatalf("%d chunks retained after unpublishing everything", len(got))
	}
}

func keysOf(priv ed25519.PrivateKey) models.KeySet {
	ks := models.KeySet{}
	ks.Add(priv.Public().(ed25519.PublicKey))
	return ks
}

// goodPayload is the base64 of a valid manifest.
const goodPayload = "eyJwcm90b2NvbCI6MSwibW9kZWwiOiJtIiwidmVyc2lvbiI6IjEiLCJjcmVhdGVkIjoiIiwiZmlsZXMiOlt7InBhdGgiOiJtb2RlbC5vbm54Iiwicm9sZSI6Im1vZGVsIiwic2hhMjU2IjoiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYiIsInNpemUiOjMsImNodW5rcyI6W3sic2hhMjU2IjoiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYiIsInNpemUiOjN9XX1dfQ=="

func TestChunkListBadInput(t *testing.T) {
	if _, err := chunkList([]byte(`{"payload":"` + goodPayload + `","key_id":"x","signature":""}`)); err != nil {
		t.Fatalf("the good payload: %v", err)
	}
	for name, in := range map[string]string{
		"empty":            ``,
		"not json":         `{{`,
		"payload not b64":  `{"payload":"%%%","key_id":"x","signature":""}`,
		"payload not json": `{"payload":"bm9wZQ==","key_id":"x","signature":""}`,
		"unknown field":    `{"payload":"` + goodPayload + `","key_id":"x","signature":"","x":1}`,
		"oversize":         `{"payload":"` + strings.Repeat("A", wire.MaxMessageBytes) + `"}`,
	} {
		if _, err := chunkList([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzChunkList(f *testing.F) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	sha := strings.Repeat("ab", 32)
	sm, err := models.SignManifest(models.Manifest{Protocol: 1, Model: "m", Version: "1",
		Files: []models.FileRef{{Path: "model.onnx", Role: "model", SHA256: sha, Size: 3, Chunks: []models.ChunkRef{{SHA256: sha, Size: 3}}}}}, key)
	if err != nil {
		f.Fatal(err)
	}
	b, _ := json.Marshal(sm)
	f.Add(b)
	f.Add([]byte(`{"payload":"e30="}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := chunkList(in)
		if err == nil {
			if err := m.Validate(); err != nil {
				t.Fatalf("chunkList accepted an invalid manifest: %v", err)
			}
		}
	})
}
