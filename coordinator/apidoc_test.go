package coordinator

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/mitolab/mito/coordinator/events"
)

// TestAPIDocMatchesRoutes keeps docs/api.md true: every served route is
// documented, and every documented route is served.
func TestAPIDocMatchesRoutes(t *testing.T) {
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| (GET|POST|PUT|DELETE) \\| `?(/[^ |`]+)`? \\|")
	var documented []string
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		documented = append(documented, m[1]+" "+m[2])
	}
	c := New(Config{Events: events.NewLocal()})
	var served []string
	for _, p := range c.patterns {
		if p != "/" && p != "GET /healthz" {
			served = append(served, p)
		}
	}
	for _, p := range served {
		if !slices.Contains(documented, p) {
			t.Errorf("route %q is served but not documented in docs/api.md", p)
		}
	}
	for _, p := range documented {
		if !slices.Contains(served, p) {
			t.Errorf("route %q is documented in docs/api.md but not served", p)
		}
	}
	if len(documented) < 25 {
		t.Errorf("found only %d routes in docs/api.md; the table format may have changed", len(documented))
	}
}
