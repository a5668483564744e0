package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/fleetsim"
	"github.com/edgeai/edge-node/sync/kube/api/v1alpha1"
	"github.com/edgeai/edge-node/sync/kube/kubetest"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
)

// TestMeasureScale times a ModelVersion on EDGE_KUBE_SCALE simulated nodes
// (make test-kube-scale): apply → the first desired-state publish, and
// apply → Active on every node (waves 1,10,50,100 %, tick 1 s, the
// controller's defaults), and the edge-controller process's CPU and peak
// memory (it runs as its own process, built from this package). Figures in
// the log; no timed assertion.
func TestMeasureScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("EDGE_KUBE_SCALE"))
	if n <= 0 {
		t.Skip("set EDGE_KUBE_SCALE=N (make test-kube-scale)")
	}
	bin := filepath.Join(t.TempDir(), "edge-controller")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	x := newFixture(t, ctx, n, fleetsim.Profile{Download: 500 * time.Millisecond},
		brokertest.Options{GlobalConf: []string{"max_inflight_messages 0", "max_queued_messages 100000"}})
	c := x.client
	ns := kubetest.Namespace(t, c, "scale")
	l := mqttlinktest.Connect(t, x.broker.URL(), "watcher")
	var mu sync.Mutex
	var firstDesired time.Time
	if err := l.Subscribe(ctx, func(string, []byte) {
		mu.Lock()
		if firstDesired.IsZero() {
			firstDesired = time.Now()
		}
		mu.Unlock()
	}, x.tp.Root+"/nodes/+/desired"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--broker", x.broker.URL(), "--kubeconfig", x.kubeconfig, "--namespace", ns,
		"--leader-election-namespace", ns, "--health-addr", "0", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	testwait.For(t, "edge-controller leads", func() bool {
		var lease coordinationv1.Lease
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "edge-controller"}, &lease) == nil &&
			lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != ""
	}, time.Minute)
	cpu0 := procCPU(t, cmd.Process.Pid)
	applied := time.Now()
	mv := &v1alpha1.ModelVersion{ObjectMeta: metav1.ObjectMeta{Name: "scale", Namespace: ns},
		Spec: v1alpha1.ModelVersionSpec{Model: "det", Version: "2", TrafficWeight: 100, Waves: []int32{1, 10, 50, 100}}}
	if err := c.Create(ctx, mv); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "every node Active", func() bool {
		if err := c.Get(ctx, client.ObjectKeyFromObject(mv), mv); err != nil {
			t.Fatal(err)
		}
		return mv.Status.Phase == v1alpha1.PhaseActive
	}, 8*time.Minute)
	done := time.Since(applied)
	cpu := procCPU(t, cmd.Process.Pid) - cpu0
	mu.Lock()
	first := firstDesired.Sub(applied)
	mu.Unlock()
	t.Logf("%d simulated nodes, waves 1,10,50,100%%, download 500 ms: apply → first desired publish %v, → Active on %d/%d nodes %v; "+
		"edge-controller CPU during the rollout %v (%.0f%% of one core), peak RSS %s",
		n, first.Round(time.Millisecond), mv.Status.Active, mv.Status.Nodes, done.Round(time.Millisecond),
		cpu.Round(time.Millisecond), 100*cpu.Seconds()/done.Seconds(), procStatus(t, cmd.Process.Pid, "VmHWM"))
}

// procCPU is process pid's user + system CPU time (/proc/pid/stat, fields
// 14 and 15, in clock ticks of 10 ms).
func procCPU(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(fields[11], 10, 64)
	k, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}

func procStatus(t *testing.T, pid int, key string) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
