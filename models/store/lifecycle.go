package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/catalog"
)

// Announce records a signed manifest from the cloud. See models.Store.
func (s *Store) Announce(ctx context.Context, signed []byte) (models.VersionInfo, error) {
	sm, m, verr := models.OpenSignedManifest(signed, s.opts.TrustedKeys)
	if verr != nil {
		if !errors.Is(verr, models.ErrSignatureInvalid) {
			return models.VersionInfo{}, verr
		}
		// Record Failed(SignatureInvalid) only for a version we do not
		// have: a forged manifest must never touch a real version.
		um, derr := models.DecodeManifest(sm.Payload)
		if derr != nil {
			return models.VersionInfo{}, verr
		}
		var out models.VersionInfo
		err := s.cat.Update(ctx, func(tx *catalog.Tx) error {
			if _, err := tx.Version(um.Model, um.Version); !isNotFound(err) {
				return err
			}
			var err error
			out, err = tx.CreateVersion(models.VersionInfo{Model: um.Model, Version: um.Version, State: models.Failed,
				Reason: models.ReasonSignatureInvalid, Detail: verr.Error(), Source: "cloud", Manifest: um})
			return err
		})
		if err != nil {
			return out, errors.Join(verr, err)
		}
		s.log.Warn().Err(verr).Str("model", um.Model).Str("version", um.Version).Msg("manifest rejected")
		return out, verr
	}
	if s.opts.ValidateConfig != nil && m.Config != "" {
		if err := s.opts.ValidateConfig([]byte(m.Config)); err != nil {
			return models.VersionInfo{}, fmt.Errorf("announce %s/%s: config: %w", m.Model, m.Version, err)
		}
	}
	var out models.VersionInfo
	err := s.cat.Update(ctx, func(tx *catalog.Tx) error {
		old, err := tx.Version(m.Model, m.Version)
		switch {
		case err == nil && old.Source == "cloud" && string(old.Signed) == string(signed):
			out = old // a duplicate: harmless
			return nil
		case err == nil && old.State == models.Failed && old.Reason == models.ReasonSignatureInvalid:
			if err := tx.DeleteVersion(m.Model, m.Version); err != nil {
				return err
			}
		case err == nil && sameFiles(old.Manifest.Files, m.Files):
			out = old // same content re-signed (key rotation) or imported first
			return nil
		case err == nil:
			return fmt.Errorf("announce %s/%s: version exists with other content: %w", m.Model, m.Version, models.ErrExists)
		case !isNotFound(err):
			return err
		}
		out, err = tx.CreateVersion(models.VersionInfo{Model: m.Model, Version: m.Version, State: models.Announced,
			Source: "cloud", Manifest: m, Signed: append([]byte(nil), signed...)})
		return err
	})
	return out, err
}

// Activate makes a version Active. See models.Store.
func (s *Store) Activate(ctx context.Context, model, version string, loader models.Loader) (models.VersionInfo, error) {
	return s.promote(ctx, model, version, loader, nil)
}

// Rollback makes Previous Active again; the demoted Active becomes Retired
// (and the new Previous), or Failed(opts.FailReason).
func (s *Store) Rollback(ctx context.Context, model string, opts models.RollbackOptions) (models.VersionInfo, error) {
	if opts.FailReason != "" && !opts.FailReason.Valid() {
		return models.VersionInfo{}, fmt.Errorf("rollback %s: reason %q: %w", model, opts.FailReason, models.ErrInvalidArgument)
	}
	mi, err := s.Model(ctx, model)
	if err != nil {
		return models.VersionInfo{}, err
	}
	if mi.Previous == "" {
		return models.VersionInfo{}, fmt.Errorf("rollback %s: no previous version: %w", model, models.ErrNotFound)
	}
	demoted := mi.Active
	after := func(tx *catalog.Tx) error {
		if opts.FailReason == "" || demoted == "" {
			return nil
		}
		_, err := tx.Transition(model, demoted, models.Failed, models.TransitionOptions{Reason: opts.FailReason, Detail: opts.Detail})
		return err
	}
	return s.promote(ctx, model, mi.Previous, opts.Loader, after)
}

