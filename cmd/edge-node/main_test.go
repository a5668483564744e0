package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/internal/logtest"
)

// These tests build the real binary and run it as a process: flags,
// environment, signals and exit codes as an operator sees them.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

const testVersion = "test-1.2.3"

// binary builds edge-node once per test process (with a version stamped in
// through -ldflags, as the Makefile does) and returns its path.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "edge-node-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "edge-node")
		out, err := exec.Command("go", "build", "-ldflags", "-X github.com/edgeai/edge-node/internal/buildinfo.version="+testVersion, "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	if wrapped, ok := os.LookupEnv(mdweExecEnv); ok {
		execWithMDWE(wrapped)
	}
	if _, ok := os.LookupEnv(mdweProbeEnv); ok {
		probeWriteExecute()
	}
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// run runs the binary to completion and returns its exit code, stdout and
// stderr. ONNXRUNTIME_LIB and EDGE_NODE_* are cleared so that only args
// and env configure it.
func run(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("edge-node %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ONNXRUNTIME_LIB=") && !strings.HasPrefix(kv, "EDGE_NODE_") {
			out = append(out, kv)
		}
	}
	return out
}

func assertNoPanic(t *testing.T, stderr string) {
	t.Helper()
	if strings.Contains(stderr, "panic:") || strings.Contains(stderr, "goroutine ") {
		t.Errorf("stderr shows a panic:\n%s", stderr)
	}
}

