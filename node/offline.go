package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/models/store"
	"github.com/edgeai/edge-node/node/serving"
)

// This file is what `edge-node models ...` does with no node running: it
// opens the store under cfg.DataDir directly. A running node holds the
// catalog's file lock; then these return an error wrapping models.ErrLocked
// (after the store's open timeout) and the command points at the admin API.

// ImportVersion imports one model version into the store under
// cfg.DataDir, as PUT /admin/models/{model}/versions/{version} does on a
// running node. With activate, the version is also loaded into ONNX Runtime
// (cfg.ORTLibrary), warmed up and made Active, so the next boot serves it;
// a version that does not load is recorded Failed(LoadError) and the
// previous Active stays.
func ImportVersion(ctx context.Context, cfg Config, req models.ImportRequest, activate bool, logger zerolog.Logger) (_ models.VersionInfo, err error) {
	st, err := openStore(ctx, cfg, logger)
	if err != nil {
		return models.VersionInfo{}, err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	v, err := st.Import(ctx, req)
	if err != nil || !activate {
		return v, err
	}
	env, err := inference.NewEnvironment(inference.EnvironmentConfig{LibraryPath: cfg.ORTLibrary}, logger)
	if err != nil {
		return v, fmt.Errorf("activating needs ONNX Runtime to load the model: %w", err)
	}
	defer func() { err = errors.Join(err, env.Close()) }()
	return serving.ActivateOffline(ctx, st, env, req.Model, req.Version, logger)
}

// ListModels lists the models and versions in the store under cfg.DataDir.
func ListModels(ctx context.Context, cfg Config, logger zerolog.Logger) (_ []models.ModelInfo, err error) {
	st, err := openStore(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	return st.Models(ctx)
}

func openStore(ctx context.Context, cfg Config, logger zerolog.Logger) (*store.Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tr, err := newTrust(cfg)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, storeOptions(cfg, tr.ring), logger, nil)
	if err != nil {
		return nil, err
	}
	if err := tr.load(ctx, st, logger); err != nil {
		return nil, errors.Join(err, st.Close())
	}
	return st, nil
}
