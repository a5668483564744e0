package kserve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference/inferencetest"
	"github.com/edgeai/edge-node/node/kserve/kservetest"
	"github.com/edgeai/edge-node/node/kserve/sysshm"
)

// The test binary doubles as the application process of the shared-memory
// tests: EDGE_SHM_HELPER=write:<path> writes silero_vad's inputs, one after
// the other, into a new /dev/shm file; =race:<url>:<name>:<key> registers
// and unregisters a region through the REST API in a loop.
func TestMain(m *testing.M) {
	if mode, arg, ok := strings.Cut(os.Getenv("EDGE_SHM_HELPER"), ":"); ok {
		os.Exit(shmHelper(mode, arg))
	}
	os.Exit(m.Run())
}

func shmHelper(mode, arg string) int {
	switch mode {
	case "write":
		var b []byte
		for _, in := range kservetest.SileroInputs() {
			b = append(b, in.Data...)
		}
		if err := os.WriteFile(arg, b, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case "race":
		url, rest, _ := strings.Cut(arg, "|")
		name, key, _ := strings.Cut(rest, "|")
		for i := 0; i < 100; i++ {
			body := fmt.Sprintf(`{"key":%q,"offset":0,"byte_size":4096}`, key)
			for _, call := range []struct{ path, body string }{
				{"/v2/systemsharedmemory/region/" + name + "/register", body},
				{"/v2/systemsharedmemory/region/" + name + "/unregister", ""},
			} {
				resp, err := http.Post(url+call.path, "application/json", strings.NewReader(call.body))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					return 1
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				// 200, or the other process's registration in the way (409) or gone (404).
				if resp.StatusCode != 200 && resp.StatusCode != 409 && resp.StatusCode != 404 {
					fmt.Fprintln(os.Stderr, call.path, resp.StatusCode)
					return 1
				}
			}
		}
		return 0
	}
	return 2
}

// shmKey is a /dev/shm key unique to this test process, removed at the end.
func shmKey(t *testing.T, what string) (key, path string) {
	key = fmt.Sprintf("/edge-kserve-test-%d-%s", os.Getpid(), what)
	path = filepath.Join("/dev/shm", key[1:])
	t.Cleanup(func() { os.Remove(path) })
	return key, path
}

func newShmHandler(t *testing.T, budget int64) (http.Handler, *sysshm.Registry) {
	reg := sysshm.New(sysshm.Options{BudgetBytes: budget}, zerolog.Nop())
	t.Cleanup(reg.Close)
	h, _ := newTestHandler(t, newRouterBackend(t), func(o *Options) { o.SharedMemory = reg })
	return h, reg
}

func post(t *testing.T, h http.Handler, path, body string) (int, string) {
	t.Helper()
	w := do(h, "POST", path, nil, []byte(body))
	return w.Code, w.Body.String()
}

// A second process writes silero_vad's inputs into /dev/shm; the node
// registers the region, infers from it and writes the outputs into
// another region, where they are the raw onnxruntime_go bytes.
func TestSharedMemoryInfer(t *testing.T) {
	h, _ := newShmHandler(t, 1<<20)
	inKey, inPath := shmKey(t, "in")
	outKey, outPath := shmKey(t, "out")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "EDGE_SHM_HELPER=write:"+inPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper process: %v %s", err, out)
	}
	ins := kservetest.SileroInputs()
	want := inferencetest.RawRun(t, inferencetest.ModelPath(t, "silero_vad"), ins)
	outSize := 0
	for _, w := range want {
		outSize += len(w.Data)
	}
	if err := os.WriteFile(outPath, make([]byte, outSize+100), 0o600); err != nil {
		t.Fatal(err)
	}
	inSize := 0
	for _, in := range ins {
		inSize += len(in.Data)
	}
	for _, r := range []struct {
		name, key string
		size      int
	}{{"in", inKey, inSize}, {"out", outKey, outSize + 100}} {
		if code, body := post(t, h, "/v2/systemsharedmemory/region/"+r.name+"/register", fmt.Sprintf(`{"key":%q,"offset":0,"byte_size":%d}`, r.key, r.size)); code != 200 {
			t.Fatalf("register %s: %d %s", r.name, code, body)
		}
	}
	w := do(h, "GET", "/v2/systemsharedmemory/status", nil, nil)
	if w.Code != 200 || !strings.Contains(w.Body.String(), fmt.Sprintf(`{"name":"in","key":%q,"offset":0,"byte_size":%d}`, inKey, inSize)) {
		t.Fatalf("status: %d %s", w.Code, w.Body)
	}
	type ref = map[string]any
	var inputs, outputs []ref
	off := 0
	for _, in := range ins {
		inputs = append(inputs, ref{"name": in.Name, "datatype": in.DataType.String(), "shape": in.Shape,
			"parameters": ref{"shared_memory_region": "in", "shared_memory_offset": off, "shared_memory_byte_size": len(in.Data)}})
		off += len(in.Data)
	}
	off = 0
	for _, o := range want {
		outputs = append(outputs, ref{"name": o.Name, "parameters": ref{"shared_memory_region": "out", "shared_memory_offset": off, "shared_memory_byte_size": len(o.Data)}})
		off += len(o.Data)
	}
	body, _ := json.Marshal(ref{"inputs": inputs, "outputs": outputs})
	w = do(h, "POST", "/v2/models/silero_vad/infer", nil, body)
	if w.Code != 200 {
		t.Fatalf("infer: %d %s", w.Code, w.Body)
	}
	if !strings.Contains(w.Body.String(), `{"name":"output","datatype":"FP32","shape":[1,1],"parameters":{"shared_memory_region":"out","shared_memory_byte_size":4}}`) || strings.Contains(w.Body.String(), `"data"`) {
		t.Errorf("response: %s", w.Body)
	}
	got, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	off = 0
	for _, o := range want {
		if !bytes.Equal(got[off:off+len(o.Data)], o.Data) {
			t.Errorf("output %s in shared memory differs from the raw onnxruntime_go run", o.Name)
		}
		off += len(o.Data)
	}
	if code, body := post(t, h, "/v2/systemsharedmemory/unregister", ""); code != 200 {
		t.Fatalf("unregister all: %d %s", code, body)
	}
	if w := do(h, "GET", "/v2/systemsharedmemory/status", nil, nil); w.Body.String() != "[]" {
		t.Errorf("status after unregister: %s", w.Body)
	}
}

