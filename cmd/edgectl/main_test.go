package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/edgeai/edge-node/internal/buildinfo"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/wire"
)

// run executes edgectl in-process and returns its stdout.
func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runErr(t, args...)
	if err != nil {
		t.Fatalf("edgectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// runErr runs edgectl and returns its stdout and error.
func runErr(t *testing.T, args ...string) (string, error) {
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
	return string(out), err
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
	model := noiseModel(t, dir, "model.onnx", 3<<20)
	b := []string{"--broker", m.URL(), "--retained-wait", "300ms"}
	// A node's retained status and presence, as a node would publish them.
	st, _ := wire.Status{Protocol: 1, Node: "n1", Time: time.Now().UTC().Format(time.RFC3339),
		Desired: wire.AppliedGenerations{Node: 4, Groups: map[string]uint64{"cams": 0}},
		Models:  map[string]wire.ModelStatus{"det": {Version: "2", State: "Downloading", BytesDone: 1, BytesTotal: 4}}}.Encode()
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
	out = run(t, append(b, "status")...)
	if !strings.Contains(out, "det@2:Downloading(25%)") || !strings.Contains(out, "true") || !strings.Contains(out, "INVALID") {
		t.Fatalf("status:\n%s", out)
	}
}

// TestUnpublishCommand: edgectl model unpublish refuses a desired version,
// and clears an undesired one (fleet.Unpublish's test covers which chunks).
func TestUnpublishCommand(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	dir := t.TempDir()
	prefix := filepath.Join(dir, "signing")
	run(t, "keygen", "--out", prefix)
	model := noiseModel(t, dir, "model.onnx", 1<<20-10)
	b := []string{"--broker", m.URL(), "--retained-wait", "300ms"}
	for _, v := range []string{"1", "2"} {
		run(t, append(b, "model", "publish", model, "--name", "det", "--version", v, "--key", prefix+".key", "--no-progress")...)
	}
	out := run(t, append(b, "model", "list")...)
	if !strings.Contains(out, "det    1        1048576") || !strings.Contains(out, "2 versions") {
		t.Fatalf("model list:\n%s", out)
	}
	run(t, append(b, "deploy", "--force", "--node", "n1", "--model", "det", "--version", "1")...)
	cmd := newRoot()
	cmd.SetArgs(append(b, "model", "unpublish", "det", "1"))
	if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "edgeai/v1/nodes/n1/desired") {
		t.Fatalf("unpublish of a desired version: %v, want a refusal naming the node's topic", err)
	}
	out = run(t, append(b, "model", "unpublish", "det", "2")...)
	if !strings.Contains(out, "unpublished det 2: manifest and 0 chunks (0 bytes) cleared") {
		t.Fatalf("unpublish 2 (its chunks are version 1's too): %q", out)
	}
	out = run(t, append(b, "model", "unpublish", "det", "1", "--force")...)
	if !strings.Contains(out, "unpublished det 1: manifest and ") || strings.Contains(out, "and 0 chunks") {
		t.Fatalf("forced unpublish 1: %q", out)
	}
}

// TestDeploySigned: edgectl deploy --key publishes a signed desired state
// naming its target, which a node requiring signatures accepts.
func TestDeploySigned(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	prefix := filepath.Join(t.TempDir(), "signing")
	run(t, "keygen", "--out", prefix)
	b := []string{"--broker", m.URL(), "--retained-wait", "300ms"}
	for i, v := range []string{"1", "2"} {
		out := run(t, append(b, "deploy", "--force", "--group", "cams", "--model", "det", "--version", v, "--key", prefix+".key")...)
		if !strings.Contains(out, fmt.Sprintf("generation %d", i+1)) {
			t.Fatalf("signed deploy %s: %q", v, out)
		}
	}
	pubPEM, err := os.ReadFile(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := models.ParsePublicKeyPEM(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	keys := models.KeySet{}
	keys.Add(pub)
	tp, l, closeFn, err := connect(context.Background(), &globalFlags{broker: m.URL(), root: wire.DefaultRoot, clientID: "reader"})
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	got, err := fleet.ReadRetained(context.Background(), l, tp.GroupDesired("cams"), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	d, signed, err := wire.DecodeDesiredMessage(got[tp.GroupDesired("cams")], "group/cams", wire.DesiredPolicy{Keys: keys, RequireSigned: true})
	if err != nil || !signed || d.Generation != 2 || d.Models["det"].Version != "2" {
		t.Fatalf("retained desired state: %+v signed %v: %v", d, signed, err)
	}
	// Unsigned, the state does not name its target (nodes older than the
	// field reject unknown fields).
	run(t, append(b, "deploy", "--force", "--node", "n9", "--model", "det", "--version", "1")...)
	got, err = fleet.ReadRetained(context.Background(), l, tp.NodeDesired("n9"), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if u := string(got[tp.NodeDesired("n9")]); u == "" || strings.Contains(u, "target") {
		t.Fatalf("unsigned desired state %q: want one without a target", u)
	}
}

// noiseModel writes a file that passes publish's ONNX check (an
// ir_version, an opset_import and a graph field) whose graph is size bytes
// of noise: the transfer does not look inside, and noise makes many chunks.
func noiseModel(t *testing.T, dir, name string, size int) string {
	t.Helper()
	noise := make([]byte, size)
	_, _ = rand.Read(noise)
	b := protowire.AppendTag(nil, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 8)
	b = protowire.AppendTag(b, 8, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{0x10, 17}) // OperatorSetIdProto{version: 17}
	b = protowire.AppendTag(b, 7, protowire.BytesType)
	b = protowire.AppendBytes(b, noise)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDeployNeedsTarget(t *testing.T) {
	cmd := newRoot()
	cmd.SetArgs([]string{"deploy", "--model", "det", "--version", "1"})
	cmd.SetErr(&bytes.Buffer{})
	if err := cmd.Execute(); err == nil {
		t.Fatal("deploy without --node/--group accepted")
	}
}

// TestDeployOverPoisonedGeneration: issue 14's desired state with generation
// 2^64-1 on a group topic. edgectl used to wrap it to 0 and be refused; now
// it refuses with a reason, and --replace-invalid writes the generation
// after the highest the nodes report.
func TestDeployOverPoisonedGeneration(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	b := []string{"--broker", m.URL(), "--retained-wait", "300ms"}
	_, l, closeFn, err := connect(context.Background(), &globalFlags{broker: m.URL(), clientID: "fake-cloud"})
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	st, _ := wire.Status{Protocol: 1, Node: "n1", Time: time.Now().UTC().Format(time.RFC3339),
		Desired: wire.AppliedGenerations{Groups: map[string]uint64{"cams": 6}}}.Encode()
	for topic, payload := range map[string]string{
		"edgeai/v1/groups/cams/desired": `{"protocol":1,"generation":18446744073709551615,"models":{}}`,
		"edgeai/v1/nodes/n1/status":     string(st),
	} {
		if err := l.Publish(context.Background(), topic, true, []byte(payload)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := newRoot()
	cmd.SetArgs(append(b, "deploy", "--force", "--group", "cams", "--model", "det", "--version", "1"))
	if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "2^53-1") {
		t.Fatalf("deploy over the poisoned state: %v, want a refusal naming 2^53-1", err)
	}
	out := run(t, append(b, "deploy", "--force", "--group", "cams", "--model", "det", "--version", "1", "--replace-invalid")...)
	if !strings.Contains(out, "generation 7") {
		t.Fatalf("deploy --replace-invalid: %q, want generation 7", out)
	}
	out = run(t, append(b, "deploy", "--force", "--group", "cams", "--model", "det", "--version", "2")...)
	if !strings.Contains(out, "generation 8") {
		t.Fatalf("deploy after replacing: %q, want generation 8", out)
	}
}

// TestCommandsFailFast: every command fails with a message saying what is
// wrong (no hang, no silent success), and read commands print JSON with
// -o json.
func TestCommandsFailFast(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	dir := t.TempDir()
	key := filepath.Join(dir, "k")
	run(t, "keygen", "--out", key)
	model := noiseModel(t, dir, "model.onnx", 1<<10)
	other := noiseModel(t, t.TempDir(), "model.onnx", 1<<10) // same name, other bytes
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("these are release notes, not a model\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := []string{"--broker", m.URL(), "--retained-wait", "300ms"}
	run(t, append(b, "model", "publish", model, "--name", "det", "--version", "1", "--key", key+".key", "--no-progress")...)
	st, _ := wire.Status{Protocol: 1, Node: "n1", Time: time.Now().UTC().Format(time.RFC3339),
		Desired: wire.AppliedGenerations{Groups: map[string]uint64{"cams": 0}},
		Models:  map[string]wire.ModelStatus{"det": {Version: "1", State: "Active"}, "cls": {Version: "5", State: "Active"}}}.Encode()
	_, l, closeFn, err := connect(context.Background(), &globalFlags{broker: m.URL(), clientID: "fake-node"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Publish(context.Background(), "edgeai/v1/nodes/n1/status", true, st); err != nil {
		t.Fatal(err)
	}
	closeFn()
	state := filepath.Join(t.TempDir(), "rollouts.db")
	pubArgs := func(file, version string) []string {
		return append(append([]string(nil), b...), "model", "publish", file, "--name", "det", "--version", version, "--key", key+".key", "--no-progress")
	}
	for _, tc := range []struct {
		name string
		args []string
		err  string // "" for success
		out  string
	}{
		{"refused port", []string{"--broker", "tcp://127.0.0.1:1", "status"}, "unreachable", ""},
		{"http URL", []string{"--broker", "http://127.0.0.1:1883", "status"}, "scheme http is not MQTT", ""},
		{"not a URL", []string{"--broker", "not a url", "status"}, "is not a URL", ""},
		{"rollout on a bad broker", []string{"--broker", "tcp://127.0.0.1:1", "rollout", "--state", state, "start", "--model", "det", "--version", "1"}, "unreachable", ""},
		{"publish a text file", pubArgs(text, "2"), "not an ONNX model", ""},
		{"publish other bytes as version 1", pubArgs(other, "1"), "already published with other bytes in model.onnx", ""},
		{"publish the same bytes again", pubArgs(model, "1"), "", "published det 1"},
		{"replace with --force", append(pubArgs(other, "1"), "--force"), "", "published det 1"},
		{"deploy to an unknown node", append(b, "deploy", "--node", "nosuchnode", "--model", "det", "--version", "1"), "no node nosuchnode", ""},
		{"deploy to an unknown group", append(b, "deploy", "--group", "nogroup", "--model", "det", "--version", "1"), "no node lists group nogroup", ""},
		{"deploy an unpublished version", append(b, "deploy", "--node", "n1", "--model", "det", "--version", "99"), "version 99 of model det is not published", ""},
		{"deploy", append(b, "deploy", "--node", "n1", "--model", "det", "--version", "1"), "", "node n1: generation 1"},
		{"deploy a version the node has, unpublished", append(b, "deploy", "--node", "n1", "--model", "cls", "--version", "5"), "", "node n1: generation 2"},
		{"rollout an unpublished version", append(b, "rollout", "--state", state, "start", "--model", "det", "--version", "99"), "version 99 of model det is not published", ""},
		{"rollout status without a state file", append(b, "rollout", "--state", state, "status"), "", "no rollouts in"},
		{"rollout status -o json without a state file", append(b, "rollout", "--state", state, "status", "-o", "json"), "", "[]"},
		{"rollout status of an unknown id", append(b, "rollout", "--state", state, "status", "r9"), "no state file", ""},
		{"rollout pause without a state file", append(b, "rollout", "--state", state, "pause", "r9"), "no state file", ""},
		{"status -o json", append(b, "status", "-o", "json"), "", `"node": "n1"`},
		{"status -o yaml", append(b, "status", "-o", "yaml"), `--output "yaml"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runErr(t, tc.args...)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("error %v\n%s", err, out)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one containing %q\n%s", err, tc.err, out)
			case !strings.Contains(out, tc.out):
				t.Fatalf("output %q, want it to contain %q", out, tc.out)
			}
			if err != nil && (strings.Contains(err.Error(), "map[") || strings.Contains(err.Error(), "[]")) {
				t.Fatalf("Go formatting in %q", err)
			}
		})
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("a read created the state file: %v", err)
	}
	out := run(t, append(b, "status", "-o", "json")...)
	var nodes []nodeJSON
	if err := json.Unmarshal([]byte(out), &nodes); err != nil || len(nodes) != 1 || nodes[0].Status.Models["det"].Version != "1" {
		t.Fatalf("status -o json: %v %+v\n%s", err, nodes, out)
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
