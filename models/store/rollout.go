package store

import (
	"context"
	"fmt"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/catalog"
)

// StartRollout records a new rollout. See models.RolloutStore.
func (s *Store) StartRollout(ctx context.Context, r models.Rollout) (models.Rollout, error) {
	var out models.Rollout
	err := s.cat.Update(ctx, func(tx *catalog.Tx) error {
		old, err := tx.Rollout(r.Model)
		switch {
		case err == nil && old.Phase == models.RolloutRunning:
			return fmt.Errorf("rollout %s: %s is still rolling out: %w", r.Model, old.Version, models.ErrInUse)
		case err != nil && !isNotFound(err):
			return err
		}
		v, err := tx.Version(r.Model, r.Version)
		if err != nil {
			return err
		}
		r.Decisions, r.Started = nil, s.opts.Now().UTC()
		d := models.Decision{Event: models.EventStarted, Reason: "strategy " + string(r.Strategy.Kind)}
		if r.Baseline != "" {
			d.Reason += ", baseline " + r.Baseline
		}
		out, err = tx.PutRollout(r, models.RolloutRunning, d, v.State)
		return err
	})
	return out, err
}

// Decide records a rollout decision, with an optional state transition in
// the same transaction. See models.RolloutStore.
func (s *Store) Decide(ctx context.Context, model string, phase models.RolloutPhase, d models.Decision, move *models.Move) (models.Rollout, error) {
	var out models.Rollout
	err := s.cat.Update(ctx, func(tx *catalog.Tx) error {
		r, err := tx.Rollout(model)
		if err != nil {
			return err
		}
		if move != nil {
			if _, err := tx.Transition(model, move.Version, move.To, move.Opts); err != nil {
				return err
			}
		}
		v, err := tx.Version(model, r.Version)
		if err != nil {
			return err
		}
		out, err = tx.PutRollout(r, phase, d, v.State)
		return err
	})
	return out, err
}

// Rollout returns a model's latest rollout. See models.RolloutStore.
func (s *Store) Rollout(ctx context.Context, model string) (models.Rollout, error) {
	var out models.Rollout
	err := s.cat.View(ctx, func(tx *catalog.Tx) (err error) {
		out, err = tx.Rollout(model)
		return err
	})
	return out, err
}

// Rollouts returns every model's latest rollout. See models.RolloutStore.
func (s *Store) Rollouts(ctx context.Context) ([]models.Rollout, error) {
	var out []models.Rollout
	err := s.cat.View(ctx, func(tx *catalog.Tx) (err error) {
		out, err = tx.Rollouts()
		return err
	})
	return out, err
}

// Stage brings a Ready (or Retired) version up beside Active, as a rollout
// candidate: Loading → Warming → to (Canary or Shadow), with loader doing
// the work between, like Activate. Active is untouched.
func (s *Store) Stage(ctx context.Context, model, version string, to models.State, loader models.Loader) (models.VersionInfo, error) {
	if to != models.Canary && to != models.Shadow {
		return models.VersionInfo{}, fmt.Errorf("stage %s/%s as %s: want Canary or Shadow: %w", model, version, to, models.ErrInvalidArgument)
	}
	if loader == nil {
		return models.VersionInfo{}, fmt.Errorf("stage %s/%s: no loader: %w", model, version, models.ErrInvalidArgument)
	}
	return s.bringUp(ctx, model, version, to, loader, nil)
}

// abortInterruptedRollouts ends every running or held rollout (phase
// aborted) and retires its candidate if it was Canary or Shadow: after a
// restart no candidate is loaded.
func (s *Store) abortInterruptedRollouts(ctx context.Context) error {
	rs, err := s.Rollouts(ctx)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.Phase != models.RolloutRunning && r.Phase != models.RolloutHeld {
			continue
		}
		v, err := s.Version(ctx, r.Model, r.Version)
		if err != nil && !isNotFound(err) {
			return err
		}
		var move *models.Move
		if err == nil && (v.State == models.Canary || v.State == models.Shadow) {
			move = &models.Move{Version: r.Version, To: models.Retired, Opts: models.TransitionOptions{Detail: "rollout interrupted by a restart"}}
		}
		d := models.Decision{Event: models.EventAborted, Reason: "node restarted during the rollout"}
		if _, err := s.Decide(ctx, r.Model, models.RolloutAborted, d, move); err != nil {
			return err
		}
		s.log.Warn().Str("model", r.Model).Str("version", r.Version).Msg("rollout interrupted by a restart: aborted")
	}
	return nil
}
