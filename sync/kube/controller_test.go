package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/fleetsim"
	"github.com/edgeai/edge-node/sync/kube/api/v1alpha1"
	"github.com/edgeai/edge-node/sync/kube/kubetest"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
	"github.com/edgeai/edge-node/sync/wire"
)

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

type env struct {
	t   *testing.T
	cfg *rest.Config
	// How controllers run (default: the admin, leases and watch in ns).
	ctrlCfg    *rest.Config
	leaseNS    string
	namespaces []string
	client     client.Client
	ns         string
	broker     *brokertest.Mosquitto
	tp         wire.Topics
	fleet      *fleetsim.Fleet
}

// newEnv starts a namespace, a mosquitto and a simulated fleet of n nodes
// (labels(i)) running ppocr_cls version 1.
func newEnv(t *testing.T, n int, labels func(i int) map[string]string, p fleetsim.Profile) *env {
	cfg := kubetest.Start(t)
	scheme, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ns := kubetest.Namespace(t, c, t.Name())
	e := &env{t: t, cfg: cfg, client: c, ns: ns, broker: brokertest.StartMosquitto(t, brokertest.Options{}),
		tp: wire.Topics{Root: wire.DefaultRoot}, ctrlCfg: cfg, leaseNS: ns, namespaces: []string{ns}}
	// The API server outlives the test: its ModelVersions go with it, so a
	// later test's controller does not find them.
	// The controllers have stopped by then (their cleanups run first), so
	// the finalizers they put on are taken off here.
	t.Cleanup(func() {
		ctx := context.Background()
		if err := c.DeleteAllOf(ctx, &v1alpha1.ModelVersion{}, client.InNamespace(ns)); err != nil {
			t.Errorf("delete the ModelVersions of %s: %v", ns, err)
		}
		var l v1alpha1.ModelVersionList
		if err := c.List(ctx, &l, client.InNamespace(ns)); err != nil {
			t.Errorf("list the ModelVersions of %s: %v", ns, err)
		}
		for i := range l.Items {
			if mv := &l.Items[i]; len(mv.Finalizers) > 0 {
				mv.Finalizers = nil
				if err := c.Update(ctx, mv); err != nil && !apierrors.IsNotFound(err) {
					t.Errorf("remove the finalizers of %s: %v", mv.Name, err)
				}
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if n > 0 {
		e.fleet, err = fleetsim.Start(ctx, fleetsim.Config{BrokerURL: e.broker.URL(), Topics: e.tp, Nodes: n, Prefix: "n",
			Labels: labels, Initial: map[string]string{"ppocr_cls": "1"}, Profile: p}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.fleet.Close)
	}
	return e
}

// publish leaves a retained manifest for model/version on the broker. The
// simulated nodes do not download, so its content is not read: the
// controller checks only that the version is published.
func (e *env) publish(model, version string) {
	l := mqttlinktest.Connect(e.t, e.broker.URL(), "publisher-"+version)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Publish(ctx, e.tp.Manifest(model, version), true, []byte(`{"stand-in":"manifest"}`)); err != nil {
		e.t.Fatal(err)
	}
}

// controller starts a manager (its own MQTT session) until the returned
// stop is called or the test ends.
func (e *env) controller(name string, leader bool) (stop func()) {
	l := mqttlinktest.Connect(e.t, e.broker.URL(), "edge-controller-"+name)
	mgr, err := NewManager(e.ctrlCfg, l, Options{Topics: e.tp, Identity: name, Tick: 100 * time.Millisecond,
		Retry: 300 * time.Millisecond, Quiet: 300 * time.Millisecond, LeaderElection: leader,
		LeaderElectionNamespace: e.leaseNS, LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second,
		RetryPeriod: 200 * time.Millisecond, Namespaces: e.namespaces}, zerolog.New(zerolog.NewTestWriter(e.t)).Level(zerolog.WarnLevel).With().Str("replica", name).Logger())
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("manager %s: %v", name, err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

func (e *env) apply(mv *v1alpha1.ModelVersion) *v1alpha1.ModelVersion {
	e.t.Helper()
	mv.Namespace = e.ns
	if err := e.client.Create(context.Background(), mv); err != nil {
		e.t.Fatalf("create ModelVersion %s: %v", mv.Name, err)
	}
	return mv
}

func (e *env) get(name string) *v1alpha1.ModelVersion {
	e.t.Helper()
	var mv v1alpha1.ModelVersion
	if err := e.client.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: name}, &mv); err != nil {
		e.t.Fatal(err)
	}
	return &mv
}

// waitPhase waits for ModelVersion name to reach phase, and returns it and
// the phases it was seen in on the way.
func (e *env) waitPhase(name string, phase v1alpha1.Phase, timeout time.Duration) (*v1alpha1.ModelVersion, []v1alpha1.Phase) {
	e.t.Helper()
	var seen []v1alpha1.Phase
	var mv *v1alpha1.ModelVersion
	testwait.For(e.t, fmt.Sprintf("ModelVersion %s %s", name, phase), func() bool {
		mv = e.get(name)
		if p := mv.Status.Phase; p != "" && (len(seen) == 0 || seen[len(seen)-1] != p) {
			seen = append(seen, p)
		}
		return mv.Status.Phase == phase
	}, timeout)
	return mv, seen
}

// table is ModelVersion name as kubectl get shows it: the column names
// and the row of the API server's Table.
func (e *env) table(name string) ([]string, []any) {
	e.t.Helper()
	hc, err := rest.HTTPClientFor(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	req, err := http.NewRequest("GET", strings.TrimRight(e.cfg.Host, "/")+"/apis/edge.edgeai.dev/v1alpha1/namespaces/"+e.ns+"/modelversions/"+name, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tab metav1.Table
	if err := json.NewDecoder(resp.Body).Decode(&tab); err != nil || len(tab.Rows) != 1 {
		e.t.Fatalf("table of %s: %v, %d rows (HTTP %d)", name, err, len(tab.Rows), resp.StatusCode)
	}
	var cols []string
	for _, c := range tab.ColumnDefinitions {
		cols = append(cols, c.Name)
	}
	return cols, tab.Rows[0].Cells
}

func (e *env) desired(node string) wire.DesiredState {
	e.t.Helper()
	var d wire.DesiredState
	e.retained(e.tp.NodeDesired(node), &d)
	return d
}

// nodeStatus is the status node last reported (retained).
func (e *env) nodeStatus(node string) wire.Status {
	e.t.Helper()
	var s wire.Status
	e.retained(e.tp.Status(node), &s)
	return s
}

// retained decodes the message retained on topic into v (left as it is
// when there is none).
func (e *env) retained(topic string, v any) {
	e.t.Helper()
	// A session of its own, ended before the next read (one client id).
	cfg := mqttlink.DefaultConfig()
	cfg.BrokerURL, cfg.ClientID = e.broker.URL(), "reader"
	l, stop := mqttlinktest.Start(e.t, cfg, mqttlinktest.Options{})
	defer stop()
	mqttlinktest.WaitUp(e.t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := fleet.ReadRetained(ctx, l, topic, 300*time.Millisecond)
	if err != nil {
		e.t.Fatal(err)
	}
	if b, ok := got[topic]; ok {
		if err := json.Unmarshal(b, v); err != nil {
			e.t.Fatalf("%s: %v", topic, err)
		}
	}
}

// deleteAndWait deletes ModelVersion name and waits until the API server
// no longer has it (its finalizer removed).
func (e *env) deleteAndWait(name string) {
	e.t.Helper()
	e.delete(name)
	e.waitGone(name)
}

func (e *env) delete(name string) {
	e.t.Helper()
	mv := &v1alpha1.ModelVersion{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name}}
	if err := e.client.Delete(context.Background(), mv); err != nil {
		e.t.Fatalf("delete ModelVersion %s: %v", name, err)
	}
}

func (e *env) waitGone(name string) {
	e.t.Helper()
	ctx := context.Background()
	mv := &v1alpha1.ModelVersion{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name}}
	testwait.For(e.t, fmt.Sprintf("ModelVersion %s gone", name), func() bool {
		err := e.client.Get(ctx, client.ObjectKeyFromObject(mv), mv)
		if err != nil && !apierrors.IsNotFound(err) {
			e.t.Fatal(err)
		}
		return apierrors.IsNotFound(err)
	}, time.Minute)
}

// waitEvents waits until Events with each of reasons were recorded about
// ModelVersion name (the recorder writes them asynchronously).
func (e *env) waitEvents(name string, reasons ...string) {
	e.t.Helper()
	testwait.For(e.t, fmt.Sprintf("events %v about %s", reasons, name), func() bool {
		got := e.eventReasons(name)
		for _, r := range reasons {
			if !slices.Contains(got, r) {
				return false
			}
		}
		return true
	}, 30*time.Second)
}

func (e *env) eventReasons(name string) []string {
	e.t.Helper()
	var l corev1.EventList
	if err := e.client.List(context.Background(), &l, client.InNamespace(e.ns)); err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range l.Items {
		if ev.InvolvedObject.Name == name {
			out = append(out, ev.Reason)
		}
	}
	return out
}

func cameras(i int) map[string]string {
	return map[string]string{"edge-type": []string{"camera", "camera", "gateway"}[i%3], "arch": "arm64"}
}

func modelVersion(name, version string, weight int32, waves ...int32) *v1alpha1.ModelVersion {
	return &v1alpha1.ModelVersion{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.ModelVersionSpec{Model: "ppocr_cls", Version: version, TrafficWeight: weight, Waves: waves,
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"edge-type": "camera"}}}}
}

// A ModelVersion whose selector matches 2 of 3 nodes, with trafficWeight
// 20: those two get a canary answering 20 % of their requests and go
// Active; the third is never asked; the status passes through Progressing
// to Active with the counts, and Events say why.
func TestModelVersionRollsOutToSelectedNodes(t *testing.T) {
	e := newEnv(t, 3, cameras, fleetsim.Profile{Download: 100 * time.Millisecond, Gate: 300 * time.Millisecond})
	e.publish("ppocr_cls", "2")
	e.controller("a", false)
	e.apply(modelVersion("cls-v2", "2", 20, 50, 100))
	mv, seen := e.waitPhase("cls-v2", v1alpha1.PhaseActive, 2*time.Minute)
	if !slices.Contains(seen, v1alpha1.PhaseProgressing) {
		t.Errorf("phases seen %v, want Progressing before Active", seen)
	}
	st := mv.Status
	if st.Nodes != 2 || st.Active != 2 || st.Progress != "2/2" || st.Wave != "2/2" || len(st.Waves) != 2 ||
		st.Waves[0].Nodes != 1 || st.Waves[1].Nodes != 1 || st.Waves[0].Percent != 50 || st.ObservedGeneration != mv.Generation {
		t.Errorf("status %+v", st)
	}
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready condition %+v", c)
	}
	active := e.fleet.Active("ppocr_cls")
	for _, id := range e.fleet.IDs() {
		d := e.desired(id)
		ms, carried := d.Models["ppocr_cls"]
		if id == "n-00002" {
			if active[id] != "1" || carried && ms.Version == "2" || len(e.fleet.Downloads("ppocr_cls")[id]) != 0 {
				t.Errorf("unselected node %s: runs %s, desired %+v, downloads %v", id, active[id], ms, e.fleet.Downloads("ppocr_cls")[id])
			}
			continue
		}
		if active[id] != "2" || ms.Strategy == nil || ms.Strategy.Kind != wire.StrategyCanary || ms.Strategy.CanaryPercent != 20 ||
			ms.Rollout == nil || ms.Rollout.ID != st.RolloutID {
			t.Errorf("node %s: runs %s, desired %+v (strategy %+v)", id, active[id], ms, ms.Strategy)
		}
	}
	e.waitEvents("cls-v2", "Running", "Completed")
	// What kubectl get prints: the API server's Table for the resource.
	cols, row := e.table("cls-v2")
	want := map[string]any{"Model": "ppocr_cls", "Version": "2", "Weight": float64(20), "Phase": "Active", "Nodes": "2/2", "Wave": "2/2",
		"OnDelete": "Keep"}
	for i, c := range cols {
		if w, ok := want[c]; ok && row[i] != w {
			t.Errorf("kubectl get column %s = %v, want %v", c, row[i], w)
		}
		delete(want, c)
	}
	if len(want) > 0 {
		t.Errorf("kubectl get lacks columns %v (has %v)", want, cols)
	}
	// A spec edit after the end is observed and changes nothing.
	cur := e.get("cls-v2")
	cur.Spec.Paused = true
	if err := e.client.Update(context.Background(), cur); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the edit observed", func() bool {
		cur = e.get("cls-v2")
		return cur.Status.ObservedGeneration == cur.Generation
	}, time.Minute)
	if cur.Status.Phase != v1alpha1.PhaseActive {
		t.Errorf("after pausing an ended rollout: %s", cur.Status.Phase)
	}
	// Deleting the Active ModelVersion (deletionPolicy Rollback, the
	// default) moves no node: the rollout finished.
	if cur.Spec.DeletionPolicy != v1alpha1.DeletionRollback || !slices.Contains(cur.Finalizers, v1alpha1.Finalizer) {
		t.Errorf("deletionPolicy %q, finalizers %v", cur.Spec.DeletionPolicy, cur.Finalizers)
	}
	e.deleteAndWait("cls-v2")
	e.waitEvents("cls-v2", "NodesKeepVersion")
	for id, v := range e.fleet.Active("ppocr_cls") {
		want, wantDesired := "2", "2"
		if id == "n-00002" { // not selected
			want, wantDesired = "1", ""
		}
		if d := e.desired(id).Models["ppocr_cls"]; v != want || d.Version != wantDesired {
			t.Errorf("node %s runs %s (desired %+v) after the Active ModelVersion was deleted", id, v, d)
		}
	}
	t.Logf("phases %v; status %s %s, waves %+v", seen, st.Progress, st.Message, st.Waves)
}

