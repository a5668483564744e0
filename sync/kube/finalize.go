package kube

// Deleting a ModelVersion. The controller puts v1alpha1.Finalizer on once
// the rollout is created, so the API server keeps a deleted ModelVersion
// until the controller has carried out spec.deletionPolicy: Rollback rolls
// a rollout that has not finished back through the engine's own rollback
// command (as spec.rollback does) and lets the object go once the engine
// says the previous versions are written; Keep, and any rollout that had
// finished, let it go at once. Each outcome is an Event on the object.
// Nothing holds the object for ever: a missing or unreadable record lets
// it go (a Warning says the nodes could not be rolled back), and a
// rollback that cannot be written is said in an Event and the Deleting
// condition, with the command that forces the deletion.

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/edgeai/edge-node/sync/kube/api/v1alpha1"
	"github.com/edgeai/edge-node/sync/rollout"
)

// onDelete is what deleting a ModelVersion with deletionPolicy policy does
// to its rollout in phase p: Rollback while the rollout has not finished
// (running or paused), Keep once it has (completed, watching, held, rolled
// back: the fleet's decision is made or was stopped on purpose, and a later
// rollout may have moved the nodes on since). A rollback the engine already
// started is finished under either policy: it is written at once, and
// stopping it part-way would leave the fleet split.
func onDelete(policy string, p rollout.Phase) string {
	switch {
	case p == rollout.PhaseRollingBack:
		return v1alpha1.DeletionRollback
	case policy == v1alpha1.DeletionKeep:
		return v1alpha1.DeletionKeep
	case p == rollout.PhaseRunning || p == rollout.PhasePaused:
		return v1alpha1.DeletionRollback
	}
	return v1alpha1.DeletionKeep
}

// finalize carries out the deleted mv's deletionPolicy, then takes the
// finalizer off.
func (r *reconciler) finalize(ctx context.Context, mv *v1alpha1.ModelVersion) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(mv, v1alpha1.Finalizer) {
		return ctrl.Result{}, nil
	}
	var cur v1alpha1.ModelVersion
	if err := r.records.read.Get(ctx, client.ObjectKeyFromObject(mv), &cur); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	id := rolloutID(&cur)
	what := cur.Spec.Model + " " + cur.Spec.Version
	rec, err := decodeRecord(&cur)
	switch {
	case err != nil:
		return r.release(ctx, &cur, id, corev1.EventTypeWarning, "RolloutRecordUnreadable",
			fmt.Sprintf("%v: the controller cannot tell which nodes were sent %s, nor roll them back; they keep what they were sent", err, what))
	case rec == nil && cur.Status.RolloutID != "":
		return r.release(ctx, &cur, id, corev1.EventTypeWarning, "RolloutRecordMissing",
			fmt.Sprintf("status.rollout of rollout %s is gone: the controller cannot tell which nodes were sent %s, nor roll them back; they keep what they were sent",
				cur.Status.RolloutID, what))
	case rec == nil:
		return r.release(ctx, &cur, id, corev1.EventTypeNormal, "NoRollout", "no rollout was started: no node was sent "+what)
	}
	if onDelete(cur.Spec.DeletionPolicy, rec.Phase) == v1alpha1.DeletionKeep {
		return r.release(ctx, &cur, id, corev1.EventTypeNormal, "NodesKeepVersion", keepText(&cur, rec))
	}
	r.records.bind(id, client.ObjectKeyFromObject(&cur))
	if (rec.Phase == rollout.PhaseRunning || rec.Phase == rollout.PhasePaused) && rec.Command != rollout.CmdRollback {
		_, err := rollout.Command(ctx, r.records, id, rollout.CmdRollback)
		if err != nil && !errors.Is(err, rollout.ErrBadState) {
			return ctrl.Result{}, err
		}
		if err == nil {
			r.events.Event(&cur, corev1.EventTypeNormal, "RollbackOnDelete", fmt.Sprintf(
				"deleted with deletionPolicy Rollback: writing the previous version back to the %d nodes sent %s before the ModelVersion goes",
				sent(rec), what))
		}
	}
	if rec.Phase != rollout.PhaseRolledBack {
		// Bounded, so a broker that does not answer is reported (and the
		// step tried again) rather than waited on silently.
		sctx, cancel := context.WithTimeout(ctx, max(10*r.opts.Quiet, 10*time.Second))
		out, err := r.step(sctx, &cur, rec)
		cancel()
		if err != nil {
			return r.stalled(ctx, &cur, err)
		}
		if out.Phase != rollout.PhaseRolledBack {
			// Not yet (the command came after a tick had read the record,
			// or the rollout ended otherwise meanwhile): the next look
			// decides again.
			return ctrl.Result{RequeueAfter: r.opts.Tick}, nil
		}
		rec = out
	}
	return r.release(ctx, &cur, id, corev1.EventTypeNormal, "NodesRolledBack", fmt.Sprintf(
		"the previous version was written back to the %d nodes sent %s (%s); the ModelVersion goes", sent(rec), what, rec.Reason))
}

