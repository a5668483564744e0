package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/catalog"
)

// Boot checks the store after a (re)start and returns what to serve. It
// needs no network and should run before anything connects:
//
//  1. versions caught in Loading or Warming by the restart become
//     Failed(Interrupted) (a model that crashes the process must not crash
//     it again on every boot; Retry clears it); a rollout the restart
//     interrupted is aborted and its Canary/Shadow candidate Retired;
//  2. every blob of every version that must have its files (Ready and
//     later) is checked — size, or a full re-hash under Options.Verify; a
//     bad blob is removed and each version using it becomes
//     Failed(ChecksumMismatch) (or Failed(MissingBlob)); a failed Active
//     hands over to its Previous in the same transaction;
//  3. every Active version is materialised and returned in Serve.
//
// Boot does not garbage-collect; call GC afterwards.
func (s *Store) Boot(ctx context.Context) (models.BootReport, error) {
	var rep models.BootReport
	all, err := s.Models(ctx)
	if err != nil {
		return rep, err
	}
	// 1. Interrupted loads.
	for _, mi := range all {
		for _, v := range mi.Versions {
			if v.State == models.Loading || v.State == models.Warming {
				fv, err := s.Fail(ctx, mi.Name, v.Version, models.ReasonInterrupted, "node restarted while "+string(v.State))
				if err != nil {
					return rep, err
				}
				rep.Failed = append(rep.Failed, fv)
				s.bootFailures.WithLabelValues(string(models.ReasonInterrupted)).Inc()
			}
		}
	}
	// 1b. Rollouts the restart interrupted: the candidate (Canary/Shadow)
	// is retired and the rollout aborted in one transaction; Active never
	// stopped being Active. The cloud may start the rollout again.
	if err := s.abortInterruptedRollouts(ctx); err != nil {
		return rep, err
	}
	if all, err = s.Models(ctx); err != nil {
		return rep, err
	}
	// 2. Blob check, each digest once.
	type verdict struct {
		err    error
		reason models.Reason
	}
	checked := map[string]verdict{}
	check := func(f models.FileRef, full bool) verdict {
		if vd, ok := checked[f.SHA256]; ok && (vd.err != nil || !full) {
			return vd
		}
		err := s.blobs.Verify(ctx, f.SHA256, f.Size, full)
		rep.Checked++
		if full {
			rep.Rehashed++
		}
		vd := verdict{err: err}
		switch {
		case err == nil:
		case errors.Is(err, models.ErrChecksumMismatch):
			vd.reason = models.ReasonChecksumMismatch
		case isNotFound(err):
			vd.reason = models.ReasonMissingBlob
		}
		checked[f.SHA256] = vd
		return vd
	}
	for _, mi := range all {
		bad := map[string]verdict{}
		for _, v := range mi.Versions {
			if !v.State.HasBlobs() {
				continue
			}
			full := s.opts.Verify == VerifyFull || (s.opts.Verify == VerifyFullActive && v.State == models.Active)
			for _, f := range v.Manifest.Files {
				vd := check(f, full)
				if vd.err == nil {
					continue
				}
				if vd.reason == "" {
					return rep, vd.err // an I/O error, not a verdict
				}
				if vd.reason == models.ReasonChecksumMismatch {
					s.removeBadBlob(ctx, f.SHA256)
				}
				bad[v.Version] = vd
				break
			}
		}
		if len(bad) == 0 {
			continue
		}
		// Fail the non-Active ones first, so a bad Previous is no longer a
		// rollback target when the Active one fails.
		err := s.cat.Update(ctx, func(tx *catalog.Tx) error {
			order := make([]string, 0, len(bad))
			for ver := range bad {
				if ver != mi.Active {
					order = append(order, ver)
				}
			}
			if _, ok := bad[mi.Active]; ok {
				order = append(order, mi.Active)
			}
			for _, ver := range order {
				vd := bad[ver]
				fv, err := failTx(tx, mi.Name, ver, vd.reason, "boot check: "+vd.err.Error())
				if err != nil {
					return err
				}
				rep.Failed = append(rep.Failed, fv)
				s.bootFailures.WithLabelValues(string(vd.reason)).Inc()
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("boot check %s: %w", mi.Name, err)
		}
		if _, ok := bad[mi.Active]; ok && mi.Active != "" {
			rep.RolledBack = append(rep.RolledBack, mi.Name)
			s.log.Warn().Str("model", mi.Name).Str("version", mi.Active).Msg("active version failed the boot check; rolled back")
		}
	}
	// 3. What to serve.
	if all, err = s.Models(ctx); err != nil {
		return rep, err
	}
	for _, mi := range all {
		if mi.Active == "" {
			continue
		}
		dir, err := s.Materialize(ctx, mi.Name, mi.Active)
		if err != nil {
			return rep, fmt.Errorf("boot: materialise %s/%s: %w", mi.Name, mi.Active, err)
		}
		var info models.VersionInfo
		for _, v := range mi.Versions {
			if v.Version == mi.Active {
				info = v
			}
		}
		rep.Serve = append(rep.Serve, models.Serving{Model: mi.Name, Version: mi.Active, State: models.Active, Dir: dir, Info: info})
	}
	s.log.Info().Int("serve", len(rep.Serve)).Int("failed", len(rep.Failed)).Int("checked", rep.Checked).Int("rehashed", rep.Rehashed).Msg("boot check done")
	return rep, nil
}