// Deleting a ModelVersion mid-rollout carries out its deletionPolicy. With
// Rollback the controller writes the previous version back to the started
// wave's node before the object goes (its retained desired state says
// version 1 the moment the object is gone, and the node goes back to it);
// with Keep the object goes at once and that node stays on trial of
// version 2. The node of the wave not started is never sent version 2.
func TestModelVersionDeletedMidRollout(t *testing.T) {
	for _, tc := range []struct {
		policy string
		want   string // the started node's desired version afterwards
		state  string // and the state it reports of it
		events []string
	}{
		{v1alpha1.DeletionRollback, "1", "Active", []string{"RollbackOnDelete", "RolledBack", "NodesRolledBack"}},
		{v1alpha1.DeletionKeep, "2", "Canary", []string{"NodesKeepVersion"}},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			// The canary's gate outlasts the test: the first wave's node
			// stays on trial and the second wave never starts.
			e := newEnv(t, 3, cameras, fleetsim.Profile{Download: 50 * time.Millisecond, Gate: 10 * time.Minute})
			e.publish("ppocr_cls", "2")
			e.controller("a", false)
			mv := modelVersion("cls-v2", "2", 20, 50, 100)
			mv.Spec.DeletionPolicy = tc.policy
			e.apply(mv)
			var got *v1alpha1.ModelVersion
			testwait.For(t, "the first wave on trial", func() bool {
				got = e.get("cls-v2")
				return len(got.Status.Waves) == 2 && got.Status.Waves[0].Canary == 1
			}, time.Minute)
			if !slices.Contains(got.Finalizers, v1alpha1.Finalizer) || got.Status.OnDelete != tc.policy ||
				got.Status.Phase != v1alpha1.PhaseProgressing {
				t.Errorf("before delete: finalizers %v, onDelete %q, phase %s", got.Finalizers, got.Status.OnDelete, got.Status.Phase)
			}
			var started, waiting string
			for _, id := range []string{"n-00000", "n-00001"} {
				if slices.Contains(e.fleet.Downloads("ppocr_cls")[id], "2") {
					started = id
				} else {
					waiting = id
				}
			}
			if started == "" || waiting == "" || e.desired(started).Models["ppocr_cls"].Version != "2" ||
				e.nodeStatus(started).Models["ppocr_cls"].State != "Canary" {
				t.Fatalf("started %q, waiting %q, downloads %v", started, waiting, e.fleet.Downloads("ppocr_cls"))
			}
			e.deleteAndWait("cls-v2")
			if d := e.desired(started).Models["ppocr_cls"]; d.Version != tc.want {
				t.Errorf("node %s desired %+v once the ModelVersion is gone, want version %s", started, d, tc.want)
			}
			testwait.For(t, fmt.Sprintf("node %s reports %s %s", started, tc.want, tc.state), func() bool {
				ms := e.nodeStatus(started).Models["ppocr_cls"]
				return ms.Version == tc.want && ms.State == tc.state
			}, time.Minute)
			if d := e.desired(waiting).Models["ppocr_cls"]; d.Version == "2" || len(e.fleet.Downloads("ppocr_cls")[waiting]) != 0 {
				t.Errorf("node %s of the wave not started: desired %+v, downloads %v", waiting, d, e.fleet.Downloads("ppocr_cls")[waiting])
			}
			if v := e.fleet.Active("ppocr_cls")[started]; v != "1" {
				t.Errorf("node %s runs %s", started, v)
			}
			e.waitEvents("cls-v2", tc.events...)
		})
	}
}