func TestVersionFlag(t *testing.T) {
	code, out, errOut := run(t, nil, "--version")
	if code != 0 || out != "edge-node "+testVersion+"\n" {
		t.Errorf("--version: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestVersionEverywhere: the one version stamped in at build time is what
// GET /v2, the build_info metric and the "node started" log line report,
// as --version prints it.
func TestVersionEverywhere(t *testing.T) {
	d := startDaemon(t, "--data-dir", t.TempDir())
	resp, err := http.Get("http://" + d.addr + "/v2")
	if err != nil {
		t.Fatal(err)
	}
	var meta struct{ Name, Version string }
	err = json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if err != nil || meta.Version != testVersion {
		t.Errorf("GET /v2: version %q (%v), want %q", meta.Version, err, testVersion)
	}
	if v := metricSum(t, d.addr, "edge_node_build_info", `version="`+testVersion+`"`); v != 1 {
		t.Errorf("edge_node_build_info{version=%q} = %v, want 1", testVersion, v)
	}
	if started := logLine(t, d.stderr.String(), "node started"); started["version"] != testVersion {
		t.Errorf("node started log line: version %v, want %q", started["version"], testVersion)
	}
}

// TestStartupErrors: a missing ONNX Runtime library and bad configuration
// end the process with exit code 1 and one clear line, never a panic.
func TestStartupErrors(t *testing.T) {
	badCfg := func(content string) string {
		p := filepath.Join(t.TempDir(), "edge-node.yaml")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := []string{"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-format", "json"}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"no library configured", nil, []string{"--data-dir", t.TempDir()}, []string{"ONNXRUNTIME_LIB", "ort_library", "no ONNX Runtime library"}},
		{"library path does not exist", nil, []string{"--data-dir", t.TempDir(), "--ort-lib", "/nonexistent/libonnxruntime.so"},
			[]string{"ONNXRUNTIME_LIB", "ort_library", "/nonexistent/libonnxruntime.so"}},
		{"library from the environment does not exist", []string{"ONNXRUNTIME_LIB=/nope/lib.so"}, []string{"--data-dir", t.TempDir()},
			[]string{"ONNXRUNTIME_LIB", "ort_library", "/nope/lib.so"}},
		{"not a shared library", nil, []string{"--data-dir", t.TempDir(), "--ort-lib", badCfg("not ELF")}, []string{"ONNXRUNTIME_LIB", "ort_library"}},
		{"bad value in config file", nil, []string{"--config", badCfg("log: {level: loud}\n")}, []string{"log.level", "loud"}},
		{"wrong type in config file", nil, []string{"--config", badCfg("max_request_bytes: lots\n")}, []string{"max_request_bytes"}},
		{"unknown field in config file", nil, []string{"--config", badCfg("data_dri: /x\n")}, []string{"data_dri"}},
		{"config file missing", nil, []string{"--config", "/nonexistent/edge-node.yaml"}, []string{"/nonexistent/edge-node.yaml"}},
		{"bad flag value", nil, []string{"--max-request-bytes", "-5"}, []string{"max_request_bytes"}},
		{"bad environment value", []string{"EDGE_NODE_DRAIN_TIMEOUT=soon"}, nil, []string{"EDGE_NODE_DRAIN_TIMEOUT", "soon"}},
		{"unknown flag", nil, []string{"--no-such-flag"}, []string{"no-such-flag"}},
		{"bad broker flag", nil, []string{"--broker", "http://b:1"}, []string{"cloud.broker", "http"}},
		{"bad broker from the environment", []string{"EDGE_NODE_BROKER=tcp://nohost"}, nil, []string{"cloud.broker"}},
		{"negative download rate from the environment", []string{"EDGE_NODE_DOWNLOAD_RATE=-1"}, nil, []string{"cloud.download_rate", "EDGE_NODE_DOWNLOAD_RATE"}},
		{"download rate flag not a number", nil, []string{"--download-rate", "fast"}, []string{"--download-rate", "fast"}},
		{"bad fetch window flag", nil, []string{"--fetch-window", "1am-5am"}, []string{"cloud.fetch_window", "--fetch-window"}},
		{"bad node id flag", nil, []string{"--node-id", "a/b"}, []string{"cloud.node_id"}},
		{"bad groups from the environment", []string{"EDGE_NODE_GROUPS=cams,#"}, nil, []string{"cloud.groups"}},
		{"cert without key", nil, []string{"--broker-cert-file", "/x.pem"}, []string{"cloud.tls"}},
		{"kubeedge dmi without a device name", nil, []string{"--kubeedge-dmi"}, []string{"kubeedge.dmi", "device_name"}},
		{"kubeedge dmi sockets the same", []string{"EDGE_NODE_KUBEEDGE_DEVICE_NAME=n1"}, []string{"--kubeedge-dmi", "--kubeedge-dmi-socket", "/run/x.sock", "--kubeedge-mapper-socket", "/run/x.sock"},
			[]string{"kubeedge.dmi", "socket"}},
		{"kubeedge eventbus device name not a Kubernetes name", []string{"EDGE_NODE_KUBEEDGE_EVENTBUS=true", "EDGE_NODE_KUBEEDGE_DEVICE_NAME=Node_1"}, nil,
			[]string{"kubeedge.eventbus", "Node_1"}},
		{"kubeedge eventbus flag not a bool", []string{"EDGE_NODE_KUBEEDGE_EVENTBUS=maybe"}, nil, []string{"EDGE_NODE_KUBEEDGE_EVENTBUS", "maybe"}},
		{"trusted key file missing", nil, []string{"--data-dir", t.TempDir(), "--ort-lib", inferencetest.LibraryPath(t),
			"--trusted-key-files", "/nonexistent/release.pub"}, []string{"cloud.trusted_key_files", "/nonexistent/release.pub"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, tc.env, append(append([]string{}, base...), tc.args...)...)
			if code != 1 {
				t.Errorf("exit code %d, want 1; stderr:\n%s", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, stderr)
				}
			}
			assertNoPanic(t, stderr)
		})
	}
}

// daemon is a running edge-node process.
type daemon struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	exited chan struct{}
	err    error // Wait's result, after exited is closed
}

// syncBuffer is a bytes.Buffer safe for the process's stderr copier and the
// test to use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDaemon runs edge-node on 127.0.0.1:0 with JSON logs, reads the
// address it bound from its "node started" log line, and waits until
// /v2/health/ready answers 200. The process is killed at the end of the
// test if it is still running.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	return startDaemonEnv(t, nil, args...)
}

// startDaemonEnv is startDaemon with env added to the process's
// environment.
func startDaemonEnv(t *testing.T, env []string, args ...string) *daemon {
	t.Helper()
	return startDaemonWith(t, binary(t), env, args...)
}

