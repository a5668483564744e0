package node

import (
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/status"

	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
	pb "github.com/edgeai/edge-node/node/kserve/tritongrpc/inferencepb"
	"github.com/edgeai/edge-node/sync/wire"
)

// Triton's model configuration, statistics and repository control against
// the real node (store, serving owner, reconciler, ONNX Runtime): an unload
// holds against the desired state it saw, a newer generation naming the
// model ends it, and a load hands the model back; outputs after each step
// are the raw onnxruntime_go ones.
func TestNodeTritonRepositoryControlAndStats(t *testing.T) {
	repo := t.TempDir()
	addToRepo(t, repo, "silero_vad", "1", modelBytes(t, "silero_vad", ""))
	cfg := testConfig(t, t.TempDir(), repo)
	cfg.RepositoryControl = true
	n := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	if err := n.ApplyDesired(ctx, "kubeedge", 1, map[string]wire.ModelSpec{"silero_vad": {Version: "1"}}); err != nil {
		t.Fatal(err)
	}

	code, _, body := call(t, "GET", n.url+"/v2/models/silero_vad/config", nil, nil)
	if code != 200 || !strings.Contains(string(body), `"platform":"onnxruntime_onnx","backend":"onnxruntime"`) ||
		!strings.Contains(string(body), `{"name":"sr","data_type":"TYPE_INT64","format":"FORMAT_NONE","dims":[]`) {
		t.Fatalf("config: %d %s", code, body)
	}
	inferAndCompare(t, n.url, "silero_vad", "silero_vad", sileroInputs())
	// A gzip'd JSON request, and a client that writes a whole 4.9 MB body
	// naming an unknown model before reading: it gets Triton's message.
	var zbuf bytes.Buffer
	zw := stdgzip.NewWriter(&zbuf)
	zw.Write(kservetest.JSONRequest(t, "", sileroInputs(), nil, false))
	zw.Close()
	if code, _, body := call(t, "POST", n.url+"/v2/models/silero_vad/infer", http.Header{"Content-Encoding": {"gzip"}}, zbuf.Bytes()); code != 200 {
		t.Fatalf("gzip request: %d %s", code, body)
	}
	big, hl := binaryRequest(t, "", detInput(640), false)
	resp, got := kservetest.RawExchange(t, n.Addr(), "/v2/models/nope/infer", http.Header{headerContentLength: {strconv.Itoa(hl)}}, big)
	if resp.StatusCode != 404 || !strings.Contains(string(got), "Request for unknown model: 'nope' is not found") {
		t.Fatalf("early error after a whole 4.9 MB body: %d %s", resp.StatusCode, got)
	}
	var st struct {
		ModelStats []struct {
			Name, Version  string
			InferenceCount uint64 `json:"inference_count"`
			ExecutionCount uint64 `json:"execution_count"`
			InferenceStats map[string]struct {
				Count uint64 `json:"count"`
			} `json:"inference_stats"`
		} `json:"model_stats"`
	}
	code, _, body = call(t, "GET", n.url+"/v2/models/stats", nil, nil)
	if err := json.Unmarshal(body, &st); code != 200 || err != nil || len(st.ModelStats) != 1 ||
		st.ModelStats[0].InferenceCount != 2 || st.ModelStats[0].InferenceStats["success"].Count != 2 {
		t.Fatalf("stats: %d %s", code, body)
	}

	post := func(path string) {
		t.Helper()
		if code, _, body := call(t, "POST", n.url+path, nil, nil); code != 200 {
			t.Fatalf("POST %s: %d %s", path, code, body)
		}
	}
	unloaded := func() bool {
		code, _, body := call(t, "POST", n.url+"/v2/models/silero_vad/infer", nil, []byte(`{"inputs":[]}`))
		return code == 404 && strings.Contains(string(body), "Request for unknown model: 'silero_vad'")
	}
	post("/v2/repository/models/silero_vad/unload")
	if !unloaded() {
		t.Fatal("silero_vad still serves after unload")
	}
	if mi := adminModel(t, n.url, "silero_vad"); mi.Active != "1" || mi.Override == nil || mi.Override.Action != "unload" {
		t.Fatalf("after unload: Active %q override %+v", mi.Active, mi.Override)
	}
	_, _, body = call(t, "POST", n.url+"/v2/repository/index", nil, nil)
	if !strings.Contains(string(body), `{"name":"silero_vad","version":"1","state":"UNAVAILABLE","reason":"unloaded"}`) {
		t.Errorf("index after unload: %s", body)
	}
	// A newer generation naming the model is a newer fleet decision: it
	// ends the unload and the model serves again.
	if err := n.ApplyDesired(ctx, "kubeedge", 2, map[string]wire.ModelSpec{"silero_vad": {Version: "1"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "silero_vad served again after a newer desired generation", func() bool { return !unloaded() })
	inferAndCompare(t, n.url, "silero_vad", "silero_vad", sileroInputs())
	if mi := adminModel(t, n.url, "silero_vad"); mi.Override != nil {
		t.Fatalf("override after a newer generation: %+v", mi.Override)
	}

	post("/v2/repository/models/silero_vad/unload")
	if !unloaded() {
		t.Fatal("silero_vad still serves after the second unload")
	}
	post("/v2/repository/models/silero_vad/load")
	inferAndCompare(t, n.url, "silero_vad", "silero_vad", sileroInputs())
	if mi := adminModel(t, n.url, "silero_vad"); mi.Override != nil || mi.Active != "1" {
		t.Fatalf("after load: Active %q override %+v", mi.Active, mi.Override)
	}
	code, _, body = call(t, "POST", n.url+"/v2/repository/models/nope/load", nil, nil)
	if code != http.StatusNotFound || !strings.Contains(string(body), "failed to load 'nope'") {
		t.Errorf("load of an unknown model: %d %s", code, body)
	}
}

// The gRPC service of the real node, with a client generated from the same
// .proto: inference gives the raw onnxruntime_go bytes, statistics count
// gRPC and REST requests of a version together, unload through gRPC is the
// owner's (the REST frontend then does not serve the model either), load
// brings it back; the service stops with the node.
func TestNodeGRPC(t *testing.T) {
	repo := t.TempDir()
	addToRepo(t, repo, "silero_vad", "1", modelBytes(t, "silero_vad", ""))
	cfg := testConfig(t, t.TempDir(), repo)
	cfg.RepositoryControl = true
	n := startNode(t, cfg)
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewGRPCInferenceServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()

	ins := sileroInputs()
	want := inferencetest.RawRun(t, inferencetest.ModelPath(t, "silero_vad"), ins)
	req := &pb.ModelInferRequest{ModelName: "silero_vad"}
	for _, in := range ins {
		req.Inputs = append(req.Inputs, &pb.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.DataType.String(), Shape: in.Shape})
		req.RawInputContents = append(req.RawInputContents, in.Data)
	}
	infer := func() {
		t.Helper()
		resp, err := c.ModelInfer(ctx, req, grpc.UseCompressor(gzip.Name))
		if err != nil {
			t.Fatal(err)
		}
		if resp.ModelVersion != "1" || len(resp.RawOutputContents) != len(want) {
			t.Fatalf("response %v", resp)
		}
		for i := range want {
			if resp.Outputs[i].Name != want[i].Name || !bytes.Equal(resp.RawOutputContents[i], want[i].Data) {
				t.Errorf("output %s differs from the raw onnxruntime_go run", want[i].Name)
			}
		}
	}
	infer()
	inferAndCompare(t, n.url, "silero_vad", "silero_vad", ins)
	st, err := c.ModelStatistics(ctx, &pb.ModelStatisticsRequest{Name: "silero_vad", Version: "1"})
	if err != nil || len(st.ModelStats) != 1 || st.ModelStats[0].InferenceStats.Success.Count != 2 {
		t.Fatalf("statistics after one gRPC and one REST request: %v %v", st, err)
	}
	if r, err := c.ServerReady(ctx, &pb.ServerReadyRequest{}); err != nil || !r.Ready {
		t.Fatalf("ready: %v %v", r, err)
	}
	if r, err := c.ModelConfig(ctx, &pb.ModelConfigRequest{Name: "silero_vad"}); err != nil || r.Config.Platform != "onnxruntime_onnx" ||
		r.Config.Input[1].Name != "sr" || r.Config.Input[1].DataType != pb.DataType_TYPE_INT64 {
		t.Fatalf("model config: %v %v", r, err)
	}
	if _, err := c.RepositoryModelUnload(ctx, &pb.RepositoryModelUnloadRequest{ModelName: "silero_vad"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ModelInfer(ctx, req); status.Code(err) != codes.NotFound {
		t.Fatalf("gRPC infer after unload: %v", err)
	}
	if code, _, _ := call(t, "GET", n.url+"/v2/models/silero_vad/ready", nil, nil); code != http.StatusNotFound {
		t.Fatalf("REST ready after a gRPC unload: %d", code)
	}
	if _, err := c.RepositoryModelLoad(ctx, &pb.RepositoryModelLoadRequest{ModelName: "silero_vad"}); err != nil {
		t.Fatal(err)
	}
	infer()
	n.stop(t)
	if _, err := c.ServerLive(ctx, &pb.ServerLiveRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("gRPC after the node stopped: %v", err)
	}
}

// The REST and gRPC APIs on Unix-domain sockets with the configured mode:
// inference through both gives the raw onnxruntime_go bytes; a stale socket
// file is replaced, a regular file at the path is refused and kept; the
// files are gone after the node stops.
func TestNodeUnixSockets(t *testing.T) {
	repo, dir := t.TempDir(), t.TempDir()
	addToRepo(t, repo, "silero_vad", "1", modelBytes(t, "silero_vad", ""))
	cfg := testConfig(t, t.TempDir(), repo)
	cfg.HTTPSocket, cfg.GRPCSocket, cfg.SocketMode = filepath.Join(dir, "http.sock"), filepath.Join(dir, "grpc.sock"), "0600"

	// A stale socket from an earlier run (nothing listens on it).
	stale, err := net.Listen("unix", cfg.GRPCSocket)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	// A regular file where a socket should go is refused and kept.
	bad := cfg
	bad.HTTPSocket = filepath.Join(dir, "not-a-socket")
	if err := os.WriteFile(bad.HTTPSocket, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newNode(context.Background(), bad, testLogger(t), inferencetest.Env(t)); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("a regular file at http_socket: %v", err)
	}
	if b, err := os.ReadFile(bad.HTTPSocket); err != nil || string(b) != "keep me" {
		t.Fatalf("the regular file was touched: %q %v", b, err)
	}

	n := startNode(t, cfg)
	for _, p := range []string{cfg.HTTPSocket, cfg.GRPCSocket} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want a socket with mode 0600", p, fi.Mode(), err)
		}
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", cfg.HTTPSocket)
	}}}
	ins := sileroInputs()
	want := inferencetest.RawRun(t, inferencetest.ModelPath(t, "silero_vad"), ins)
	body, hl := binaryRequest(t, "", ins, true)
	req, _ := http.NewRequest("POST", "http://node/v2/models/silero_vad/infer", bytes.NewReader(body))
	req.Header.Set(headerContentLength, strconv.Itoa(hl))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("REST over the socket: %d %s", resp.StatusCode, got)
	}
	for i, o := range parseResponse(t, resp.Header, got).Outputs {
		if !bytes.Equal(o.Raw, want[i].Data) {
			t.Errorf("REST over the socket: output %s differs from the raw onnxruntime_go run", o.Name)
		}
	}
	conn, err := grpc.NewClient("unix://"+cfg.GRPCSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	greq := &pb.ModelInferRequest{ModelName: "silero_vad"}
	for _, in := range ins {
		greq.Inputs = append(greq.Inputs, &pb.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.DataType.String(), Shape: in.Shape})
		greq.RawInputContents = append(greq.RawInputContents, in.Data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	gresp, err := pb.NewGRPCInferenceServiceClient(conn).ModelInfer(ctx, greq)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if !bytes.Equal(gresp.RawOutputContents[i], want[i].Data) {
			t.Errorf("gRPC over the socket: output %s differs from the raw onnxruntime_go run", want[i].Name)
		}
	}
	n.stop(t)
	for _, p := range []string{cfg.HTTPSocket, cfg.GRPCSocket} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after stop: %v, want it removed", p, err)
		}
	}
}

