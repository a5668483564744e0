package transfer

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestMeasureThroughput measures a 100 MB transfer through local mosquitto
// against mosquitto_pub -f of the same bytes to mosquitto_sub. It logs
// figures and asserts only that the transfer is complete and correct.
//
//	EDGEAI_MEASURE=1 go test -run Measure -v -timeout 600s ./sync/transfer/
func TestMeasureThroughput(t *testing.T) {
	if os.Getenv("EDGEAI_MEASURE") == "" {
		t.Skip("set EDGEAI_MEASURE=1 to measure")
	}
	size := 100 << 20
	e := newEnv(t)
	data := pseudoRandom(100, size)
	raw := filepath.Join(t.TempDir(), "raw.bin")
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}

	// Baseline: one 100 MB message, mosquitto_pub -f -> mosquitto_sub.
	port := fmt.Sprint(e.m.Port)
	sub := exec.Command("mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t", "bench/raw", "-C", "1", "-q", "1")
	sub.Stdout = nil
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let it subscribe (measurement only)
	start := time.Now()
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-t", "bench/raw", "-q", "1", "-f", raw).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	pubDone := time.Since(start)
	if err := sub.Wait(); err != nil {
		t.Fatalf("mosquitto_sub: %v", err)
	}
	baseline := time.Since(start)

	// Ours: publish (chunks + manifest), then a node fetches into the model store.
	start = time.Now()
	man, pst := e.publish("1", data, nil)
	pubTime := time.Since(start)
	n := e.node(e.m.URL(), t.TempDir(), nil)
	m := e.fetchManifest(n, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start = time.Now()
	res, err := n.fetcher.Fetch(ctx, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	fetchTime := time.Since(start)
	checkFiles(t, n.store, m, nil)
	mb := float64(size) / (1 << 20)
	t.Logf("100 MiB, %d chunks (avg %d KiB)", len(man.Files[0].Chunks), man.Files[0].Size/int64(len(man.Files[0].Chunks))>>10)
	t.Logf("baseline mosquitto_pub -f -> mosquitto_sub: %.2fs (pub returned after %.2fs) = %.1f MiB/s", baseline.Seconds(), pubDone.Seconds(), mb/baseline.Seconds())
	t.Logf("edgectl publish (chunk+sign+publish, QoS1 pipelined 16): %.2fs = %.1f MiB/s", pubTime.Seconds(), mb/pubTime.Seconds())
	t.Logf("node fetch (window 16, verify, fsync per chunk): %.2fs = %.1f MiB/s; %+v", fetchTime.Seconds(), mb/fetchTime.Seconds(), res)
	t.Logf("ratios vs baseline: fetch %.2fx, publish+fetch %.2fx (publisher sent %d bytes)",
		fetchTime.Seconds()/baseline.Seconds(), (pubTime+fetchTime).Seconds()/baseline.Seconds(), pst.BytesSent)
}

// TestMeasureFineTune measures bytes moved for a fine-tuned real model.
//
//	python3 sync/transfer/testdata/finetune.py V1.onnx V2.onnx conv2d_421.w_0
//	EDGEAI_FT_V1=V1.onnx EDGEAI_FT_V2=V2.onnx go test -run MeasureFineTune -v ./sync/transfer/
func TestMeasureFineTune(t *testing.T) {
	p1, p2 := os.Getenv("EDGEAI_FT_V1"), os.Getenv("EDGEAI_FT_V2")
	if p1 == "" || p2 == "" {
		t.Skip("set EDGEAI_FT_V1 and EDGEAI_FT_V2 to two versions of a model")
	}
	v1, err := os.ReadFile(p1)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := os.ReadFile(p2)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	man1, res, pst2 := fineTune(t, e, v1, v2)
	t.Logf("v1 %d bytes in %d chunks; v2: node fetched %d chunks / %d bytes of %d (%.1f%%), %d bytes copied locally; publisher sent %d bytes",
		len(v1), len(man1.Files[0].Chunks), res.ChunksNetwork, res.BytesNetwork, res.BytesTotal,
		100*float64(res.BytesNetwork)/float64(res.BytesTotal), res.BytesLocal, pst2.BytesSent)
	// Whole publishes of v2 (nothing skipped), each under a new version.
	var took []time.Duration
	for i := 0; i < 5; i++ {
		_, st := e.publish(fmt.Sprintf("full%d", i), v2, nil)
		took = append(took, st.Elapsed)
	}
	slices.Sort(took)
	t.Logf("FIGURE full publish of v2 (%d chunks, %d bytes sent): median %v of %v", len(man1.Files[0].Chunks), len(v2), took[len(took)/2], took)
}