// startDaemonWith is startDaemonEnv running program, which runs edge-node
// itself (the test binary as a wrapper: see TestMain).
func startDaemonWith(t *testing.T, program string, env []string, args ...string) *daemon {
	t.Helper()
	// The embedded broker on a free port: the default 1883 may be taken.
	args = append([]string{"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-format", "json", "--ort-lib", inferencetest.LibraryPath(t),
		"--embedded-broker-addr", "127.0.0.1:0", "--node-id", "test-node"}, args...)
	d := &daemon{cmd: exec.Command(program, args...), stderr: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd.Env = append(cleanEnv(), env...)
	pr, pw := io.Pipe()
	d.cmd.Stderr = pw
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		pw.Close()
		close(d.exited)
	}()
	// Every JSON log line names each key once (a decoder keeps the last of
	// a duplicate); checked on every line of every daemon these tests run,
	// once its stderr is read to the end.
	var bad []string
	scanned := make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			d.cmd.Process.Kill()
			<-d.exited
		}
		<-scanned
		for _, b := range bad {
			t.Errorf("edge-node log line with a key twice: %s", b)
		}
	})
	addrc := make(chan string, 1)
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			d.stderr.Write(append(sc.Bytes(), '\n'))
			if line := sc.Text(); strings.HasPrefix(line, "{") {
				if k, err := logtest.RepeatedKey(line); k != "" || err != nil {
					bad = append(bad, fmt.Sprintf("key %q twice (%v): %s", k, err, line))
				}
			}
			var line struct{ Message, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Message == "node started" {
				addrc <- line.Addr
			}
		}
	}()
	select {
	case d.addr = <-addrc:
	case <-d.exited:
		t.Fatalf("edge-node exited during start-up (%v):\n%s", d.err, d.stderr)
	case <-time.After(2 * time.Minute):
		t.Fatalf("no \"node started\" log line after 2 minutes:\n%s", d.stderr)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + d.addr + "/v2/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after a minute:\n%s", d.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits for the process to exit and returns its exit code.
func (d *daemon) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-d.exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("edge-node still running 2 minutes after SIGTERM:\n%s", d.stderr)
	}
	return d.cmd.ProcessState.ExitCode()
}

