package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mitolab/mito/coordinator/artifacts"
	"github.com/mitolab/mito/inventory"
	"github.com/mitolab/mito/tasks"
)

// presigningStore presigns anything; its other methods are not called.
type presigningStore struct{ artifacts.Store }

func (presigningStore) PresignPut(ctx context.Context, key string, expiry time.Duration) (*url.URL, error) {
	return url.Parse("http://s3.invalid/" + key)
}

func (presigningStore) PresignGet(ctx context.Context, key string, expiry time.Duration, filename string) (*url.URL, error) {
	return url.Parse("http://s3.invalid/" + key)
}

func (presigningStore) Stat(ctx context.Context, key string) (int64, error) { return 0, nil }

// TestPresignInputRefusedToARelayHost: an inventory host with `artifacts:
// relay` is told not to ask for input URLs, and refused if it does,
// though the store could presign.
func TestPresignInputRefusedToARelayHost(t *testing.T) {
	c := New(Config{Artifacts: presigningStore{}})
	c.hosts["h"] = &hostDriver{inv: inventory.Host{Name: "h", Artifacts: inventory.ArtifactsRelay}}
	s := &session{linked: true, host: tasks.Host{Name: "h"}}
	c.cluster = "c0" // no store to read it from
	if reg, err := c.registerResponse(t.Context(), s); err != nil || reg.Artifacts != tasks.ArtifactsRelay || reg.DirectInputs {
		t.Errorf("register of a relay host: artifacts %q, direct_inputs %t, %v; want relay and unset", reg.Artifacts, reg.DirectInputs, err)
	}
	body := `{"lease": {"task": 1, "attempt": 1, "token": "t"}, "index": 0}`
	r := httptest.NewRequest("POST", "/worker/v1/tasks/1/inputs-presign", strings.NewReader(body))
	r.SetPathValue("id", "1")
	w := httptest.NewRecorder()
	err := c.handlePresignInput(w, r, s)
	var te *tasks.Error
	if !errors.As(err, &te) || te.Field != "artifacts" || statusOf(te.Code) != http.StatusBadRequest {
		t.Errorf("presign input on a relay host: %v; want 400 invalid on artifacts", err)
	}
	if w.Body.Len() != 0 {
		var p tasks.InputPresignResponse
		_ = json.Unmarshal(w.Body.Bytes(), &p)
		t.Errorf("answered %+v", p)
	}
}
