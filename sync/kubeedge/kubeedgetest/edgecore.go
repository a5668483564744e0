package kubeedgetest

import (
	"context"
	"errors"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dmiapi "github.com/kubeedge/api/apis/dmi/v1beta1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// EdgeCore stands in for KubeEdge's EdgeCore: a DeviceManagerService built
// from kubeedge/api's generated code, on a unix socket. It answers
// MapperRegister with the devices it holds and records every report.
//
// It is as strict as the real one (kubeedge edge/pkg/devicetwin/dmiserver):
//   - a twin without ObservedDesired or Reported crashes the real EdgeCore
//     (it reads twin.ObservedDesired.Value unchecked): the stand-in fails the
//     test and refuses the report;
//   - a report without twins is refused with the real one's error
//     ("ReportDeviceStatusRequest does not have twin data"), and fails the
//     test: the node must not send them;
//   - a reported value that is not of the property's declared type
//     (PropertyType: FLOAT for p99_ms and error_rate, as in
//     deploy/kubeedge/devicemodel.yaml) fails the test;
//   - MapperRegister without a Protocol is refused ("protocol is nil").
//
// Restart stops it, forgets the registered mapper and serves again on the
// same socket; until the mapper registers again its reports are refused
// (codes.FailedPrecondition, "mapper ... not registered").
type EdgeCore struct {
	dmiapi.UnimplementedDeviceManagerServiceServer

	t       testing.TB
	sock    string
	devices []*dmiapi.Device
	// Reports receives every accepted ReportDeviceStatus request
	// (buffered; a test that stops reading makes the mapper's reports
	// wait).
	Reports chan *dmiapi.ReportDeviceStatusRequest

	mu sync.Mutex // guards the fields below
	// srv serves sock until Restart or the end of the test.
	srv        *grpc.Server
	registered []*dmiapi.MapperRegisterRequest
	// mapperKnown is true once a mapper registered since the last start.
	mapperKnown bool
	// reports and twins count accepted reports and the twins in them
	// (each twin is one DeviceStatus update in the real EdgeCore, which
	// sends every twin as its own message).
	reports, twins int
	// status is the device's reported values as the cloud's DeviceStatus
	// holds them: every accepted twin merged in, by property name.
	status map[string]string
}

// MapperRegister implements DeviceManagerServiceServer.
func (e *EdgeCore) MapperRegister(_ context.Context, req *dmiapi.MapperRegisterRequest) (*dmiapi.MapperRegisterResponse, error) {
	if req.GetMapper().GetProtocol() == "" {
		return nil, errors.New("fail to register mapper because the protocol is nil")
	}
	e.mu.Lock()
	e.registered = append(e.registered, req)
	e.mapperKnown = true
	e.mu.Unlock()
	return &dmiapi.MapperRegisterResponse{DeviceList: e.devices}, nil
}

// PropertyType is the declared type of a property of the node's
// DeviceModel (deploy/kubeedge/devicemodel.yaml): FLOAT for <model>.p99_ms
// and <model>.error_rate, STRING for the others.
func PropertyType(name string) string {
	if strings.HasSuffix(name, ".p99_ms") || strings.HasSuffix(name, ".error_rate") {
		return "FLOAT"
	}
	return "STRING"
}

// ReportDeviceStatus implements DeviceManagerServiceServer.
func (e *EdgeCore) ReportDeviceStatus(ctx context.Context, req *dmiapi.ReportDeviceStatusRequest) (*dmiapi.ReportDeviceStatusResponse, error) {
	e.mu.Lock()
	known := e.mapperKnown
	e.mu.Unlock()
	if !known {
		return nil, status.Errorf(codes.FailedPrecondition, "mapper for device %s/%s not registered", req.GetDeviceNamespace(), req.GetDeviceName())
	}
	twins := req.GetReportedDevice().GetTwins()
	if len(twins) == 0 {
		e.t.Errorf("EdgeCore stand-in: report for %s/%s without twins (the real EdgeCore refuses it)", req.GetDeviceNamespace(), req.GetDeviceName())
		return &dmiapi.ReportDeviceStatusResponse{}, errors.New("ReportDeviceStatusRequest does not have twin data")
	}
	for _, tw := range twins {
		if tw.ObservedDesired == nil || tw.Reported == nil {
			e.t.Errorf("EdgeCore stand-in: twin %s without ObservedDesired or Reported: the real EdgeCore panics (nil pointer in CreateMessageTwinUpdate)", tw.GetPropertyName())
			return nil, status.Error(codes.Unavailable, "EdgeCore crashed")
		}
		if PropertyType(tw.GetPropertyName()) == "FLOAT" {
			if _, err := strconv.ParseFloat(tw.GetReported().GetValue(), 64); err != nil {
				e.t.Errorf("EdgeCore stand-in: twin %s is FLOAT, reported %q", tw.GetPropertyName(), tw.GetReported().GetValue())
				return nil, status.Errorf(codes.InvalidArgument, "property %s: %q is not a FLOAT", tw.GetPropertyName(), tw.GetReported().GetValue())
			}
		}
	}
	e.mu.Lock()
	e.reports++
	e.twins += len(twins)
	for _, tw := range twins {
		e.status[tw.GetPropertyName()] = tw.GetReported().GetValue()
	}
	e.mu.Unlock()
	select {
	case e.Reports <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &dmiapi.ReportDeviceStatusResponse{}, nil
}

// Registered returns the MapperRegister requests received so far.
func (e *EdgeCore) Registered() []*dmiapi.MapperRegisterRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*dmiapi.MapperRegisterRequest(nil), e.registered...)
}

