package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/mitolab/mito/client"
	"github.com/mitolab/mito/tasks"
)

// Example logs in, submits a task to the user's personal group, waits for
// it to end and prints its output.
func Example() {
	ctx := context.Background()
	anon, err := client.New("http://127.0.0.1:7800")
	if err != nil {
		log.Fatal(err)
	}
	cred, err := anon.Login(ctx, "ann", os.Getenv("MITO_PASSWORD"), 24*time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(anon.BaseURL(), client.WithToken(cred.Token))
	if err != nil {
		log.Fatal(err)
	}

	task, err := c.Submit(ctx, tasks.Spec{
		Group:   cred.User.Name, // every user has a personal group of their name
		Command: []string{"uname", "-a"},
		Timeout: tasks.Duration(10 * time.Minute),
		Tags:    []string{"linux"},
	})
	if err != nil {
		log.Fatal(err)
	}
	// Long-poll rather than sleep: each call returns as soon as the task
	// is final, or after 30s.
	for !task.State.Final() {
		if task, err = c.WaitTask(ctx, task.ID, 30*time.Second); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("task %d %s\n", task.ID, task.State)

	var offset int64
	for {
		b, next, err := c.ReadLog(ctx, task.ID, 0, tasks.Stdout, offset, 1<<20)
		if err != nil {
			log.Fatal(err)
		}
		if len(b) == 0 {
			break
		}
		os.Stdout.Write(b)
		offset = next
	}
}