// A node reporting ChecksumMismatch turns the resource Degraded with that
// reason, and the abort criteria (any failure of ≥ 1 finished) roll the
// started waves back.
func TestModelVersionDegradedByChecksumMismatch(t *testing.T) {
	e := newEnv(t, 3, cameras, fleetsim.Profile{Download: 100 * time.Millisecond, Gate: 200 * time.Millisecond,
		FailVerify: map[string]float64{"3": 1}})
	e.publish("ppocr_cls", "3")
	e.controller("a", false)
	zero := int32(0)
	mv := modelVersion("cls-v3", "3", 100, 50, 100)
	mv.Spec.Abort = &v1alpha1.Abort{MaxFailedPercent: &zero}
	e.apply(mv)
	got, seen := e.waitPhase("cls-v3", v1alpha1.PhaseRolledBack, 2*time.Minute)
	if got.Status.NodeReasons["ChecksumMismatch"] != 1 {
		t.Errorf("node reasons %v: want ChecksumMismatch once (the first wave's node)", got.Status.NodeReasons)
	}
	c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionDegraded)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != "ChecksumMismatch" {
		t.Errorf("Degraded condition %+v", c)
	}
	if got.Status.Reason != "Aborted" || !strings.Contains(got.Status.Message, "failed") {
		t.Errorf("reason %q message %q", got.Status.Reason, got.Status.Message)
	}
	for id, v := range e.fleet.Active("ppocr_cls") {
		if v != "1" {
			t.Errorf("node %s runs %s after the rollback", id, v)
		}
	}
	e.waitEvents("cls-v3", "RollingBack", "RolledBack")
	t.Logf("phases %v; %s: %s; condition %s", seen, got.Status.Reason, got.Status.Message, c.Message)
}

