package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestDaemonSetConfig: the config the KubeEdge DaemonSet mounts
// (deploy/kubeedge/daemonset.yaml, its ConfigMap) is one the node accepts,
// with the container's environment as the DaemonSet sets it (a value from
// a fieldRef, such as the node's name, gets a stand-in). deploy/kubeedge's own tests check the rest of it.
func TestDaemonSetConfig(t *testing.T) {
	b, err := os.ReadFile("../../deploy/kubeedge/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(b), "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("%d documents, want the DaemonSet and its ConfigMap", len(docs))
	}
	var ds struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Env []struct {
							Name, Value string
							ValueFrom   any `json:"valueFrom"`
						}
					}
				}
			}
		}
	}
	if err := yaml.Unmarshal([]byte(docs[0]), &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(ds.Spec.Template.Spec.Containers))
	}
	for _, e := range ds.Spec.Template.Spec.Containers[0].Env {
		v := e.Value
		if e.ValueFrom != nil {
			v = "edge-node-1"
		}
		t.Setenv(e.Name, v)
	}
	var cm struct{ Data map[string]string }
	if err := yaml.Unmarshal([]byte(docs[1]), &cm); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := resolveConfig(newRootCommand().Flags(), path)
	if err != nil {
		t.Fatalf("the DaemonSet's config.yaml: %v", err)
	}
	if !cfg.Cloud.Disabled || !cfg.KubeEdge.DMI.Enabled || cfg.KubeEdge.DMI.DeviceName != "edge-node-1" {
		t.Errorf("cloud disabled %v, DMI %v as %q: want no cloud link and the DMI bridge for edge-node-1", cfg.Cloud.Disabled, cfg.KubeEdge.DMI.Enabled, cfg.KubeEdge.DMI.DeviceName)
	}
}
