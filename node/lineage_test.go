package node

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/models"
)

// TestCloudLineageShown: a version published with lineage (signed in its
// manifest) shows it, once Active, in the KServe model metadata's
// parameters, in the node's status to the cloud and as labels of
// edge_model_lineage_info; a version without lineage shows none.
func TestCloudLineageShown(t *testing.T) {
	e := newCloudEnv(t)
	rn := e.startServingCls()
	lin := &models.Lineage{TrainingRun: "mlflow:cls-run-7", DatasetDigest: "sha256:" + strings.Repeat("5e", 32),
		SourceCommit: "9f8e7d6c5b4a", Metrics: map[string]float64{"accuracy": 0.962}}
	e.lineage = lin
	e.publish(e.key, "ppocr_cls", "2", modelBytes(t, "ppocr_cls", "lineage"), nil)
	e.deploy("ppocr_cls", "2")
	waitFor(t, "version 2 active", func() bool { return activeVersion(t, rn.url, "ppocr_cls") == "2" })

	status, _, b := call(t, http.MethodGet, rn.url+"/v2/models/ppocr_cls/versions/2", nil, nil)
	var md struct {
		Parameters map[string]string `json:"parameters"`
	}
	if err := json.Unmarshal(b, &md); err != nil || status != http.StatusOK {
		t.Fatalf("metadata HTTP %d %s: %v", status, b, err)
	}
	want := lin.Parameters()
	for k, v := range want {
		if md.Parameters[k] != v {
			t.Errorf("metadata parameter %s = %q, want %q (all: %v)", k, md.Parameters[k], v, md.Parameters)
		}
	}
	// Version 1 came from the repository folder: no lineage.
	_, _, b = call(t, http.MethodGet, rn.url+"/v2/models/ppocr_cls/versions/1", nil, nil)
	if bytes.Contains(b, []byte("training_run")) {
		t.Errorf("version 1 has lineage: %s", b)
	}

	waitFor(t, "status with the lineage", func() bool {
		st, ok := e.status()
		l := st.Models["ppocr_cls"].Lineage
		return ok && l != nil && l.TrainingRun == lin.TrainingRun && l.Metrics["accuracy"] == 0.962
	})

	_, _, metrics := call(t, http.MethodGet, rn.url+"/metrics", nil, nil)
	info := `edge_model_lineage_info{dataset_digest="` + lin.DatasetDigest + `",model="ppocr_cls",source_commit="9f8e7d6c5b4a",training_run="mlflow:cls-run-7",version="2"} 1`
	if !bytes.Contains(metrics, []byte(info)) {
		t.Errorf("metrics lack %s", info)
	}
	if !bytes.Contains(metrics, []byte(`edge_model_evaluation_metric{metric="accuracy",model="ppocr_cls",version="2"} 0.962`)) {
		t.Error("metrics lack the evaluation metric")
	}
}