// Counts returns the reports accepted so far and the twins in them.
func (e *EdgeCore) Counts() (reports, twins int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reports, e.twins
}

// Restart stops the stand-in (its socket goes away, connections close),
// forgets the registered mapper and serves again on the same socket.
func (e *EdgeCore) Restart() {
	e.t.Helper()
	e.mu.Lock()
	old := e.srv
	e.mapperKnown = false
	e.mu.Unlock()
	old.Stop()
	os.Remove(e.sock)
	time.Sleep(100 * time.Millisecond) // down for a moment, like a restart
	e.serve()
}

func (e *EdgeCore) serve() {
	e.t.Helper()
	ln, err := net.Listen("unix", e.sock)
	if err != nil {
		e.t.Fatal(err)
	}
	srv := grpc.NewServer()
	dmiapi.RegisterDeviceManagerServiceServer(srv, e)
	go srv.Serve(ln)
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
}

// ShortTempDir returns a temporary folder with a short path: unix socket
// paths are limited to 107 bytes and t.TempDir() can be longer.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ke")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// StartEdgeCore serves an EdgeCore on sock holding devices, until the end
// of the test.
func StartEdgeCore(t testing.TB, sock string, devices ...*dmiapi.Device) *EdgeCore {
	t.Helper()
	ec := &EdgeCore{t: t, sock: sock, devices: devices, status: map[string]string{}, Reports: make(chan *dmiapi.ReportDeviceStatusRequest, 64)}
	ec.serve()
	t.Cleanup(func() {
		ec.mu.Lock()
		srv := ec.srv
		ec.mu.Unlock()
		srv.Stop()
	})
	return ec
}

// Device builds a Device of the node's protocol with props as desired
// values, in name order.
func Device(namespace, name string, props map[string]string) *dmiapi.Device {
	d := &dmiapi.Device{Name: name, Namespace: namespace, Spec: &dmiapi.DeviceSpec{
		DeviceModelReference: "edge-ai-node",
		Protocol:             &dmiapi.ProtocolConfig{ProtocolName: "edge-node"},
	}}
	names := make([]string, 0, len(props))
	for n := range props {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		d.Spec.Properties = append(d.Spec.Properties, &dmiapi.DeviceProperty{Name: n, Desired: &dmiapi.TwinProperty{Value: props[n]}})
	}
	return d
}

// Twins returns a report's reported values by property name.
func Twins(r *dmiapi.ReportDeviceStatusRequest) map[string]string {
	out := map[string]string{}
	for _, tw := range r.GetReportedDevice().GetTwins() {
		out[tw.GetPropertyName()] = tw.GetReported().GetValue()
	}
	return out
}

// Status returns the reported values as DeviceStatus holds them (every
// report merged in; a report carries only the twins that changed).
func (e *EdgeCore) Status() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]string, len(e.status))
	for k, v := range e.status {
		out[k] = v
	}
	return out
}

// WaitReport reads reports for namespace/name until the merged status
// (Status) has every value in want, and returns that status. The deadline only stops a hung test; nothing is
// asserted about time.
func (e *EdgeCore) WaitReport(t testing.TB, namespace, name string, want map[string]string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var last map[string]string
	for {
		select {
		case r := <-e.Reports:
			if r.GetDeviceName() != name || r.GetDeviceNamespace() != namespace {
				t.Fatalf("report for %s/%s, want %s/%s", r.GetDeviceNamespace(), r.GetDeviceName(), namespace, name)
			}
			t.Logf("EdgeCore got a report: %v", Twins(r))
			last = e.Status()
			ok := true
			for k, v := range want {
				if last[k] != v {
					ok = false
				}
			}
			if ok {
				return last
			}
		case <-ctx.Done():
			t.Fatalf("no report with %v; last report: %v", want, last)
		}
	}
}
