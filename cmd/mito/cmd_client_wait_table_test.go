package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mitolab/mito/tasks"
)

// TestWaitTablePointsToTheWholeError: an error too long for the table is
// cut short, and a line says where to read it whole.
func TestWaitTablePointsToTheWholeError(t *testing.T) {
	long := "input task:8/out.txt=in/out.txt: task 8 ended failed; inputs come only from a task that succeeded"
	var b bytes.Buffer
	if err := printWaitTable(&b, []tasks.Task{{ID: 9, State: tasks.Failed, Error: long}, {ID: 10, State: tasks.Failed, Error: "short"}}); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "…") || !strings.HasSuffix(out, "(errors cut short; the whole of one: mito client tasks get 9)\n") {
		t.Errorf("table:\n%s\nwant the error cut short and a pointer to tasks get 9", out)
	}
	b.Reset()
	if err := printWaitTable(&b, []tasks.Task{{ID: 10, State: tasks.Failed, Error: "short"}}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "cut short") {
		t.Errorf("table of a short error says it was cut:\n%s", b.String())
	}
}
