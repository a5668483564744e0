package node

import (
	"context"
	"errors"
	"math"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/kube"
	"github.com/edgeai/edge-node/sync/kube/api/v1alpha1"
	"github.com/edgeai/edge-node/sync/kube/kubetest"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
)

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

// Issue 16's acceptance path with real nodes: a ModelVersion for ppocr_cls
// v2 whose nodeSelector matches 2 of 3 real edge nodes, trafficWeight 20,
// applied to a real API server. The two download and verify the signed
// version, run a canary answering ~20 % of their requests (counted here,
// request by request, while each node's router carries the canary), pass
// their gates and go Active; the third never downloads it; the resource
// passes Progressing → Active with the counts.
func TestKubeModelVersionOnRealNodes(t *testing.T) {
	cfg := kubetest.Start(t)
	e := newCloudEnv(t)
	e.publish(e.key, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "v2"), nil)
	nodes := map[string]*runningNode{}
	for id, kind := range map[string]string{"n1": "camera", "n2": "camera", "n3": "gateway"} {
		repo := t.TempDir()
		addToRepo(t, repo, "ppocr_cls", "1", modelBytes(t, "ppocr_cls", ""))
		c := e.nodeConfig(t.TempDir(), repo, e.m.URL())
		c.Cloud.NodeID, c.Cloud.Labels = id, map[string]string{"edge-type": kind}
		nodes[id] = startNode(t, c)
	}
	scheme, err := kube.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	kc, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cloudDeadline)
	defer cancel()
	ns := kubetest.Namespace(t, kc, "real-nodes")
	mgr, err := kube.NewManager(cfg, mqttlinktest.Connect(t, e.m.URL(), "edge-controller"), kube.Options{Topics: cloudTopics,
		Identity: "test", Tick: 200 * time.Millisecond, Quiet: 300 * time.Millisecond, Namespaces: []string{ns}},
		zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	defer func() { stop(); <-done }()
	// Wait until every node reported its labels, so the selection sees all three.
	testwait.For(t, "three nodes report status", func() bool {
		for id := range nodes {
			if _, ok := e.statusOf(id); !ok {
				return false
			}
		}
		return true
	}, time.Minute)

	mv := &v1alpha1.ModelVersion{ObjectMeta: metav1.ObjectMeta{Name: "cls-v2", Namespace: ns},
		Spec: v1alpha1.ModelVersionSpec{Model: "ppocr_cls", Version: "2", TrafficWeight: 20, Waves: []int32{50, 100},
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"edge-type": "camera"}},
			Gates:        &v1alpha1.Gates{MinRequests: 100, MinDuration: &metav1.Duration{Duration: 2 * time.Second}, MaxErrorRate: "0.05"}}}
	if err := kc.Create(ctx, mv); err != nil {
		t.Fatal(err)
	}
	// Send requests to the two camera nodes until the resource is Active.
	canary := map[string][2]int{} // node → requests during its canary, answered by v2
	var phases []v1alpha1.Phase
	input := clsInput()
	testwait.For(t, "cls-v2 Active", func() bool {
		for _, id := range []string{"n1", "n2"} {
			n := nodes[id]
			for range 20 {
				before, _ := n.router.Traffic("ppocr_cls")
				v := inferResponse(t, n.url, "ppocr_cls", input).ModelVersion
				after, _ := n.router.Traffic("ppocr_cls")
				if before.Canary == "2" && after.Canary == "2" {
					c := canary[id]
					c[0]++
					if v == "2" {
						c[1]++
					}
					canary[id] = c
				}
			}
		}
		if err := kc.Get(ctx, client.ObjectKeyFromObject(mv), mv); err != nil {
			t.Fatal(err)
		}
		if p := mv.Status.Phase; p != "" && (len(phases) == 0 || phases[len(phases)-1] != p) {
			phases = append(phases, p)
		}
		return mv.Status.Phase == v1alpha1.PhaseActive
	}, 2*time.Minute)
	for _, id := range []string{"n1", "n2"} {
		c := canary[id]
		share := float64(c[1]) / float64(c[0])
		if tol := 4 * math.Sqrt(0.2*0.8/float64(c[0])); c[0] < 100 || math.Abs(share-0.2) > tol {
			t.Errorf("node %s: v2 answered %d of %d requests during its canary (%.3f), want 0.20 ± %.3f", id, c[1], c[0], share, tol)
		}
		if a := activeVersion(t, nodes[id].url, "ppocr_cls"); a != "2" {
			t.Errorf("node %s: Active %q, want 2", id, a)
		}
		t.Logf("node %s: v2 answered %d of %d requests during its canary (%.3f)", id, c[1], c[0], share)
	}
	if a := activeVersion(t, nodes["n3"].url, "ppocr_cls"); a != "1" {
		t.Errorf("unselected n3: Active %q", a)
	}
	if _, err := nodes["n3"].store.Version(ctx, "ppocr_cls", "2"); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("unselected n3 has ppocr_cls/2: %v", err)
	}
	st := mv.Status
	if st.Nodes != 2 || st.Active != 2 || len(phases) < 2 || phases[0] != v1alpha1.PhaseProgressing {
		t.Errorf("phases %v, status %+v", phases, st)
	}
	t.Logf("phases %v; %s nodes, waves %+v", phases, st.Progress, st.Waves)
}