// A failure within the criteria leaves the version Active on the other
// nodes and the resource Degraded, its reason the failed node's.
func TestModelVersionDegradedWithinCriteria(t *testing.T) {
	p := fleetsim.Profile{Download: 100 * time.Millisecond, Gate: 100 * time.Millisecond}
	// A version for which exactly one of the two camera nodes fails
	// verification (the stand-in picks nodes by a hash).
	version := ""
	for v := 3; version == "" && v < 100; v++ {
		vs := fmt.Sprint(v)
		p.FailVerify = map[string]float64{vs: 0.5}
		if p.VerifyFails("n-00000", vs) != p.VerifyFails("n-00001", vs) {
			version = vs
		}
	}
	e := newEnv(t, 3, cameras, p)
	e.publish("ppocr_cls", version)
	e.controller("a", false)
	half, two := int32(50), int32(2)
	mv := modelVersion("cls-degraded", version, 100)
	mv.Spec.Abort = &v1alpha1.Abort{MaxFailedPercent: &half, MinFinished: &two}
	e.apply(mv)
	got, seen := e.waitPhase("cls-degraded", v1alpha1.PhaseDegraded, 2*time.Minute)
	testwait.For(t, "the rollout completed", func() bool {
		got = e.get("cls-degraded")
		c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionProgressing)
		return c != nil && c.Status == metav1.ConditionFalse
	}, time.Minute)
	if got.Status.Phase != v1alpha1.PhaseDegraded || got.Status.Reason != "ChecksumMismatch" || got.Status.Active != 1 ||
		!strings.Contains(got.Status.Message, "1 of 2 nodes failed: ChecksumMismatch (1)") {
		t.Errorf("status: %s %s %q, %d active", got.Status.Phase, got.Status.Reason, got.Status.Message, got.Status.Active)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("Ready condition %+v", c)
	}
	t.Logf("version %s; phases %v; %s: %s", version, seen, got.Status.Reason, got.Status.Message)
}

