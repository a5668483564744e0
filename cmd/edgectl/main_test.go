package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeai/edge-node/internal/buildinfo"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/wire"
)

// run executes edgectl in-process and returns its stdout.
func run(t *testing.T, args ...string) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	cmd := newRoot()
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = cmd.ExecuteContext(ctx)
	w.Close()
	os.Stdout = old
	out, _ := io.ReadAll(r)
	if err != nil {
		t.Fatalf("edgectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestKeygenPublishDeployStatus(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	dir := t.TempDir()
	prefix := filepath.Join(dir, "signing")
	out := run(t, "keygen", "--out", prefix)
	if !strings.Contains(out, "key id") {
		t.Fatalf("keygen: %q", out)
	}
	pubPEM, err := os.ReadFile(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := models.ParsePublicKeyPEM(pubPEM); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(prefix + ".key"); fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v", fi.Mode())
	}
	model := filepath.Join(dir, "model.onnx")
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	if err := os.WriteFile(model, data, 0o644); err != nil {
		t.Fatal(err)
	}
	b := []string{"--broker", m.URL(), "--retained-wait", "300ms"}
	out = run(t, append(b, "model", "publish", model, "--name", "det", "--version", "1", "--key", prefix+".key", "--no-progress")...)
	if !strings.Contains(out, "published det 1") {
		t.Fatalf("publish: %q", out)
	}
	out = run(t, append(b, "model", "publish", model, "--name", "det", "--version", "2", "--key", prefix+".key", "--base", "1", "--no-progress")...)
	if !strings.Contains(out, "sent 0 chunks") {
		t.Fatalf("publish with identical base should send nothing: %q", out)
	}
	out = run(t, append(b, "deploy", "--group", "cams", "--model", "det", "--version", "1")...)
	if !strings.Contains(out, "generation 1") {
		t.Fatalf("deploy: %q", out)
	}
	out = run(t, append(b, "deploy", "--group", "cams", "--model", "det", "--version", "2", "--strategy", "canary", "--canary-percent", "10")...)
	if !strings.Contains(out, "generation 2") {
		t.Fatalf("second deploy: %q", out)
	}
	// A node's retained status and presence, as a node would publish them.
	st, _ := wire.Status{Protocol: 1, Node: "n1", Time: time.Now().UTC().Format(time.RFC3339),
		Desired: wire.AppliedGenerations{Node: 4}, Models: map[string]wire.ModelStatus{"det": {Version: "2", State: "Downloading", BytesDone: 1, BytesTotal: 4}}}.Encode()
	pr, _ := wire.Presence{Protocol: 1, Node: "n1", Online: true}.Encode()
	pub := func(topic string, payload []byte) {
		_, l, closeFn, err := connect(context.Background(), &globalFlags{broker: m.URL(), clientID: "fake-node"})
		if err != nil {
			t.Fatal(err)
		}
		defer closeFn()
		if err := l.Publish(context.Background(), topic, true, payload); err != nil {
			t.Fatal(err)
		}
	}
	pub("edgeai/v1/nodes/n1/status", st)
	pub("edgeai/v1/nodes/n1/presence", pr)
	pub("edgeai/v1/nodes/evil/status", []byte(`{"protocol":1,"node":"evil","zzz":1}`))
	out = run(t, append(b, "status")...)
	if !strings.Contains(out, "det@2:Downloading(25%)") || !strings.Contains(out, "true") || !strings.Contains(out, "INVALID") {
		t.Fatalf("status:\n%s", out)
	}
}

func TestDeployNeedsTarget(t *testing.T) {
	cmd := newRoot()
	cmd.SetArgs([]string{"deploy", "--model", "det", "--version", "1"})
	cmd.SetErr(&bytes.Buffer{})
	if err := cmd.Execute(); err == nil {
		t.Fatal("deploy without --node/--group accepted")
	}
}

// TestVersionFlag: edgectl --version prints the build's version, the same
// one edge-node reports.
func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	cmd := newRoot()
	cmd.SetArgs([]string{"--version"})
	cmd.SetOut(&out)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if want := "edgectl version " + buildinfo.Version() + "\n"; out.String() != want {
		t.Errorf("--version printed %q, want %q", out.String(), want)
	}
}