// Bad registrations and bad tensor references: each gets its status and a
// message naming the problem; nothing crashes, the budget holds.
func TestSharedMemoryRejects(t *testing.T) {
	h, _ := newShmHandler(t, 12288)
	off, _ := newTestHandler(t, newRouterBackend(t), nil)
	key, path := shmKey(t, "bad")
	if err := os.WriteFile(path, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	goneKey, gonePath := shmKey(t, "gone")
	if err := os.WriteFile(gonePath, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := func(name, _ string) string { return "/v2/systemsharedmemory/region/" + name + "/register" }
	for _, r := range []struct{ name, body string }{
		{"r", fmt.Sprintf(`{"key":%q,"offset":0,"byte_size":4096}`, key)},
		{"gone", fmt.Sprintf(`{"key":%q,"byte_size":4096}`, goneKey)},
	} {
		if code, body := post(t, h, reg(r.name, r.body), r.body); code != 200 {
			t.Fatalf("register %s: %d %s", r.name, code, body)
		}
	}
	if err := os.Remove(gonePath); err != nil {
		t.Fatal(err)
	}
	silero := func(params string) string {
		return `{"inputs":[{"name":"input","shape":[1,512],"datatype":"FP32","parameters":{` + params + `}},` +
			`{"name":"sr","shape":[],"datatype":"INT64","data":[16000]},` +
			`{"name":"h","shape":[2,1,64],"datatype":"FP32","data":` + zeros(128) + `},` +
			`{"name":"c","shape":[2,1,64],"datatype":"FP32","data":` + zeros(128) + `}]}`
	}
	for _, tc := range []struct {
		name   string
		h      http.Handler
		path   string
		body   string
		status int
		msg    string
	}{
		{"register: not JSON", h, reg("x", ""), `key`, 400, "invalid shared memory register request"},
		{"register: unknown member", h, reg("x", ""), fmt.Sprintf(`{"key":%q,"byte_size":1,"size":1}`, key), 400, "unknown field"},
		{"register: no byte_size", h, reg("x", ""), fmt.Sprintf(`{"key":%q}`, key), 400, `needs "key" and "byte_size"`},
		{"register: negative offset", h, reg("x", ""), fmt.Sprintf(`{"key":%q,"offset":-1,"byte_size":1}`, key), 400, "invalid shared memory register request"},
		{"register: trailing data", h, reg("x", ""), fmt.Sprintf(`{"key":%q,"byte_size":1}]`, key), 400, "data after the JSON object"},
		{"register: path traversal", h, reg("x", ""), `{"key":"/../etc/passwd","byte_size":1}`, 400, "no path separators"},
		{"register: no such key", h, reg("x", ""), `{"key":"/edge-no-such-region","byte_size":1}`, 404, "no such file /dev/shm/edge-no-such-region"},
		{"register: past the end of the file", h, reg("x", ""), fmt.Sprintf(`{"key":%q,"offset":8000,"byte_size":193}`, key), 400, "offset 8000 + byte_size 193 is past the end"},
		{"register: twice", h, reg("r", ""), fmt.Sprintf(`{"key":%q,"byte_size":1}`, key), 409, `"r" is already registered`},
		{"register: over the budget", h, reg("big", ""), fmt.Sprintf(`{"key":%q,"byte_size":8192}`, key), 409, "would pass the budget of 12288"},
		{"unregister: unknown", h, "/v2/systemsharedmemory/region/nope/unregister", "", 404, `"nope" is not registered`},
		{"cuda shared memory", h, "/v2/cudasharedmemory/region/c/register", `{}`, 501, "CUDA shared memory is not supported"},
		{"infer: extension off", off, "/v2/models/silero_vad/infer", silero(`"shared_memory_region":"r","shared_memory_byte_size":2048`), 501, "system shared memory is not enabled"},
		{"infer: unknown region", h, "/v2/models/silero_vad/infer", silero(`"shared_memory_region":"nope","shared_memory_byte_size":2048`), 404, `"nope" is not registered`},
		{"infer: window past the region", h, "/v2/models/silero_vad/infer", silero(`"shared_memory_region":"r","shared_memory_offset":3000,"shared_memory_byte_size":2048`), 400, "offset 3000 + byte_size 2048 is past its 4096 bytes"},
		{"infer: size not the tensor's", h, "/v2/models/silero_vad/infer", silero(`"shared_memory_region":"r","shared_memory_byte_size":2044`), 400, "shared_memory_byte_size is 2044 but FP32 shape [1 512] needs 2048"},
		{"infer: no byte size", h, "/v2/models/silero_vad/infer", silero(`"shared_memory_region":"r"`), 400, "without shared_memory_byte_size"},
		{"infer: offset without region", h, "/v2/models/silero_vad/infer", strings.Replace(silero(`"shared_memory_offset":4`), `"parameters"`, `"data":`+zeros(512)+`,"parameters"`, 1), 400, "no shared_memory_region"},
		{"infer: negative offset", h, "/v2/models/silero_vad/infer", silero(`"shared_memory_region":"r","shared_memory_offset":-4,"shared_memory_byte_size":2048`), 400, "shared_memory_offset is negative"},
		{"infer: region and data", h, "/v2/models/silero_vad/infer", strings.Replace(silero(`"shared_memory_region":"r","shared_memory_byte_size":2048`), `"parameters"`, `"data":`+zeros(512)+`,"parameters"`, 1), 400, "also \"data\""},
		{"infer: region unlinked while registered", h, "/v2/models/silero_vad/infer", silero(`"shared_memory_region":"gone","shared_memory_byte_size":2048`), 404, "its file was removed; the registration was dropped"},
		{"infer: output window too small", h, "/v2/models/silero_vad/infer", strings.TrimSuffix(silero(`"shared_memory_region":"r","shared_memory_byte_size":2048`), "}") +
			`,"outputs":[{"name":"hn","parameters":{"shared_memory_region":"r","shared_memory_offset":2048,"shared_memory_byte_size":100}}]}`, 400, `output "hn" needs 512 bytes but its shared_memory_byte_size is 100`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, tc.h, tc.path, tc.body)
			var e struct{ Error string }
			if code != tc.status || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, tc.msg) {
				t.Fatalf("%d %s, want %d with %q", code, body, tc.status, tc.msg)
			}
		})
	}
	w := do(h, "GET", "/v2/systemsharedmemory/status", nil, nil)
	if w.Body.String() != fmt.Sprintf(`[{"name":"r","key":%q,"offset":0,"byte_size":4096}]`, key) {
		t.Errorf("status after the bad calls: %s", w.Body)
	}
	// Still serving, from shared memory too.
	if code, body := post(t, h, "/v2/models/silero_vad/infer", silero(`"shared_memory_region":"r","shared_memory_byte_size":2048`)); code != 200 {
		t.Fatalf("good request after the bad ones: %d %s", code, body)
	}
}