// A rollback on delete that cannot be written (the broker is down) holds
// the deleted ModelVersion and says so, in a Warning Event and the Deleting
// condition, whose message names the command that forces the deletion. Once
// the broker is back the rollback is written and the object goes.
func TestModelVersionDeleteRollbackStalls(t *testing.T) {
	e := newEnv(t, 3, cameras, fleetsim.Profile{Download: 50 * time.Millisecond, Gate: 10 * time.Minute})
	e.publish("ppocr_cls", "2")
	e.controller("a", false)
	e.apply(modelVersion("cls-v2", "2", 20, 50, 100))
	testwait.For(t, "the first wave on trial", func() bool {
		st := e.get("cls-v2").Status
		return len(st.Waves) == 2 && st.Waves[0].Canary == 1
	}, time.Minute)
	e.broker.Stop()
	e.delete("cls-v2")
	var c *metav1.Condition
	testwait.For(t, "condition Deleting RollbackStalled", func() bool {
		c = meta.FindStatusCondition(e.get("cls-v2").Status.Conditions, v1alpha1.ConditionDeleting)
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == "RollbackStalled"
	}, 2*time.Minute)
	if !strings.Contains(c.Message, `kubectl patch modelversion cls-v2 -n `+e.ns+` --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]'`) {
		t.Errorf("Deleting condition message %q does not say how to force", c.Message)
	}
	e.waitEvents("cls-v2", "RollbackStalled")
	e.broker.Start()
	e.waitGone("cls-v2")
	for _, id := range []string{"n-00000", "n-00001"} {
		if d := e.desired(id).Models["ppocr_cls"]; d.Version == "2" {
			t.Errorf("node %s desired %+v after the rollback on delete", id, d)
		}
	}
	e.waitEvents("cls-v2", "NodesRolledBack")
	t.Logf("while the broker was down: %s", c.Message)
}

