package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/glockd/glockd/client"
)

// A lock is held as long as the connection that took it: close the client
// (or let the process die) and the server releases it.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "tcp", "127.0.0.1:9999")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	got, err := c.Get(ctx, "report-generator")
	if err != nil {
		log.Fatal(err)
	}
	if !got {
		fmt.Println("another worker is generating the report")
		return
	}
	// ... generate the report ...
	if _, err := c.Release(ctx, "report-generator"); err != nil {
		log.Fatal(err)
	}
}

// A Pipeline sends many commands in one write.
func ExamplePipeline() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "unix", "/run/glockd.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	p := c.Pipeline()
	a, b := p.Get("a"), p.Get("b")
	holders := p.SharedGet("readers")
	if err := p.Exec(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(a.Val(), b.Val(), holders.Val())
}

// GetWait queues for a lock; the fencing token then guards writes made
// under it.
func ExampleClient_GetWait() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "ws", "ws://127.0.0.1:9998/")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	got, err := c.GetWait(ctx, 2*time.Second, "db-migration")
	if err != nil || !got {
		log.Fatal("no lock: ", err)
	}
	token, err := c.Token(ctx, "db-migration")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("writing with token", token)
}
