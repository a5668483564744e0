// Tests that the KubeEdge manifests in this folder parse with kubeedge/api's
// own types (and Kubernetes' for the DaemonSet), strictly, and agree with
// the node's property schema (package sync/kubeedge) and DMI defaults.
package kubeedge_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	devices "github.com/kubeedge/api/apis/devices/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/edgeai/edge-node/sync/kubeedge"
	"github.com/edgeai/edge-node/sync/kubeedge/dmi"
)

// maxManifest bounds a manifest file.
const maxManifest = 1 << 20

// decodeStrict decodes one YAML document into v the way the API server
// would accept it: YAML → JSON, unknown or duplicate fields are errors,
// apiVersion and kind must match.
func decodeStrict(b []byte, apiVersion, kind string, v any) error {
	if len(b) > maxManifest {
		return fmt.Errorf("manifest of %d bytes, limit %d", len(b), maxManifest)
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return err
	}
	var tm struct{ APIVersion, Kind string }
	if err := json.Unmarshal(j, &tm); err != nil {
		return err
	}
	if tm.APIVersion != apiVersion || tm.Kind != kind {
		return fmt.Errorf("apiVersion %q kind %q, want %s %s", tm.APIVersion, tm.Kind, apiVersion, kind)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("more than one document")
	}
	return nil
}

func documents(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, d := range strings.Split(string(b), "\n---\n") {
		out = append(out, []byte(d))
	}
	return out
}

func TestDeviceAndModel(t *testing.T) {
	var model devices.DeviceModel
	if err := decodeStrict(documents(t, "devicemodel.yaml")[0], "devices.kubeedge.io/v1beta1", "DeviceModel", &model); err != nil {
		t.Fatalf("devicemodel.yaml: %v", err)
	}
	var dev devices.Device
	if err := decodeStrict(documents(t, "device.yaml")[0], "devices.kubeedge.io/v1beta1", "Device", &dev); err != nil {
		t.Fatalf("device.yaml: %v", err)
	}
	want := dmi.DefaultConfig().Protocol
	if model.Spec.Protocol != want || dev.Spec.Protocol.ProtocolName != want {
		t.Fatalf("protocols %q / %q, want the mapper's %q", model.Spec.Protocol, dev.Spec.Protocol.ProtocolName, want)
	}
	if dev.Spec.DeviceModelRef == nil || dev.Spec.DeviceModelRef.Name != model.Name {
		t.Fatalf("device refers to model %v, want %s", dev.Spec.DeviceModelRef, model.Name)
	}
	// Every model property follows the schema, with the right access mode,
	// and each model has all eight fields.
	fields := map[string]map[kubeedge.Field]bool{}
	declared := map[string]bool{}
	for _, p := range model.Spec.Properties {
		m, f, ok := kubeedge.SplitPropertyName(p.Name)
		if !ok || !kubeedge.ValidName(p.Name) {
			t.Errorf("model property %q does not follow <model>.<field>", p.Name)
			continue
		}
		wantMode := devices.ReadOnly
		if f.Writable() {
			wantMode = devices.ReadWrite
		}
		if p.AccessMode != wantMode {
			t.Errorf("%s: access mode %s, want %s", p.Name, p.AccessMode, wantMode)
		}
		if fields[m] == nil {
			fields[m] = map[kubeedge.Field]bool{}
		}
		fields[m][f] = true
		declared[p.Name] = true
	}
	for m, fs := range fields {
		for _, f := range kubeedge.Fields {
			if !fs[f] {
				t.Errorf("model %s lacks property %s", m, kubeedge.PropertyName(m, f))
			}
		}
	}
	// The Device's desired values are what the node accepts.
	var props []kubeedge.Property
	for _, p := range dev.Spec.Properties {
		if !declared[p.Name] {
			t.Errorf("device property %q is not in the DeviceModel", p.Name)
		}
		props = append(props, kubeedge.Property{Name: p.Name, Value: p.Desired.Value})
	}
	desired, rej := kubeedge.ParseDesired(props)
	if len(rej) != 0 || desired["silero_vad"].Version != "2" || desired["silero_vad"].Strategy.CanaryPercent != 10 || desired["ppocr_det"].Version != "1" {
		t.Fatalf("device.yaml desired %v, refusals %v", desired, rej)
	}
}

func TestDaemonSet(t *testing.T) {
	docs := documents(t, "daemonset.yaml")
	var ds appsv1.DaemonSet
	if err := decodeStrict(docs[0], "apps/v1", "DaemonSet", &ds); err != nil {
		t.Fatalf("daemonset: %v", err)
	}
	var cm corev1.ConfigMap
	if err := decodeStrict(docs[1], "v1", "ConfigMap", &cm); err != nil {
		t.Fatalf("configmap: %v", err)
	}
	spec := ds.Spec.Template.Spec
	if _, ok := spec.NodeSelector["node-role.kubernetes.io/edge"]; !ok {
		t.Fatalf("nodeSelector %v lacks node-role.kubernetes.io/edge", spec.NodeSelector)
	}
	hostPaths := map[string]bool{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.HostPath.Path] = true
		}
	}
	if !hostPaths["/var/lib/edge-node"] || !hostPaths["/etc/kubeedge"] {
		t.Fatalf("hostPath volumes %v: want the store and the DMI socket folder", hostPaths)
	}
	if !strings.Contains(cm.Data["config.yaml"], "libonnxruntime.so.1") {
		t.Fatalf("config does not name the ONNX Runtime library in the image")
	}
}

// TestDecodeStrictBad is the table of bad manifests.
func TestDecodeStrictBad(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"empty", ``},
		{"not a mapping", `- a`},
		{"wrong kind", "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\n"},
		{"wrong version", "apiVersion: devices.kubeedge.io/v1alpha2\nkind: Device\n"},
		{"unknown field", "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nspec: {colour: red}\n"},
		{"duplicate field", "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nspec: {nodeName: a, nodeName: b}\n"},
		{"wrong type", "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nspec: {properties: {name: x}}\n"},
		{"desired value as number", "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nspec: {properties: [{name: m.version, desired: {value: 2}}]}\n"},
		{"tab indentation", "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nspec:\n\tnodeName: a\n"},
		{"too large", "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\n#" + strings.Repeat("x", maxManifest)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d devices.Device
			if err := decodeStrict([]byte(tc.doc), "devices.kubeedge.io/v1beta1", "Device", &d); err == nil {
				t.Fatalf("accepted %.60q", tc.doc)
			}
		})
	}
}

// FuzzDecodeDevice: no panic, and a Device that decodes gives property
// values the schema decoder handles.
func FuzzDecodeDevice(f *testing.F) {
	if b, err := os.ReadFile("device.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nspec: {properties: [{name: m.version, desired: {value: '1'}}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d devices.Device
		if decodeStrict(b, "devices.kubeedge.io/v1beta1", "Device", &d) != nil {
			return
		}
		var props []kubeedge.Property
		for _, p := range d.Spec.Properties {
			props = append(props, kubeedge.Property{Name: p.Name, Value: p.Desired.Value})
		}
		kubeedge.ParseDesired(props)
	})
}
