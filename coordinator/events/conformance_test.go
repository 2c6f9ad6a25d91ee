package events_test

import (
	"testing"

	"github.com/mitolab/mito/coordinator/events"
	"github.com/mitolab/mito/coordinator/events/eventstest"
)

func TestLocalConformance(t *testing.T) {
	eventstest.Run(t, func(*testing.T) events.Bus { return events.NewLocal() })
}
