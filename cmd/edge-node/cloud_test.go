package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/chunker"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
	"github.com/edgeai/edge-node/sync/wire"
)

// TestNodeSIGKILLedMidTransferResumes runs the real binary against a real
// mosquitto: a version is deployed whose second half of chunks is not
// published yet, so the node stops half-way; it is SIGKILLed there, the rest
// is published, and the node is started again on the same data dir. It
// resumes from the store's record of verified chunks: none of the chunks
// written before the kill comes over the network again, and the version
// ends up Active and served.
func TestNodeSIGKILLedMidTransferResumes(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, pubPEM, err := wire.MarshalKeyPairPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pub := filepath.Join(dir, "release.pub")
	if err := os.WriteFile(pub, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cloud := mqttlinktest.Connect(t, m.URL(), "edgectl-test")
	tp := wire.Topics{Root: wire.DefaultRoot}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	src, err := os.ReadFile(inferencetest.ModelPath(t, "ppocr_det"))
	if err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "det-v2.onnx")
	if err := os.WriteFile(model, append(src, 0xC2, 0x3E, 2, 'v', '2'), 0o644); err != nil {
		t.Fatal(err)
	}
	ref, err := chunker.File(model, "model.onnx", wire.RoleModel, nil)
	if err != nil {
		t.Fatal(err)
	}
	skip, firstHalf := map[string]bool{}, map[string]bool{}
	for i, c := range ref.Chunks {
		if i < len(ref.Chunks)/2 {
			firstHalf[c.SHA256] = true
		}
	}
	for _, c := range ref.Chunks {
		if !firstHalf[c.SHA256] {
			skip[c.SHA256] = true
		}
	}
	publish := func(skip map[string]bool) {
		t.Helper()
		if _, _, err := fleet.PublishModel(ctx, cloud, tp, "ppocr_det", "2", []fleet.FileSpec{{Path: model, Name: "model.onnx", Role: wire.RoleModel}},
			key, fleet.PublishOptions{Skip: skip, Config: "intra_op_threads: 1\n"}); err != nil {
			t.Fatal(err)
		}
	}
	publish(skip)
	if _, err := fleet.DeployWith(ctx, cloud, tp, fleet.Target{Node: "n1"}, "ppocr_det", wire.ModelSpec{Version: "2"}, fleet.DeployOptions{Quiet: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	args := []string{"--data-dir", filepath.Join(dir, "data"), "--broker", m.URL(), "--node-id", "n1", "--trusted-key-files", pub, "--log-level", "debug"}
	d := startDaemon(t, args...)
	status := func() wire.ModelStatus {
		got, err := fleet.ReadRetained(ctx, cloud, tp.Status("n1"), 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		st, err := wire.DecodeStatus(got[tp.Status("n1")])
		if err != nil {
			return wire.ModelStatus{}
		}
		return st.Models["ppocr_det"]
	}
	var before wire.ModelStatus
	testwait.For(t, "the node half-way through the transfer", func() bool {
		before = status()
		return before.State == "Downloading" && before.BytesDone > 0 && before.BytesDone < before.BytesTotal && len(fetchedChunks(d.stderr.String())) >= len(firstHalf)
	}, 3*time.Minute)
	fetchedBefore := fetchedChunks(d.stderr.String())
	if err := d.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	<-d.exited
	publish(nil)
	d2 := startDaemon(t, args...)
	testwait.For(t, "version 2 active after the restart", func() bool {
		st := status()
		return st.Version == "2" && st.State == "Active"
	}, 3*time.Minute)
	again := 0
	after := fetchedChunks(d2.stderr.String())
	for sha := range after {
		if fetchedBefore[sha] {
			again++
		}
	}
	line := logLine(t, d2.stderr.String(), "version downloaded")
	t.Logf("FIGURE node SIGKILL mid-transfer: %d distinct chunks (%d of %d bytes) stored before the kill; after restart: %v; chunks fetched again: %d",
		len(fetchedBefore), before.BytesDone, before.BytesTotal, line, again)
	if again != 0 {
		t.Fatalf("%d chunks verified before the kill came over the network again", again)
	}
	if resumed, _ := line["chunks_resumed"].(float64); int(resumed) < len(fetchedBefore) {
		t.Fatalf("chunks_resumed %v, want ≥ %d", line["chunks_resumed"], len(fetchedBefore))
	}
}

// fetchedChunks are the chunks the node's log says it wrote from the
// network ("chunk stored", debug level).
func fetchedChunks(log string) map[string]bool {
	out := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct{ Message, Chunk string }
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Message == "chunk stored" && l.Chunk != "" {
			out[l.Chunk] = true
		}
	}
	return out
}

func logLine(t *testing.T, log, msg string) map[string]any {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l map[string]any
		if json.Unmarshal(sc.Bytes(), &l) == nil && l["message"] == msg {
			return l
		}
	}
	t.Fatalf("no %q log line:\n%s", msg, log)
	return nil
}