// promote drives version to Active; after runs in the final transaction.
func (s *Store) promote(ctx context.Context, model, version string, loader models.Loader, after func(*catalog.Tx) error) (models.VersionInfo, error) {
	return s.bringUp(ctx, model, version, models.Active, loader, after)
}

// bringUp drives version to target (Active, or Canary/Shadow for a rollout
// candidate); after runs in the final transaction.
func (s *Store) bringUp(ctx context.Context, model, version string, target models.State, loader models.Loader, after func(*catalog.Tx) error) (models.VersionInfo, error) {
	v, err := s.Version(ctx, model, version)
	if err != nil {
		return v, err
	}
	final := func(opts models.TransitionOptions) (models.VersionInfo, error) {
		if c, ok := loader.(models.Committer); ok {
			return c.Commit(func() (models.VersionInfo, error) { return s.finalTransition(ctx, model, version, target, opts, after) })
		}
		return s.finalTransition(ctx, model, version, target, opts, after)
	}
	switch {
	case v.State == target:
		return v, nil
	case target == models.Active && (v.State == models.Warming || v.State == models.Canary || v.State == models.Shadow):
		return final(models.TransitionOptions{})
	case target == models.Active && v.State == models.Retired && loader == nil:
		return final(models.TransitionOptions{Detail: "reactivated (still loaded)"})
	case (v.State == models.Ready || v.State == models.Retired) && loader != nil:
	default:
		if loader == nil && v.State == models.Ready {
			return v, fmt.Errorf("activate %s/%s: a Ready version needs a loader (Ready → Loading → Warming → Active): %w",
				model, version, &models.TransitionError{Model: model, Version: version, From: v.State, To: models.Active})
		}
		return v, &models.TransitionError{Model: model, Version: version, From: v.State, To: target}
	}
	dir, err := s.Materialize(ctx, model, version)
	if err != nil {
		if isNotFound(err) {
			_, _ = s.Fail(ctx, model, version, models.ReasonMissingBlob, err.Error())
		}
		return v, err
	}
	if v, err = s.Transition(ctx, model, version, models.Loading, models.TransitionOptions{}); err != nil {
		return v, err
	}
	if err := loader.Load(ctx, v, dir); err != nil {
		v, ferr := s.Fail(context.WithoutCancel(ctx), model, version, models.ReasonLoadError, err.Error())
		return v, errors.Join(fmt.Errorf("activate %s/%s: load: %w", model, version, err), ferr)
	}
	if v, err = s.Transition(ctx, model, version, models.Warming, models.TransitionOptions{}); err != nil {
		return v, err
	}
	wr, err := loader.Warmup(ctx, v)
	if err != nil {
		wr.Error = err.Error()
		var v models.VersionInfo
		ferr := s.cat.Update(context.WithoutCancel(ctx), func(tx *catalog.Tx) (e error) {
			v, e = tx.Transition(model, version, models.Failed, models.TransitionOptions{Reason: models.ReasonWarmupFailed, Detail: err.Error(), Warmup: &wr, Provider: wr.Provider})
			return e
		})
		return v, errors.Join(fmt.Errorf("activate %s/%s: warm-up: %w", model, version, err), ferr)
	}
	return final(models.TransitionOptions{Provider: wr.Provider, Warmup: &wr})
}

// finalTransition records version brought up to target, with after in the
// same transaction.
func (s *Store) finalTransition(ctx context.Context, model, version string, target models.State, opts models.TransitionOptions, after func(*catalog.Tx) error) (models.VersionInfo, error) {
	var out models.VersionInfo
	err := s.cat.Update(ctx, func(tx *catalog.Tx) error {
		var err error
		if out, err = tx.Transition(model, version, target, opts); err != nil {
			return err
		}
		if after != nil {
			return after(tx)
		}
		return nil
	})
	if err == nil {
		s.log.Info().Str("model", model).Str("version", version).Str("state", string(target)).Msg("brought up")
	}
	return out, err
}

