// Package kube is the Kubernetes controller of ModelVersion resources
// (sync/kube/api/v1alpha1): a controller-runtime manager whose reconciler
// turns each ModelVersion into a fleet rollout of the shared engine
// (sync/rollout) over MQTT, keeps the rollout's record in the resource's
// status instead of a local file, elects a leader with a coordination.k8s.io
// Lease, and records an Event per decision. The node inventory is the
// nodes' retained status on the broker, as for edgectl rollout. A
// finalizer holds a deleted ModelVersion until its deletionPolicy is
// carried out (finalize.go).
package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/zerologr"
	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/edgeai/edge-node/sync/fleet"
	"github.com/edgeai/edge-node/sync/kube/api/v1alpha1"
	"github.com/edgeai/edge-node/sync/rollout"
	"github.com/edgeai/edge-node/sync/wire"
)

// Options configure the controller.
type Options struct {
	Topics wire.Topics
	// Identity names this replica in the leader election Lease and in
	// logs (default the host name and pid).
	Identity string
	// Tick is how often a running rollout is stepped (default 1 s).
	Tick time.Duration
	// Retry is how often a Pending ModelVersion (manifest not published,
	// no node matching) is tried again (default 10 s).
	Retry time.Duration
	// Quiet bounds the wait for retained messages (default 1 s).
	Quiet time.Duration
	// LeaderElection, with its Lease's namespace, name and timings
	// (defaults: the namespace the controller runs in, edge-controller,
	// 15 s, 10 s, 2 s).
	LeaderElection          bool
	LeaderElectionNamespace string
	LeaderElectionID        string
	LeaseDuration           time.Duration
	RenewDeadline           time.Duration
	RetryPeriod             time.Duration
	// HealthAddr serves /healthz and /readyz ("" or "0": off);
	// MetricsAddr controller-runtime's metrics ("" or "0": off).
	HealthAddr  string
	MetricsAddr string
	// ReleaseOnCancel gives the Lease up when the manager's context ends
	// (a graceful stop: the next replica leads at once); otherwise it
	// lapses after LeaseDuration, as a crashed leader's does.
	ReleaseOnCancel bool
	// Namespaces limits the ModelVersions watched (empty: every
	// namespace).
	Namespaces []string
}

// Scheme has the built-in types and ModelVersion.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, v1alpha1.AddToScheme(s)
}