// A ModelVersion deleted while no controller runs waits for one; if its
// rollout record is gone meanwhile (status.rollout cleared), the
// controller cannot roll the nodes back: it lets the object go at once
// with a Warning Event saying so, rather than hold it for ever.
func TestModelVersionDeletedWithoutRecord(t *testing.T) {
	e := newEnv(t, 3, cameras, fleetsim.Profile{Download: 50 * time.Millisecond, Gate: 10 * time.Minute})
	e.publish("ppocr_cls", "2")
	stop := e.controller("a", false)
	e.apply(modelVersion("cls-v2", "2", 20, 50, 100))
	testwait.For(t, "the first wave on trial", func() bool {
		st := e.get("cls-v2").Status
		return len(st.Waves) == 2 && st.Waves[0].Canary == 1
	}, time.Minute)
	stop()
	e.delete("cls-v2")
	mv := e.get("cls-v2")
	if mv.DeletionTimestamp.IsZero() || !slices.Contains(mv.Finalizers, v1alpha1.Finalizer) {
		t.Fatalf("deleted with no controller running: deletionTimestamp %v, finalizers %v", mv.DeletionTimestamp, mv.Finalizers)
	}
	mv.Status.Rollout = nil
	if err := e.client.Status().Update(context.Background(), mv); err != nil {
		t.Fatal(err)
	}
	e.controller("b", false)
	e.waitGone("cls-v2")
	e.waitEvents("cls-v2", "RolloutRecordMissing")
}