// Retry moves a Failed version back: through Verifying to Ready if all its
// blobs are present and verify, else to Downloading (for the cloud link to
// fetch; an import is retried by importing again).
func (s *Store) Retry(ctx context.Context, model, version string) (models.VersionInfo, error) {
	v, err := s.Version(ctx, model, version)
	if err != nil {
		return v, err
	}
	if v.State != models.Failed {
		return v, &models.TransitionError{Model: model, Version: version, From: v.State, To: models.Verifying}
	}
	for _, f := range v.Manifest.Files {
		if _, err := s.blobs.Stat(f.SHA256); err != nil {
			return s.Transition(ctx, model, version, models.Downloading, models.TransitionOptions{Detail: "retry"})
		}
	}
	if _, err := s.Transition(ctx, model, version, models.Verifying, models.TransitionOptions{Detail: "retry"}); err != nil {
		return v, err
	}
	return s.verify(ctx, model, version)
}

// VerifyVersion moves a Downloading (or Verifying) version to Ready once
// all its blobs are stored and verify; see models.ChunkStore.
func (s *Store) VerifyVersion(ctx context.Context, model, version string) (models.VersionInfo, error) {
	v, err := s.Version(ctx, model, version)
	if err != nil {
		return v, err
	}
	switch v.State {
	case models.Downloading, models.Announced:
		for _, f := range v.Manifest.Files {
			if _, err := s.blobs.Stat(f.SHA256); err != nil {
				return v, fmt.Errorf("verify %s/%s: file %s not stored yet: %w", model, version, f.Path, err)
			}
		}
		if _, err := s.Transition(ctx, model, version, models.Verifying, models.TransitionOptions{}); err != nil {
			return v, err
		}
	case models.Verifying:
	default:
		return v, &models.TransitionError{Model: model, Version: version, From: v.State, To: models.Verifying}
	}
	return s.verify(ctx, model, version)
}

// verify re-hashes a Verifying version's blobs: Ready, or
// Failed(ChecksumMismatch) with the bad blob removed.
func (s *Store) verify(ctx context.Context, model, version string) (models.VersionInfo, error) {
	v, err := s.Version(ctx, model, version)
	if err != nil {
		return v, err
	}
	for _, f := range v.Manifest.Files {
		err := s.blobs.Verify(ctx, f.SHA256, f.Size, true)
		if err == nil {
			continue
		}
		if !errors.Is(err, models.ErrChecksumMismatch) && !isNotFound(err) {
			return v, err
		}
		reason := models.ReasonChecksumMismatch
		if isNotFound(err) {
			reason = models.ReasonMissingBlob
		}
		s.removeBadBlob(ctx, f.SHA256)
		fv, ferr := s.Fail(ctx, model, version, reason, err.Error())
		return fv, errors.Join(err, ferr)
	}
	err = s.cat.Update(ctx, func(tx *catalog.Tx) error {
		for _, f := range v.Manifest.Files {
			if err := tx.IndexChunks(f); err != nil {
				return err
			}
		}
		var err error
		v, err = tx.Transition(model, version, models.Ready, models.TransitionOptions{})
		return err
	})
	return v, err
}

func (s *Store) removeBadBlob(ctx context.Context, digest string) {
	if err := s.cat.Update(context.WithoutCancel(ctx), func(tx *catalog.Tx) error { return tx.UnindexBlob(digest) }); err != nil {
		s.log.Error().Err(err).Str("digest", digest).Msg("unindex bad blob")
	}
	if err := s.blobs.Delete(digest); err != nil {
		s.log.Error().Err(err).Str("digest", digest).Msg("remove bad blob")
	}
}
