package serving

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/pipeline"
	"github.com/edgeai/edge-node/models"
)

// EnsembleConfig is a model config's `ensemble` section: a model with no
// graph of its own that chains other models. Exactly one kind is set.
//
//	ensemble:
//	  ocr:
//	    det: {model: ppocr_det, version: "1"}
//	    cls: {model: ppocr_cls, version: "1"}
//	    rec: {model: ppocr_rec, version: "1"}
//	    dictionary: ppocr_keys_v1.txt
//
// The member versions are pinned: they are part of the ensemble version's
// config, so a new pinning is a new ensemble version (carried, like any
// config, in its signed manifest).
type EnsembleConfig struct {
	OCR *pipeline.OCRConfig `yaml:"ocr"`
}

// validate applies defaults and checks the section; errors wrap
// inference.ErrInvalidArgument.
func (c *EnsembleConfig) validate() error {
	if c.OCR == nil {
		return fmt.Errorf("ensemble: no kind set (the one kind is ocr): %w", inference.ErrInvalidArgument)
	}
	o := c.OCR.Defaults()
	if err := o.Validate(); err != nil {
		return err
	}
	for name, m := range map[string]pipeline.Member{"det": o.Det, "cls": o.Cls, "rec": o.Rec} {
		if err := models.ValidModelName(m.Model); err != nil {
			return fmt.Errorf("ensemble ocr: member %s: %w", name, err)
		}
		if err := models.ValidVersion(m.Version); err != nil {
			return fmt.Errorf("ensemble ocr: member %s: %w", name, err)
		}
	}
	if err := models.ValidFilePath(o.Dictionary); err != nil {
		return fmt.Errorf("ensemble ocr: dictionary: %w", err)
	}
	c.OCR = &o
	return nil
}

// Graphless reports whether a model config declares a model with no graph
// of its own (an ensemble), whose versions have no model file: the
// store's Options.Graphless.
func Graphless(config []byte) bool {
	cfg, err := ParseModelConfig(config)
	return err == nil && cfg.Ensemble != nil
}

// ensembleModel is an ensemble as the router holds it. It owns no
// session: Close has nothing to free.
type ensembleModel struct{ *pipeline.OCR }

func (ensembleModel) Close() error { return nil }

// loadEnsemble builds an ensemble version from its config and the files of
// its version folder. Its members are not looked up here: each request
// acquires them from the owner, so the ensemble serves as soon as its
// pinned members are routed, whatever order they were activated in.
func (e *engine) loadEnsemble(v models.VersionInfo, dir string, c EnsembleConfig) (servable, error) {
	cfg := c.OCR
	dict, err := readLabels(filepath.Join(dir, cfg.Dictionary))
	if err != nil {
		return nil, fmt.Errorf("ensemble %s/%s: dictionary %s: %w", v.Model, v.Version, cfg.Dictionary, err)
	}
	p, err := pipeline.NewOCRPipeline(*cfg, dict)
	if err != nil {
		return nil, fmt.Errorf("ensemble %s/%s: %w", v.Model, v.Version, err)
	}
	e.log.Info().Str("model", v.Model).Str("version", v.Version).Stringer("det", cfg.Det).Stringer("cls", cfg.Cls).
		Stringer("rec", cfg.Rec).Int("dictionary", len(dict)).Msg("ensemble loaded")
	return ensembleModel{pipeline.NewOCR(v.Model, v.Version, p, e.acquire, e.pipelineMetrics)}, nil
}

// readLabels reads a labels file or character dictionary of at most
// pipeline.MaxLabelsFile bytes.
func readLabels(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, inference.ErrInvalidArgument)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, pipeline.MaxLabelsFile+1))
	if err != nil {
		return nil, err
	}
	return pipeline.ParseLabels(b)
}