// sent counts the nodes of rec's started waves (those sent the version).
func sent(rec *rollout.Record) int {
	n := 0
	for w := 0; w <= rec.Wave && w < len(rec.Members); w++ {
		n += len(rec.Members[w])
	}
	return n
}

// keepText says, for the Event, what the nodes keep when mv goes without a
// rollback.
func keepText(mv *v1alpha1.ModelVersion, rec *rollout.Record) string {
	what := mv.Spec.Model + " " + mv.Spec.Version
	n := sent(rec)
	switch rec.Phase {
	case rollout.PhaseRunning, rollout.PhasePaused:
		return fmt.Sprintf("deleted with deletionPolicy Keep while %s at wave %s: the %d nodes sent %s keep it; the other %d selected nodes are not sent it",
			phases[rec.Phase], mv.Status.Wave, n, what, rec.Nodes()-n)
	case rollout.PhaseWatching:
		return fmt.Sprintf("the continuous rollout ends: the %d nodes sent %s keep it; nodes that come to match nodeSelector are no longer sent it", n, what)
	case rollout.PhaseHeld:
		return fmt.Sprintf("the rollout was held (%s): the %d nodes sent %s keep it (to roll them back, set spec.rollback: true and wait for RolledBack before deleting)",
			rec.Reason, n, what)
	case rollout.PhaseRolledBack:
		return fmt.Sprintf("the rollout was rolled back (%s): no node keeps %s from it", rec.Reason, what)
	}
	return fmt.Sprintf("the rollout had completed: the %d nodes sent %s keep it (to undo it, set spec.rollback: true and wait for RolledBack before deleting)", n, what)
}

// stalled says in an Event and the Deleting condition that mv's rollback
// cannot be written yet, and how to delete it anyway; the step is tried
// again after Retry.
func (r *reconciler) stalled(ctx context.Context, mv *v1alpha1.ModelVersion, cause error) (ctrl.Result, error) {
	if ctx.Err() != nil {
		return ctrl.Result{}, ctx.Err() // the manager stops
	}
	msg := fmt.Sprintf("deletionPolicy Rollback: cannot write the previous version back yet (%v); tried again every %v. "+
		"To delete the ModelVersion anyway, leaving the nodes on what they were sent: "+
		`kubectl patch modelversion %s -n %s --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]'`,
		cause, r.opts.Retry, mv.Name, mv.Namespace)
	r.events.Event(mv, corev1.EventTypeWarning, "RollbackStalled", msg)
	r.log.Warn().Str("modelversion", mv.Namespace+"/"+mv.Name).Err(cause).Msg("rollback on delete stalled")
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur v1alpha1.ModelVersion
		if err := r.records.read.Get(ctx, client.ObjectKeyFromObject(mv), &cur); err != nil {
			return client.IgnoreNotFound(err)
		}
		meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionDeleting,
			Status: metav1.ConditionTrue, Reason: "RollbackStalled", Message: msg, ObservedGeneration: cur.Generation})
		return r.client.Status().Update(ctx, &cur)
	})
	return ctrl.Result{RequeueAfter: r.opts.Retry}, err
}

// release records the Event that says what the nodes are left with and
// takes the finalizer off mv (the API server then deletes it).
func (r *reconciler) release(ctx context.Context, mv *v1alpha1.ModelVersion, id, typ, reason, msg string) (ctrl.Result, error) {
	r.events.Event(mv, typ, reason, msg)
	r.log.Info().Str("modelversion", mv.Namespace+"/"+mv.Name).Str("reason", reason).Msg(msg)
	if err := r.setFinalizer(ctx, mv, false); err != nil {
		return ctrl.Result{}, err
	}
	r.records.unbind(id)
	return ctrl.Result{}, nil
}

// setFinalizer puts the controller's finalizer on mv (on) or takes it off,
// on the API server's current copy.
func (r *reconciler) setFinalizer(ctx context.Context, mv *v1alpha1.ModelVersion, on bool) error {
	if controllerutil.ContainsFinalizer(mv, v1alpha1.Finalizer) == on {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur v1alpha1.ModelVersion
		if err := r.records.read.Get(ctx, client.ObjectKeyFromObject(mv), &cur); err != nil {
			if !on {
				return client.IgnoreNotFound(err)
			}
			return err
		}
		var changed bool
		if on {
			changed = controllerutil.AddFinalizer(&cur, v1alpha1.Finalizer)
		} else {
			changed = controllerutil.RemoveFinalizer(&cur, v1alpha1.Finalizer)
		}
		if !changed {
			return nil
		}
		if err := r.client.Update(ctx, &cur); err != nil {
			if !on {
				return client.IgnoreNotFound(err)
			}
			return err
		}
		mv.Finalizers = cur.Finalizers
		return nil
	})
}
