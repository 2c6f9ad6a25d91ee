package tasks

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestProtocolJSONRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	ref := LeaseRef{Task: 9, Attempt: 2, Token: "tok"}
	tests := []struct {
		name string
		msg  any
		// fields that must appear at the top level of the encoding
		top []string
	}{
		{"lease", &Lease{LeaseRef: ref, Expires: at}, []string{"task", "attempt", "token", "expires"}},
		{"register request", &RegisterRequest{Name: "w1", Groups: []string{"ops"}, Tags: []string{"gpu"}, Slots: 4, Running: []LeaseRef{ref}}, []string{"name", "running"}},
		{"register response", &RegisterResponse{Session: "s", Host: "w1", Slots: 4, Env: map[string]string{"A": "b"}, LeaseTTL: Duration(30 * time.Second), Heartbeat: Duration(10 * time.Second), LogCap: DefaultLogCap, KillGrace: Duration(5 * time.Second), Stop: []Stop{{Task: 1, Attempt: 1, Reason: "cancelled"}}}, []string{"lease_ttl", "heartbeat", "kill_grace", "log_cap"}},
		{"claim request", &ClaimRequest{Max: 2, Wait: Duration(30 * time.Second)}, []string{"max", "wait"}},
		{"claim response", &ClaimResponse{Assignments: []Assignment{{Lease: Lease{LeaseRef: ref, Expires: at}, Task: Task{ID: 9, Spec: Spec{Group: "ops", Shell: "true"}, State: Running, Attempt: 2, CreatedAt: at}}}}, []string{"assignments"}},
		{"heartbeat", &HeartbeatRequest{Running: []LeaseRef{ref}, Wait: Duration(time.Second)}, []string{"running", "wait"}},
		{"finish", &FinishRequest{Lease: ref, Result: Result{State: Succeeded, ExitCode: intPtr(0), StartedAt: at, FinishedAt: at.Add(time.Second)}}, []string{"lease", "result"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.msg)
			if err != nil {
				t.Fatalf("json.Marshal: %v", err)
			}
			var top map[string]json.RawMessage
			if err := json.Unmarshal(b, &top); err != nil {
				t.Fatalf("json.Unmarshal into map: %v", err)
			}
			for _, k := range tt.top {
				if _, ok := top[k]; !ok {
					t.Errorf("JSON %s lacks top-level %q", b, k)
				}
			}
			back := reflect.New(reflect.TypeOf(tt.msg).Elem()).Interface()
			if err := json.Unmarshal(b, back); err != nil {
				t.Fatalf("json.Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(back, tt.msg) {
				t.Errorf("round trip:\ngot  %+v\nwant %+v", back, tt.msg)
			}
		})
	}
}