func zeros(n int) string {
	return "[" + strings.TrimSuffix(strings.Repeat("0,", n), ",") + "]"
}

// Two processes register and unregister the same region name through the
// REST API at once, against a budget of one region: clear statuses,
// nothing crashes, the budget holds, and the registry is empty after.
func TestSharedMemoryRacingProcesses(t *testing.T) {
	h, reg := newShmHandler(t, 4096)
	srv := httptest.NewServer(h)
	defer srv.Close()
	key, path := shmKey(t, "race")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := []string{"same", "other"}[i]
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "EDGE_SHM_HELPER=race:"+srv.URL+"|"+name+"|"+key)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("process %d: %v %s", i, err, out)
			}
		}(i)
	}
	wg.Wait()
	if st, err := reg.Status(""); err != nil || len(st) != 0 {
		t.Errorf("after both processes unregistered: %+v %v", st, err)
	}
}

// FuzzDecodeShmRegister: any register body is parsed or refused with a 400
// naming the problem; never a panic.
func FuzzDecodeShmRegister(f *testing.F) {
	for _, s := range []string{`{"key":"/a","offset":0,"byte_size":1}`, `{"key":"/a"}`, `{}`, `{"key":1}`,
		`{"key":"/a","byte_size":-1}`, `{"key":"/a","byte_size":18446744073709551615}`, `[]`, ``, `{"key":"/a","byte_size":1}{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _, _, err := decodeShmRegister(body)
		if err == nil {
			return
		}
		ae := toAPIError(err)
		if ae.status != http.StatusBadRequest || ae.msg == "" {
			t.Fatalf("%q: %d %q", body, ae.status, ae.msg)
		}
	})
}