// Bad specs are refused by the API server's schema, and specs it cannot
// judge are reported in the status, never left silently pending.
func TestModelVersionValidation(t *testing.T) {
	e := newEnv(t, 3, cameras, fleetsim.Profile{Download: 50 * time.Millisecond, Gate: 50 * time.Millisecond})
	e.publish("ppocr_cls", "2")
	ctx := context.Background()
	for name, mut := range map[string]func(*v1alpha1.ModelVersion){
		"weight-101":   func(m *v1alpha1.ModelVersion) { m.Spec.TrafficWeight = 101 },
		"weight-neg":   func(m *v1alpha1.ModelVersion) { m.Spec.TrafficWeight = -1 },
		"bad-model":    func(m *v1alpha1.ModelVersion) { m.Spec.Model = "no/slash" },
		"no-version":   func(m *v1alpha1.ModelVersion) { m.Spec.Version = "" },
		"waves-end":    func(m *v1alpha1.ModelVersion) { m.Spec.Waves = []int32{10, 50} },
		"waves-order":  func(m *v1alpha1.ModelVersion) { m.Spec.Waves = []int32{50, 10, 100} },
		"waves-repeat": func(m *v1alpha1.ModelVersion) { m.Spec.Waves = []int32{50, 50, 100} },
		"on-abort":     func(m *v1alpha1.ModelVersion) { m.Spec.OnAbort = "Explode" },
		"on-delete":    func(m *v1alpha1.ModelVersion) { m.Spec.DeletionPolicy = "Delete" },
		"error-rate":   func(m *v1alpha1.ModelVersion) { m.Spec.Gates = &v1alpha1.Gates{MaxErrorRate: "2"} },
		"abort-type": func(m *v1alpha1.ModelVersion) {
			m.Spec.Abort = &v1alpha1.Abort{ByType: []v1alpha1.TypeCriterion{{Type: "Sad"}}}
		},
		"success-range": func(m *v1alpha1.ModelVersion) { m.Spec.SuccessPercent = 101 },
		"ramp-factor": func(m *v1alpha1.ModelVersion) {
			m.Spec.Ramp = &v1alpha1.Ramp{BasePerMinute: 10, Factor: "9", EverySucceeded: 5}
		},
		"ramp-every": func(m *v1alpha1.ModelVersion) {
			m.Spec.Ramp = &v1alpha1.Ramp{BasePerMinute: 10, Factor: "2", EverySucceeded: 0}
		},
	} {
		mv := modelVersion(name, "2", 20)
		mv.Namespace = e.ns
		mut(mv)
		if err := e.client.Create(ctx, mv); !apierrors.IsInvalid(err) {
			t.Errorf("%s: create: %v, want Invalid", name, err)
		}
	}
	e.controller("a", false)
	// What is fixed once applied stays fixed; rollback cannot be undone.
	mv := e.apply(modelVersion("fixed", "9", 20))
	for what, mut := range map[string]func(*v1alpha1.ModelVersion){
		"version":  func(m *v1alpha1.ModelVersion) { m.Spec.Version = "10" },
		"weight":   func(m *v1alpha1.ModelVersion) { m.Spec.TrafficWeight = 30 },
		"selector": func(m *v1alpha1.ModelVersion) { m.Spec.NodeSelector.MatchLabels["edge-type"] = "gateway" },
	} {
		cur := e.get(mv.Name)
		mut(cur)
		if err := e.client.Update(ctx, cur); !apierrors.IsInvalid(err) {
			t.Errorf("changing %s: %v, want Invalid", what, err)
		}
	}
	// A version never published, and a selector matching no node, are
	// said in the status (and retried).
	got, _ := e.waitPhase("fixed", v1alpha1.PhasePending, time.Minute)
	testwait.For(t, "reason ManifestNotPublished", func() bool {
		got = e.get("fixed")
		return got.Status.Reason == "ManifestNotPublished"
	}, time.Minute)
	none := modelVersion("nobody", "2", 20)
	none.Spec.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "edge-type", Operator: metav1.LabelSelectorOpIn, Values: []string{"doorbell"}}}}
	e.apply(none)
	testwait.For(t, "reason NoMatchingNodes", func() bool { return e.get("nobody").Status.Reason == "NoMatchingNodes" }, time.Minute)
	if c := meta.FindStatusCondition(e.get("nobody").Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Reason != "NoMatchingNodes" {
		t.Errorf("Ready condition %+v", c)
	}
	rb := e.get("fixed")
	rb.Spec.Rollback = true
	if err := e.client.Update(ctx, rb); err != nil {
		t.Fatal(err)
	}
	rb = e.get("fixed")
	rb.Spec.Rollback = false
	if err := e.client.Update(ctx, rb); !apierrors.IsInvalid(err) {
		t.Errorf("undoing rollback: %v, want Invalid", err)
	}
	t.Logf("not published: %s; no node: %s", got.Status.Message, e.get("nobody").Status.Message)
}