// NewManager builds the manager with the ModelVersion reconciler; Start
// runs it until ctx ends. link is the MQTT session the rollouts write
// desired state on (connected by the caller; only the leader uses it).
func NewManager(cfg *rest.Config, link rollout.Link, opts Options, log zerolog.Logger) (manager.Manager, error) {
	if opts.Tick <= 0 {
		opts.Tick = time.Second
	}
	if opts.Retry <= 0 {
		opts.Retry = 10 * time.Second
	}
	if opts.Quiet <= 0 {
		opts.Quiet = time.Second
	}
	if opts.Topics.Root == "" {
		opts.Topics.Root = wire.DefaultRoot
	}
	if opts.LeaderElectionID == "" {
		opts.LeaderElectionID = "edge-controller"
	}
	if opts.Identity == "" {
		return nil, errors.New("kube: Identity is required")
	}
	scheme, err := Scheme()
	if err != nil {
		return nil, err
	}
	dur := func(d time.Duration) *time.Duration {
		if d <= 0 {
			return nil
		}
		return &d
	}
	mopts := ctrl.Options{Scheme: scheme, Logger: zerologr.New(&log), LeaderElection: opts.LeaderElection,
		LeaderElectionID: opts.LeaderElectionID, LeaderElectionNamespace: opts.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: opts.ReleaseOnCancel, LeaseDuration: dur(opts.LeaseDuration), RenewDeadline: dur(opts.RenewDeadline), RetryPeriod: dur(opts.RetryPeriod),
		HealthProbeBindAddress: off(opts.HealthAddr), Metrics: metricsserver.Options{BindAddress: off(opts.MetricsAddr)}}
	// The name check guards controller-runtime's per-controller metrics
	// against two controllers of one name in a process; a process here
	// runs one manager, the tests several.
	skip := true
	mopts.Controller = config.Controller{SkipNameValidation: &skip}
	for _, ns := range opts.Namespaces {
		if mopts.Cache.DefaultNamespaces == nil {
			mopts.Cache.DefaultNamespaces = map[string]cache.Config{}
		}
		mopts.Cache.DefaultNamespaces[ns] = cache.Config{}
	}
	mgr, err := ctrl.NewManager(cfg, mopts)
	if err != nil {
		return nil, fmt.Errorf("kube: manager: %w", err)
	}
	recs := newStatusRecords(mgr.GetAPIReader(), mgr.GetClient(), opts.Namespaces)
	engine, err := rollout.NewController(rollout.Config{Topics: opts.Topics, Records: recs, Owner: opts.Identity,
		Tick: opts.Tick, Quiet: opts.Quiet}, link, log)
	if err != nil {
		return nil, err
	}
	r := &reconciler{client: mgr.GetClient(), records: recs, engine: engine, link: link, opts: opts,
		events: mgr.GetEventRecorderFor("edge-controller"), log: log.With().Str("component", "kube").Logger()}
	if opts.HealthAddr != "" && opts.HealthAddr != "0" {
		if err := mgr.AddHealthzCheck("ping", func(*http.Request) error { return nil }); err != nil {
			return nil, err
		}
		if err := mgr.AddReadyzCheck("ping", func(*http.Request) error { return nil }); err != nil {
			return nil, err
		}
	}
	// The leader follows the nodes from the moment it leads, so the first
	// ModelVersion does not wait for the retained statuses.
	err = mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if err := engine.Watch(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("kube: follow the nodes: %w", err)
		}
		return nil
	}))
	if err != nil {
		return nil, err
	}
	err = ctrl.NewControllerManagedBy(mgr).Named("modelversion").
		For(&v1alpha1.ModelVersion{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
	if err != nil {
		return nil, fmt.Errorf("kube: controller: %w", err)
	}
	return mgr, nil
}

func off(addr string) string {
	if addr == "" {
		return "0"
	}
	return addr
}

type reconciler struct {
	client  client.Client
	records *statusRecords
	engine  *rollout.Controller
	link    rollout.Link
	opts    Options
	events  record.EventRecorder
	log     zerolog.Logger
}

// Reconcile starts mv's rollout once its manifest is published and a node
// matches, then steps it every Tick until it ends. spec.paused and
// spec.rollback become the engine's commands. A deleted mv is finalize's
// (spec.deletionPolicy).
func (r *reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var mv v1alpha1.ModelVersion
	if err := r.client.Get(ctx, req.NamespacedName, &mv); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !mv.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, &mv)
	}
	id := rolloutID(&mv)
	r.records.bind(id, req.NamespacedName)
	cur, err := r.records.Get(ctx, id)
	if errors.Is(err, rollout.ErrNotFound) {
		return r.start(ctx, &mv, id)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if cmd := command(mv.Spec, cur.Phase); cmd != "" {
		if _, err := rollout.Command(ctx, r.records, id, cmd); err != nil && !errors.Is(err, rollout.ErrBadState) {
			return ctrl.Result{}, err
		}
	} else if cur.Phase.Final() {
		// Nothing more happens; a spec edit (paused) is still observed.
		if mv.Status.ObservedGeneration != mv.Generation {
			_, err := r.records.Update(ctx, id, func(*rollout.Record) error { return nil })
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, nil
	}
	// The finalizer is on before any step writes to a node (rollouts
	// started by a controller without finalizers get it here too).
	if err := r.setFinalizer(ctx, &mv, true); err != nil {
		return ctrl.Result{}, err
	}
	out, err := r.step(ctx, &mv, cur)
	if err != nil {
		return ctrl.Result{}, err
	}
	if out.Phase.Final() {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: r.opts.Tick}, nil
}

// step is one tick of the engine on mv's rollout (cur is its record before
// the tick), with an Event per transition the tick made.
func (r *reconciler) step(ctx context.Context, mv *v1alpha1.ModelVersion, cur *rollout.Record) (*rollout.Record, error) {
	last := time.Time{}
	if n := len(cur.History); n > 0 {
		last = cur.History[n-1].At
	}
	out, err := r.engine.Step(ctx, cur.Spec.ID)
	if out != nil {
		for _, t := range out.History {
			if t.At.After(last) {
				r.event(mv, t)
			}
		}
	}
	return out, err
}

// command is the engine command spec asks for in phase p ("" none).
func command(s v1alpha1.ModelVersionSpec, p rollout.Phase) string {
	switch {
	case s.Rollback && p != rollout.PhaseRollingBack && p != rollout.PhaseRolledBack:
		return rollout.CmdRollback
	case s.Paused && (p == rollout.PhaseRunning || p == rollout.PhaseWatching):
		return rollout.CmdPause
	case !s.Paused && p == rollout.PhasePaused:
		return rollout.CmdResume
	}
	return ""
}

// start creates mv's rollout, or says in its status why it cannot yet.
func (r *reconciler) start(ctx context.Context, mv *v1alpha1.ModelVersion, id string) (ctrl.Result, error) {
	spec, err := rolloutSpec(mv, id)
	if err != nil {
		return ctrl.Result{}, r.pending(ctx, mv, "InvalidSpec", err.Error())
	}
	topic := r.opts.Topics.Manifest(spec.Model, spec.Version)
	got, err := fleet.ReadRetained(ctx, r.link, topic, r.opts.Quiet)
	if err != nil {
		return ctrl.Result{}, err
	}
	if _, ok := got[topic]; !ok {
		return ctrl.Result{RequeueAfter: r.opts.Retry}, r.pending(ctx, mv, "ManifestNotPublished",
			fmt.Sprintf("no manifest of %s version %s on the broker (%s): publish it with edgectl publish", spec.Model, spec.Version, topic))
	}
	rec, err := r.engine.Start(ctx, spec)
	switch {
	case errors.Is(err, rollout.ErrNoNodes):
		return ctrl.Result{RequeueAfter: r.opts.Retry}, r.pending(ctx, mv, "NoMatchingNodes", err.Error())
	case errors.Is(err, rollout.ErrExists):
		return ctrl.Result{RequeueAfter: r.opts.Tick}, nil
	case err != nil && ctx.Err() == nil:
		// Another rollout of the model holds some of the nodes, or the
		// broker refused: said in the status, tried again.
		return ctrl.Result{RequeueAfter: r.opts.Retry}, r.pending(ctx, mv, "Blocked", err.Error())
	case err != nil:
		return ctrl.Result{}, err
	}
	for _, t := range rec.History {
		r.event(mv, t)
	}
	// No node is written before the finalizer is on: the next tick (the
	// first write) puts it on if this fails.
	return ctrl.Result{RequeueAfter: r.opts.Tick}, r.setFinalizer(ctx, mv, true)
}

// pending writes phase Pending with reason and message (and an Event when
// the reason changed).
func (r *reconciler) pending(ctx context.Context, mv *v1alpha1.ModelVersion, reason, msg string) error {
	if mv.Status.Phase == v1alpha1.PhasePending && mv.Status.Reason == reason && mv.Status.Message == msg &&
		mv.Status.ObservedGeneration == mv.Generation {
		return nil
	}
	r.events.Event(mv, corev1.EventTypeWarning, reason, msg)
	r.log.Warn().Str("modelversion", mv.Namespace+"/"+mv.Name).Str("reason", reason).Msg(msg)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur v1alpha1.ModelVersion
		if err := r.client.Get(ctx, client.ObjectKeyFromObject(mv), &cur); err != nil {
			return err
		}
		if cur.Status.Rollout != nil {
			return nil // started meanwhile
		}
		cur.Status.ObservedGeneration, cur.Status.Phase = cur.Generation, v1alpha1.PhasePending
		cur.Status.Reason, cur.Status.Message = reason, msg
		meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady,
			Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: cur.Generation})
		return r.client.Status().Update(ctx, &cur)
	})
}

// event records one transition of the rollout as an Event on mv, so
// kubectl describe says why a wave started or stopped.
func (r *reconciler) event(mv *v1alpha1.ModelVersion, t rollout.Transition) {
	typ := corev1.EventTypeNormal
	switch t.Phase {
	case rollout.PhaseRollingBack, rollout.PhaseRolledBack, rollout.PhaseHeld:
		typ = corev1.EventTypeWarning
	}
	reason := camel(string(t.Phase))
	msg := t.Note
	if t.Wave > 0 && !strings.HasPrefix(t.Note, "wave ") {
		msg = fmt.Sprintf("wave %d: %s", t.Wave, t.Note)
	}
	r.events.Event(mv, typ, reason, msg)
	r.log.Info().Str("modelversion", mv.Namespace+"/"+mv.Name).Str("phase", string(t.Phase)).Int("wave", t.Wave).Msg(t.Note)
}
