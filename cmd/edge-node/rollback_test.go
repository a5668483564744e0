package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/sync/brokertest"
)

// edgectlBinary builds edgectl (once per test process, beside edge-node).
func edgectlBinary(t *testing.T) string {
	t.Helper()
	p := filepath.Join(filepath.Dir(binary(t)), "edgectl")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if out, err := exec.Command("go", "build", "-o", p, "../edgectl").CombinedOutput(); err != nil {
		t.Fatalf("go build edgectl: %v\n%s", err, out)
	}
	return p
}

// edgectl runs the edgectl binary and returns its stdout.
func edgectl(t *testing.T, broker string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, edgectlBinary(t), append([]string{"--broker", broker}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("edgectl %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// clsBody is a JSON infer request for ppocr_cls (a 1×3×48×192 image).
func clsBody() []byte {
	const n = 3 * 48 * 192
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(i%97)/97 - 0.5
	}
	b, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": "x", "shape": []int{1, 3, 48, 192}, "datatype": "FP32", "data": data}}})
	return b
}

type answer struct {
	sent    time.Time
	version string
}

// TestFleetRollbackStopsCanaryRealBinaries is issue 11's first bug as a
// fleet operator meets it, with the real edge-node and edgectl binaries on
// mosquitto: ppocr_cls v2 serves; the fleet deploys v4 with a canary
// strategy (gates that would promote v4 after 4 s); then the fleet rolls
// back to v2. Within a few seconds of the rollback no answer comes from v4,
// v4 is never promoted, and the store and status say v2.
func TestFleetRollbackStopsCanaryRealBinaries(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	dir := t.TempDir()
	key := filepath.Join(dir, "signing")
	edgectl(t, m.URL(), "keygen", "--out", key)
	repo := filepath.Join(dir, "repo")
	copyModel(t, repo, "ppocr_cls", "2")
	if err := os.WriteFile(filepath.Join(repo, "ppocr_cls", "config.yaml"), []byte("intra_op_threads: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(inferencetest.ModelPath(t, "ppocr_cls"))
	if err != nil {
		t.Fatal(err)
	}
	v4 := filepath.Join(dir, "cls-v4.onnx") // computes the same, hashes differently (an unknown protobuf field)
	if err := os.WriteFile(v4, append(src, 0xC2, 0x3E, 2, 'v', '4'), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "cls.yaml")
	if err := os.WriteFile(cfgFile, []byte("intra_op_threads: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--model-repository", repo, "--data-dir", filepath.Join(dir, "data"), "--broker", m.URL(),
		"--trusted-key-files", key+".pub")
	base := "http://" + d.addr
	edgectl(t, m.URL(), "model", "publish", v4, "--name", "ppocr_cls", "--version", "4", "--key", key+".key", "--config", cfgFile, "--no-progress")
	edgectl(t, m.URL(), "deploy", "--node", "test-node", "--model", "ppocr_cls", "--version", "2")

	body := clsBody()
	var mu sync.Mutex
	var answers []answer
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 30 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent := time.Now()
				resp, err := c.Post(base+"/v2/models/ppocr_cls/infer", "application/json", bytes.NewReader(body))
				if err != nil {
					t.Errorf("infer: %v", err)
					return
				}
				var out struct {
					ModelVersion string `json:"model_version"`
				}
				err = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Errorf("infer: %d %v", resp.StatusCode, err)
					return
				}
				mu.Lock()
				answers = append(answers, answer{sent, out.ModelVersion})
				mu.Unlock()
			}
		}()
	}
	fromV4 := func(after time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, a := range answers {
			if a.version == "4" && a.sent.After(after) {
				n++
			}
		}
		return n
	}
	edgectl(t, m.URL(), "deploy", "--node", "test-node", "--model", "ppocr_cls", "--version", "4", "--strategy",
		`{"kind":"canary","canary_percent":50,"min_requests":20,"min_duration":"4s","gates":{"max_error_rate":0.5,"max_p99_ratio":1000}}`)
	testwait.For(t, "answers from the v4 canary", func() bool { return fromV4(time.Time{}) > 0 }, 3*time.Minute)

	rollback := time.Now()
	edgectl(t, m.URL(), "deploy", "--node", "test-node", "--model", "ppocr_cls", "--version", "2")
	published := time.Now()     // edgectl returns once the broker acked the retained desired state
	time.Sleep(8 * time.Second) // past the canary's min_duration: a canary left running would promote v4 now
	close(stop)
	wg.Wait()

	var last time.Time
	for _, a := range answers {
		if a.version == "4" && a.sent.After(last) {
			last = a.sent
		}
	}
	t.Logf("FIGURE fleet rollback (edgectl deploy v2 during a v4 canary): last request answered by v4 was sent %v after edgectl deploy started, %v after it returned (the desired state published); %d answers in all",
		last.Sub(rollback).Round(time.Millisecond), last.Sub(published).Round(time.Millisecond), len(answers))
	if n := fromV4(rollback.Add(3 * time.Second)); n > 0 {
		t.Errorf("%d answers from v4 for requests sent more than 3 s after the fleet rolled back", n)
	}
	var mi struct {
		Active, Canary string
		Override       any
	}
	resp, err := http.Get(base + "/admin/models/ppocr_cls")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&mi)
	resp.Body.Close()
	if err != nil || mi.Active != "2" || mi.Canary != "" {
		t.Errorf("GET /admin/models/ppocr_cls: active %q canary %q (%v), want 2 and none", mi.Active, mi.Canary, err)
	}
	// edgectl's table lists the node's models as name@version:state.
	if out := edgectl(t, m.URL(), "status"); !strings.Contains(out, "ppocr_cls@2:Active") || strings.Contains(out, "ppocr_cls@4") {
		t.Errorf("edgectl status, want ppocr_cls@2:Active:\n%s", out)
	}
}