func copyModel(t *testing.T, repo, name, version string) {
	t.Helper()
	b, err := os.ReadFile(inferencetest.ModelPath(t, name))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(repo, name, version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// detRequest is a binary-extension ppocr_det request on a 1×3×640×640
// image (4.9 MB), asking for the output as binary.
func detRequest() (body []byte, headerLen int) {
	const n = 3 * 640 * 640
	hdr := fmt.Sprintf(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3,640,640],"parameters":{"binary_data_size":%d}}],`+
		`"parameters":{"binary_data_output":true}}`, 4*n)
	body = make([]byte, len(hdr)+4*n) // zeros: a black image
	copy(body, hdr)
	return body, len(hdr)
}

// metricSum adds up the values of every series of a metric in /metrics
// whose labels contain match.
func metricSum(t *testing.T, addr, name, match string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, match) {
			if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// TestSIGTERMDrainsInFlightRequests: SIGTERM while N ppocr_det requests are
// inside the server lets every one of them finish with 200, the process
// exits 0, and the port is closed afterwards. The signal is sent once the
// server's own metrics say it has decoded all N request bodies (so each
// request is being served, not merely sent); nothing depends on how long
// inference takes.
func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	repo := t.TempDir()
	copyModel(t, repo, "ppocr_det", "1")
	d := startDaemon(t, "--model-repository", repo, "--data-dir", t.TempDir(), "--drain-timeout", "2m")

	const n = 6
	body, hl := detRequest()
	type result struct {
		code int
		size int
		err  error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			req, _ := http.NewRequest("POST", "http://"+d.addr+"/v2/models/ppocr_det/infer", bytes.NewReader(body))
			req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(hl))
			req.Header.Set("Content-Type", "application/octet-stream")
			resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- result{code: resp.StatusCode, size: len(b), err: err}
		}()
	}
	// The input-decoding histogram counts a request once its body is
	// decoded into input tensors, just before the model runs.
	deadline := time.Now().Add(2 * time.Minute)
	for metricSum(t, d.addr, "edge_inference_compute_input_duration_seconds_count", `model="ppocr_det"`) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not decode %d requests in 2 minutes:\n%s", n, d.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	done := metricSum(t, d.addr, "edge_inference_request_success_total", `model="ppocr_det"`)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGTERM sent with %d of %d requests decoded and %v already answered", n, n, done)

	if code := d.wait(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0:\n%s", code, d.stderr)
	}
	const outBytes = 640 * 640 * 4 // sigmoid map 1×1×640×640 float32
	for range n {
		r := <-results
		if r.err != nil {
			t.Errorf("a request in flight at SIGTERM failed: %v", r.err)
			continue
		}
		if r.code != 200 || r.size < outBytes {
			t.Errorf("a request in flight at SIGTERM got %d with %d bytes", r.code, r.size)
		}
	}
	if c, err := net.DialTimeout("tcp", d.addr, 5*time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the process exited", d.addr)
	}
	if !strings.Contains(d.stderr.String(), "draining in-flight requests") {
		t.Errorf("no drain log line:\n%s", d.stderr)
	}
}

// TestModelsCommands: `models import` and `models list` against a real
// store with no node running; the node then boots from that store alone;
// while it runs, the commands say the store is held and show the admin
// API call to use instead.
func TestModelsCommands(t *testing.T) {
	data := t.TempDir()
	lib := inferencetest.LibraryPath(t)
	model := inferencetest.ModelPath(t, "ppocr_cls")
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgFile, []byte("intra_op_threads: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := run(t, nil, "models", "import", model, "--name", "cls", "--version", "1", "--config", cfgFile,
		"--activate", "--data-dir", data, "--ort-lib", lib)
	if code != 0 || out != "cls 1 Active\n" {
		t.Fatalf("models import --activate: exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, nil, "models", "import", model, "--name", "cls", "--version", "2", "--data-dir", data)
	if code != 0 || out != "cls 2 Ready\n" {
		t.Fatalf("models import: exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, []string{"EDGE_NODE_DATA_DIR=" + data}, "models", "list")
	if code != 0 || !hasLine(out, "cls", "1", "Active", "active") || !hasLine(out, "cls", "2", "Ready") {
		t.Fatalf("models list: exit %d, stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"missing name", []string{"models", "import", model, "--version", "3", "--data-dir", data}, []string{"name"}},
		{"bad version", []string{"models", "import", model, "--name", "cls", "--version", "../x", "--data-dir", data}, []string{"version"}},
		{"bad model config", []string{"models", "import", model, "--name", "cls", "--version", "3", "--data-dir", data, "--config", writeTemp(t, "max_concurrency: -1\n")}, []string{"max_concurrency"}},
		{"missing file", []string{"models", "import", "/nonexistent.onnx", "--name", "cls", "--version", "3", "--data-dir", data}, []string{"/nonexistent.onnx"}},
		{"activate without ONNX Runtime", []string{"models", "import", model, "--name", "cls", "--version", "3", "--data-dir", data, "--activate"}, []string{"make setup"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := run(t, nil, tc.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1; stderr:\n%s", code, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, errOut)
				}
			}
			assertNoPanic(t, errOut)
		})
	}

	// The node boots from the store alone and serves what import activated.
	d := startDaemon(t, "--data-dir", data)
	resp, err := http.Get("http://" + d.addr + "/v2/models/cls/versions/1/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("cls version 1 is not ready on the node: %d", resp.StatusCode)
	}

	// While it runs, the store is held: the commands say so and show the
	// admin API call instead.
	code, _, errOut = run(t, nil, "models", "import", model, "--name", "cls", "--version", "4", "--activate",
		"--data-dir", data, "--http-addr", d.addr)
	wantCurl := "curl -X PUT --data-binary @" + model + " 'http://" + d.addr + "/admin/models/cls/versions/4?activate=true'"
	if code != 1 || !strings.Contains(errOut, "running edge-node holds the store") || !strings.Contains(errOut, wantCurl) {
		t.Errorf("import while the node runs: exit %d, stderr:\n%s\nwant it to contain:\n%s", code, errOut, wantCurl)
	}
	code, _, errOut = run(t, nil, "models", "list", "--data-dir", data, "--http-addr", d.addr)
	if code != 1 || !strings.Contains(errOut, "curl 'http://"+d.addr+"/admin/models'") {
		t.Errorf("list while the node runs: exit %d, stderr:\n%s", code, errOut)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM:\n%s", code, d.stderr)
	}
}

// hasLine reports whether some line of out has exactly these
// whitespace-separated fields first.
func hasLine(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(fields) && strings.Join(f[:len(fields)], " ") == strings.Join(fields, " ") {
			return true
		}
	}
	return false
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKubeEdgeFlagsAndEnvironment: the DaemonSet's EDGE_NODE_KUBEEDGE_*
// variables reach both bridges' config, over the config file, and flags
// win over them.
func TestKubeEdgeFlagsAndEnvironment(t *testing.T) {
	p := filepath.Join(t.TempDir(), "edge-node.yaml")
	file := "kubeedge:\n  dmi: {enabled: true, device_name: from-file, report_interval: 5s}\n  eventbus: {broker: tcp://127.0.0.1:1883}\n"
	if err := os.WriteFile(p, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EDGE_NODE_KUBEEDGE_DEVICE_NAME", "edge-7")
	t.Setenv("EDGE_NODE_KUBEEDGE_DEVICE_NAMESPACE", "factory")
	t.Setenv("EDGE_NODE_KUBEEDGE_EVENTBUS", "true")
	t.Setenv("EDGE_NODE_KUBEEDGE_EVENTBUS_PASSWORD", "s3cret")
	cmd := newRootCommand()
	if err := cmd.ParseFlags([]string{"--kubeedge-dmi-socket", "/run/kubeedge/dmi.sock"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := resolveConfig(cmd.Flags(), p)
	if err != nil {
		t.Fatal(err)
	}
	ke := cfg.KubeEdge
	if !ke.DMI.Enabled || !ke.EventBus.Enabled {
		t.Errorf("enabled: dmi %v eventbus %v", ke.DMI.Enabled, ke.EventBus.Enabled)
	}
	if ke.DMI.DeviceName != "edge-7" || ke.EventBus.DeviceName != "edge-7" || ke.DMI.DeviceNamespace != "factory" || ke.EventBus.DeviceNamespace != "factory" {
		t.Errorf("device: dmi %s/%s eventbus %s/%s", ke.DMI.DeviceNamespace, ke.DMI.DeviceName, ke.EventBus.DeviceNamespace, ke.EventBus.DeviceName)
	}
	if ke.DMI.EdgeCoreSocket != "/run/kubeedge/dmi.sock" || ke.DMI.ReportInterval != 5*time.Second || ke.EventBus.Broker != "tcp://127.0.0.1:1883" || ke.EventBus.Password != "s3cret" {
		t.Errorf("kubeedge config: %+v", ke)
	}
}

// TestTracingFlagsAndEnvironment: the tracing keys come from
// EDGE_NODE_TRACING_* over the file, flags win over both, and the headers
// (secrets: no flag) come from EDGE_NODE_TRACING_HEADERS over the file's.
func TestTracingFlagsAndEnvironment(t *testing.T) {
	p := filepath.Join(t.TempDir(), "edge-node.yaml")
	file := "tracing: {endpoint: \"http://file:4318\", headers: {authorization: from-file}, timeout: 2s}\n"
	if err := os.WriteFile(p, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EDGE_NODE_TRACING_ENDPOINT", "https://otel.example:4318")
	t.Setenv("EDGE_NODE_TRACING_SAMPLE_RATIO", "0.5")
	t.Setenv("EDGE_NODE_TRACING_HEADERS", "authorization=Bearer%20abc,x-tenant=edge")
	cmd := newRootCommand()
	if err := cmd.ParseFlags([]string{"--tracing-sample-ratio", "0.1", "--tracing-ca-file", "/etc/ca.pem"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := resolveConfig(cmd.Flags(), p)
	if err != nil {
		t.Fatal(err)
	}
	tc := cfg.Tracing
	if tc.Endpoint != "https://otel.example:4318" || tc.SampleRatio != 0.1 || tc.CAFile != "/etc/ca.pem" || tc.Timeout != 2*time.Second ||
		len(tc.Headers) != 2 || tc.Headers["authorization"] != "Bearer abc" || tc.Headers["x-tenant"] != "edge" {
		t.Errorf("tracing config: %+v", tc)
	}
}

// TestConfigValidatedAfterLayering: the config is validated once, after the
// file, the environment and the flags are merged, so a file may rely on the
// environment for part of a section (the DaemonSet enables DMI in its file
// and names the device from the pod's environment); and a rejected value is
// traced to where it was set.
func TestConfigValidatedAfterLayering(t *testing.T) {
	write := func(content string) string {
		p := filepath.Join(t.TempDir(), "edge-node.yaml")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("file enables dmi, environment names the device", func(t *testing.T) {
		p := write("kubeedge:\n  dmi: {enabled: true}\n")
		t.Setenv("EDGE_NODE_KUBEEDGE_DEVICE_NAME", "edge-7")
		cmd := newRootCommand()
		if err := cmd.ParseFlags(nil); err != nil {
			t.Fatal(err)
		}
		cfg, err := resolveConfig(cmd.Flags(), p)
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.KubeEdge.DMI.Enabled || cfg.KubeEdge.DMI.DeviceName != "edge-7" {
			t.Errorf("dmi: %+v", cfg.KubeEdge.DMI)
		}
	})
	for _, tc := range []struct {
		name string
		file string // "" for none
		env  []string
		args []string
		want []string // each must be in the error
	}{
		{"bad value in the file", "log: {level: loud}\n", nil, nil, []string{"log.level", "loud", "edge-node.yaml"}},
		{"bad value in the environment", "", []string{"EDGE_NODE_LOG_LEVEL=loud"}, nil, []string{"log.level", "EDGE_NODE_LOG_LEVEL"}},
		{"bad value in a flag", "", nil, []string{"--log-level", "loud"}, []string{"log.level", "--log-level"}},
		{"flag overrides a bad environment value", "", []string{"EDGE_NODE_LOG_LEVEL=loud"}, []string{"--log-level", "shouty"}, []string{"--log-level", "shouty"}},
		{"dmi enabled from the environment, no device name", "", []string{"EDGE_NODE_KUBEEDGE_DMI=true"}, nil, []string{"kubeedge.dmi", "device_name", "EDGE_NODE_KUBEEDGE_DMI"}},
		{"dmi enabled in the file, device name missing everywhere", "kubeedge: {dmi: {enabled: true}}\n", nil, nil, []string{"kubeedge.dmi", "device_name", "edge-node.yaml"}},
		{"groups from the environment", "", []string{"EDGE_NODE_GROUPS=a,#"}, nil, []string{"cloud.groups", "EDGE_NODE_GROUPS"}},
		{"tracing endpoint from the environment", "", []string{"EDGE_NODE_TRACING_ENDPOINT=grpc://c:4317"}, nil, []string{"tracing.endpoint", "EDGE_NODE_TRACING_ENDPOINT"}},
		{"tracing sample ratio flag", "", nil, []string{"--tracing-sample-ratio", "2"}, []string{"tracing.sample_ratio", "--tracing-sample-ratio"}},
		{"tracing ca file for an http endpoint in the file", "tracing: {endpoint: \"http://c:4318\"}\n", nil, []string{"--tracing-ca-file", "/ca.pem"},
			[]string{"ca_file", "tracing.ca_file from --tracing-ca-file", "tracing.endpoint from", "edge-node.yaml"}},
		{"tracing headers from the environment not name=value", "", []string{"EDGE_NODE_TRACING_HEADERS=Bearer abc"}, nil, []string{"EDGE_NODE_TRACING_HEADERS", "name=value"}},
		{"tracing header name from the environment", "", []string{"EDGE_NODE_TRACING_HEADERS=x y=1"}, nil, []string{"tracing.headers"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, kv := range tc.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			p := ""
			if tc.file != "" {
				p = write(tc.file)
			}
			cmd := newRootCommand()
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			_, err := resolveConfig(cmd.Flags(), p)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