// System shared memory on the real node: one registry behind both
// frontends — a region registered over gRPC serves a REST inference that
// reads its inputs from it and writes its outputs into it (the raw
// onnxruntime_go bytes), and a REST unregister empties the gRPC status.
func TestNodeSharedMemory(t *testing.T) {
	repo := t.TempDir()
	addToRepo(t, repo, "silero_vad", "1", modelBytes(t, "silero_vad", ""))
	n := startNode(t, testConfig(t, t.TempDir(), repo))
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewGRPCInferenceServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()

	ins := sileroInputs()
	want := inferencetest.RawRun(t, inferencetest.ModelPath(t, "silero_vad"), ins)
	key := fmt.Sprintf("/edge-node-test-%d", os.Getpid())
	path := filepath.Join("/dev/shm", key[1:])
	defer os.Remove(path)
	var data []byte
	for _, in := range ins {
		data = append(data, in.Data...)
	}
	inSize := len(data)
	data = append(data, make([]byte, 2048)...)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SystemSharedMemoryRegister(ctx, &pb.SystemSharedMemoryRegisterRequest{Name: "io", Key: key, ByteSize: uint64(len(data))}); err != nil {
		t.Fatal(err)
	}
	type obj = map[string]any
	var inputs, outputs []obj
	off := 0
	for _, in := range ins {
		inputs = append(inputs, obj{"name": in.Name, "datatype": in.DataType.String(), "shape": in.Shape,
			"parameters": obj{"shared_memory_region": "io", "shared_memory_offset": off, "shared_memory_byte_size": len(in.Data)}})
		off += len(in.Data)
	}
	for _, w := range want {
		outputs = append(outputs, obj{"name": w.Name, "parameters": obj{"shared_memory_region": "io", "shared_memory_offset": off, "shared_memory_byte_size": len(w.Data)}})
		off += len(w.Data)
	}
	body, _ := json.Marshal(obj{"inputs": inputs, "outputs": outputs})
	if code, _, resp := call(t, "POST", n.url+"/v2/models/silero_vad/infer", nil, body); code != 200 || !strings.Contains(string(resp), `"shared_memory_region":"io"`) {
		t.Fatalf("infer from shared memory: %d %s", code, resp)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off = inSize
	for _, w := range want {
		if !bytes.Equal(got[off:off+len(w.Data)], w.Data) {
			t.Errorf("output %s in shared memory differs from the raw onnxruntime_go run", w.Name)
		}
		off += len(w.Data)
	}
	if code, _, resp := call(t, "POST", n.url+"/v2/systemsharedmemory/region/io/unregister", nil, nil); code != 200 {
		t.Fatalf("REST unregister: %d %s", code, resp)
	}
	if st, err := c.SystemSharedMemoryStatus(ctx, &pb.SystemSharedMemoryStatusRequest{}); err != nil || len(st.Regions) != 0 {
		t.Fatalf("gRPC status after a REST unregister: %v %v", st, err)
	}
}