// Two replicas elect one leader with a Lease. Killing the leader mid-rollout
// (no lease release: as a crashed process) hands the rollout to the other
// within the lease duration, which resumes it from the status without
// writing any wave twice.
func TestModelVersionLeaderTakeover(t *testing.T) {
	e := newEnv(t, 6, cameras, fleetsim.Profile{Download: 1500 * time.Millisecond, Gate: 200 * time.Millisecond})
	e.publish("ppocr_cls", "2")
	stopA := e.controller("a", true)
	lease := func() string {
		var l coordinationv1.Lease
		if err := e.client.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "edge-controller"}, &l); err != nil {
			return ""
		}
		if l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	testwait.For(t, "replica a leads", func() bool { return lease() != "" }, time.Minute)
	first := lease()
	e.controller("b", true)
	e.apply(modelVersion("cls-v2", "2", 100, 25, 50, 100))
	testwait.For(t, "wave 2 started", func() bool {
		st := e.get("cls-v2").Status
		return st.Wave == "2/3" && st.Phase == v1alpha1.PhaseProgressing
	}, time.Minute)
	killed := time.Now()
	stopA()
	testwait.For(t, "replica b leads", func() bool { l := lease(); return l != "" && l != first }, time.Minute)
	took := time.Since(killed)
	mv, _ := e.waitPhase("cls-v2", v1alpha1.PhaseActive, 2*time.Minute)
	if took > 3*time.Second+2*time.Second {
		t.Errorf("take-over took %v, lease duration 3s", took)
	}
	if mv.Status.Active != 4 {
		t.Errorf("status %+v", mv.Status)
	}
	// Each selected node's desired state was written once (generation 1).
	for id, g := range e.fleet.NodeGenerations() {
		sel := cameras(int(id[len(id)-1] - '0'))["edge-type"] == "camera"
		if sel && g != 1 || !sel && g != 0 {
			t.Errorf("node %s applied desired generation %d (selected %v)", id, g, sel)
		}
	}
	var rec struct {
		History []struct{ Note string }
	}
	if err := json.Unmarshal(mv.Status.Rollout.Raw, &rec); err != nil {
		t.Fatal(err)
	}
	for w := 1; w <= 3; w++ {
		n := 0
		for _, h := range rec.History {
			if strings.HasPrefix(h.Note, fmt.Sprintf("wave %d started", w)) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("wave %d started %d times", w, n)
		}
	}
	t.Logf("take-over after %v (lease 3s); history %+v", took.Round(time.Millisecond), rec.History)
}

// The objects of deploy/kubernetes/edge-controller.yaml are accepted by a
// real API server, and the controller running as its ServiceAccount (only
// the RBAC there) brings deploy/kubernetes/examples/modelversion.yaml to
// Active, with leader election in edge-system, watching every namespace.
// The ServiceAccount cannot read Secrets.
func TestDeployRBAC(t *testing.T) {
	e := newEnv(t, 2, func(int) map[string]string { return map[string]string{"edge-type": "camera"} },
		fleetsim.Profile{Download: 50 * time.Millisecond, Gate: 100 * time.Millisecond})
	ctx := context.Background()
	for _, obj := range readYAML(t, filepath.Join("..", "..", "deploy", "kubernetes", "edge-controller.yaml")) {
		// Already there on a repeat (-count=N): the API server outlives a test.
		if err := e.client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	e.ctrlCfg = kubetest.User(t, "system:serviceaccount:edge-system:edge-controller", "system:serviceaccounts", "system:authenticated")
	e.leaseNS, e.namespaces = "edge-system", nil
	sa, err := client.New(e.ctrlCfg, client.Options{Scheme: e.client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := sa.List(ctx, &corev1.SecretList{}, client.InNamespace("edge-system")); !apierrors.IsForbidden(err) {
		t.Errorf("the ServiceAccount lists Secrets: %v, want Forbidden", err)
	}
	if err := sa.Delete(ctx, &v1alpha1.ModelVersion{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "any"}}); !apierrors.IsForbidden(err) {
		t.Errorf("the ServiceAccount deletes ModelVersions: %v, want Forbidden", err)
	}
	e.publish("ppocr_cls", "2")
	e.controller("sa", true)
	examples := readYAML(t, filepath.Join("..", "..", "deploy", "kubernetes", "examples", "modelversion.yaml"))
	if len(examples) != 1 {
		t.Fatalf("%d objects in the example", len(examples))
	}
	ex := examples[0]
	ex.SetNamespace(e.ns)
	if err := e.client.Create(ctx, ex); err != nil {
		t.Fatalf("apply the example: %v", err)
	}
	mv, _ := e.waitPhase(ex.GetName(), v1alpha1.PhaseActive, 2*time.Minute)
	if mv.Status.Active != 2 {
		t.Errorf("status %+v", mv.Status)
	}
	e.waitEvents(ex.GetName(), "Completed") // the ServiceAccount may record Events
	// It may take its finalizer off: the deleted example goes.
	e.deleteAndWait(ex.GetName())
}

// readYAML decodes the objects of a multi-document YAML file.
func readYAML(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*unstructured.Unstructured
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
	return out
}
