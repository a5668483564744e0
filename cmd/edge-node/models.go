package main

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/node"
)

// newModelsCommand is `edge-node models`: the model store under --data-dir,
// used directly while no node runs (a running node holds the store; use its
// admin API then).
func newModelsCommand() *cobra.Command {
	var nodeConfig string
	cfg := node.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "models",
		Short: "Import and list model versions in the store under --data-dir (while no node runs)",
		Args:  cobra.NoArgs,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&nodeConfig, "node-config", "", "the node's YAML config file (for data_dir, ort_library, http_addr)")
	bindSomeConfigFlags(pf, &cfg, "data-dir", "ort-lib", "http-addr", "log-level", "log-format")

	var name, version, modelConfig string
	var activate bool
	imp := &cobra.Command{
		Use:   "import FILE --name NAME --version VERSION [--config CONFIG.yaml] [--activate]",
		Short: "Import an .onnx file as a model version; --activate also loads, warms up and activates it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			final, err := resolveConfig(cmd.Flags(), nodeConfig)
			if err != nil {
				return err
			}
			req := models.ImportRequest{Model: name, Version: version, ModelFile: args[0]}
			if modelConfig != "" {
				if req.Config, err = os.ReadFile(modelConfig); err != nil {
					return fmt.Errorf("--config: %w", err)
				}
			}
			logger, err := newLogger(final.Log, os.Stderr, false)
			if err != nil {
				return err
			}
			v, err := node.ImportVersion(cmd.Context(), final, req, activate, logger)
			if errors.Is(err, models.ErrLocked) {
				q := ""
				if activate {
					q = "?activate=true"
				}
				return fmt.Errorf("%w\na running edge-node holds the store in %s; import through its admin API instead:\n"+
					"  curl -X PUT%s --data-binary @%s%s 'http://%s/admin/models/%s/versions/%s%s'",
					err, final.DataDir, authHint(final), args[0], configQuery(modelConfig), final.HTTPAddr, name, version, q)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s\n", v.Model, v.Version, v.State)
			return nil
		},
	}
	f := imp.Flags()
	f.StringVar(&name, "name", "", "model name")
	f.StringVar(&version, "version", "", "version (\"1\", \"2024-06-01\", \"v1.2.0\")")
	f.StringVar(&modelConfig, "config", "", "the model's config.yaml (providers, threads, ...)")
	f.BoolVar(&activate, "activate", false, "load, warm up and make it the Active version (needs --ort-lib)")
	_ = imp.MarkFlagRequired("name")
	_ = imp.MarkFlagRequired("version")

	list := &cobra.Command{
		Use:   "list",
		Short: "List models, versions and their states",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			final, err := resolveConfig(cmd.Flags(), nodeConfig)
			if err != nil {
				return err
			}
			logger, err := newLogger(final.Log, os.Stderr, false)
			if err != nil {
				return err
			}
			ms, err := node.ListModels(cmd.Context(), final, logger)
			if errors.Is(err, models.ErrLocked) {
				return fmt.Errorf("%w\na running edge-node holds the store in %s; ask its admin API instead:\n  curl%s 'http://%s/admin/models'",
					err, final.DataDir, authHint(final), final.HTTPAddr)
			}
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "MODEL\tVERSION\tSTATE\tROLE\tREASON")
			for _, m := range ms {
				for _, v := range m.Versions {
					role := ""
					switch v.Version {
					case m.Active:
						role = "active"
					case m.Previous:
						role = "previous"
					case m.Canary:
						role = "canary"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, v.Version, v.State, role, v.Reason)
				}
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(imp, list)
	return cmd
}

// configQuery is the admin API's ?config= hint for a model config file: the
// API takes the config's YAML as a query parameter.
func configQuery(path string) string {
	if path == "" {
		return ""
	}
	return fmt.Sprintf(" --url-query config@%s", path)
}

// authHint is the curl option for the admin token, when one is configured
// (named, not printed).
func authHint(cfg node.Config) string {
	if cfg.AdminToken == "" {
		return ""
	}
	return ` -H "Authorization: Bearer $ADMIN_TOKEN"`
}
