package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/glockd/glockd/client"
)

// Dial tries each address in turn; a host name with several addresses is
// tried address by address too.
func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Nothing listens on the first address.
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	down := closed.Addr().String()
	closed.Close()

	c, err := client.Dial(ctx, "tcp", down, glockdAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println(c.RemoteAddr().String() == glockdAddr)
	// Output: true
}

// RemoteAddr tells which of the addresses the client connected to.
func ExampleClient_RemoteAddr() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "tcp", glockdAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println(c.RemoteAddr().String() == glockdAddr)
	// Output: true
}

// A wait bounded by a context gives up that wait only: the client keeps its
// connection and its other locks.
func ExampleClient_GetWait_context() {
	ctx := context.Background()
	a, _ := client.Dial(ctx, "tcp", glockdAddr)
	defer a.Close()
	b, _ := client.Dial(ctx, "tcp", glockdAddr)
	defer b.Close()
	a.Get(ctx, "ex-gw-busy")
	b.Get(ctx, "ex-gw-mine")

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	got, err := b.GetWait(short, -1, "ex-gw-busy") // sent as "gw 99 ex-gw-busy" or so
	fmt.Println(got, errors.Is(err, context.DeadlineExceeded))
	stillMine, _ := b.Release(ctx, "ex-gw-mine")
	fmt.Println(stillMine)
	// Output:
	// false true
	// true
}

// A session pings the server every second and is lost when the server
// leaves it unanswered for three.
func ExampleNewSession() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()
	fmt.Println(sess.Err())
	// Output: <nil>
}

// Lock waits for the lock as long as ctx allows; the handle's Lost
// channel says when it can no longer be trusted.
func ExampleSession_Lock() {
	ctx := context.Background()
	sess, err := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()

	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	l, err := sess.Lock(wait, "ex-report")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Unlock(ctx)

	work := time.After(10 * time.Millisecond) // stands for the guarded work
	select {
	case <-work:
		fmt.Println("report written under", l.Name())
	case <-l.Lost():
		fmt.Println("stop: the lock may be someone else's now:", sess.Err())
	}
	// Output: report written under ex-report
}

// TryLock does not wait.
func ExampleSession_TryLock() {
	ctx := context.Background()
	a, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer a.Close()
	b, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer b.Close()

	l, err := a.TryLock(ctx, "ex-try")
	fmt.Println(err)
	_, err = b.TryLock(ctx, "ex-try")
	fmt.Println(err, errors.Is(err, client.ErrLocked))
	l.Unlock(ctx)
	_, err = b.TryLock(ctx, "ex-try")
	fmt.Println(err)
	// Output:
	// <nil>
	// glockd: locked true
	// <nil>
}

// Shared locks exclude no one; the server counts their holders.
func ExampleSession_LockShared() {
	ctx := context.Background()
	a, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer a.Close()
	b, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer b.Close()

	ra, _ := a.LockShared(ctx, "ex-readers")
	rb, _ := b.LockShared(ctx, "ex-readers")
	fmt.Println(ra.Holders(), rb.Holders())
	// Output: 1 2
}

// Acquire is a counting semaphore: here at most two connections hold
// "ex-slots" at a time.
func ExampleSession_Acquire() {
	ctx := context.Background()
	var slots []*client.Lock
	for range 2 {
		s, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
		defer s.Close()
		l, err := s.Acquire(ctx, "ex-slots", 2)
		if err != nil {
			log.Fatal(err)
		}
		slots = append(slots, l)
	}
	third, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer third.Close()
	go func() {
		time.Sleep(50 * time.Millisecond)
		slots[0].Unlock(ctx) // frees a slot
	}()
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := third.Acquire(wait, "ex-slots", 2)
	fmt.Println(l.Holders(), err)
	// Output: 2 <nil>
}

// TryAcquire does not wait for a slot.
func ExampleSession_TryAcquire() {
	ctx := context.Background()
	a, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer a.Close()
	b, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer b.Close()

	_, err := a.TryAcquire(ctx, "ex-single", 1)
	fmt.Println(err)
	_, err = b.TryAcquire(ctx, "ex-single", 1)
	fmt.Println(errors.Is(err, client.ErrLocked))
	// Output:
	// <nil>
	// true
}

// Done closes when the session ends; Err says why. After a loss, the
// caller decides what to do: here, start a new session and take the lock
// again.
func ExampleSession_Done() {
	ctx := context.Background()
	addrs := []string{glockdAddr}
	sess, _ := client.NewSession(ctx, "tcp", addrs, client.SessionOptions{})
	l, _ := sess.Lock(ctx, "ex-done")
	sess.Close() // stands for a loss
	<-sess.Done()
	<-l.Lost()
	fmt.Println(sess.Err())

	again, _ := client.NewSession(ctx, "tcp", addrs, client.SessionOptions{})
	defer again.Close()
	l, err := again.Lock(ctx, "ex-done")
	fmt.Println(l.Name(), err)
	// Output:
	// glockd client: closed
	// ex-done <nil>
}

// Err is nil while the session stands.
func ExampleSession_Err() {
	ctx := context.Background()
	sess, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	fmt.Println(sess.Err())
	sess.Close()
	fmt.Println(errors.Is(sess.Err(), client.ErrClosed), errors.Is(sess.Err(), client.ErrSessionLost))
	// Output:
	// <nil>
	// true false
}

// Close releases every lock of the session.
func ExampleSession_Close() {
	ctx := context.Background()
	a, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	a.Lock(ctx, "ex-close")
	a.Close()

	b, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer b.Close()
	wait, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := b.Lock(wait, "ex-close")
	fmt.Println(err)
	// Output: <nil>
}

// Client gives the session's connection for commands that take no lock.
func ExampleSession_Client() {
	ctx := context.Background()
	sess, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer sess.Close()
	l, _ := sess.Lock(ctx, "ex-client")
	token, _ := sess.Client().Token(ctx, "ex-client")
	fmt.Println(token == l.Token())
	// Output: true
}

// Unlock releases the lock; a second Unlock reports ErrNotHeld.
func ExampleLock_Unlock() {
	ctx := context.Background()
	sess, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer sess.Close()
	l, _ := sess.Lock(ctx, "ex-unlock")
	fmt.Println(l.Unlock(ctx))
	fmt.Println(errors.Is(l.Unlock(ctx), client.ErrNotHeld))
	// Output:
	// <nil>
	// true
}

// Lost is closed when the session is lost: stop the guarded work then.
func ExampleLock_Lost() {
	ctx := context.Background()
	sess, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer sess.Close()
	l, _ := sess.Lock(ctx, "ex-lost")
	select {
	case <-l.Lost():
		fmt.Println("lost")
	default:
		fmt.Println("held")
	}
	// Output: held
}

// fencedStore is a resource guarded by a lock: it refuses a write whose
// token is lower than the highest it has seen, so that a holder that lost
// its lock without knowing cannot overwrite a later holder's work.
type fencedStore struct{ highest uint64 }

func (s *fencedStore) write(token uint64) error {
	if token < s.highest {
		return fmt.Errorf("token %d is stale (seen %d)", token, s.highest)
	}
	s.highest = token
	return nil
}

// Token is the fencing token of the grant: it increases with every
// acquisition of the lock.
func ExampleLock_Token() {
	ctx := context.Background()
	sess, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer sess.Close()
	var store fencedStore

	first, _ := sess.Lock(ctx, "ex-token")
	first.Unlock(ctx)
	second, _ := sess.Lock(ctx, "ex-token")
	fmt.Println(store.write(second.Token()))
	err := store.write(first.Token()) // a late write from the first holder
	fmt.Println("late write refused:", err != nil)
	// Output:
	// <nil>
	// late write refused: true
}

// Name is the name as the server knows it, white space normalised.
func ExampleLock_Name() {
	ctx := context.Background()
	sess, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer sess.Close()
	l, _ := sess.Lock(ctx, "  ex  name ")
	fmt.Printf("%q\n", l.Name())
	// Output: "ex name"
}

// Holders is the number of holders of a shared lock when it was taken.
func ExampleLock_Holders() {
	ctx := context.Background()
	sess, _ := client.NewSession(ctx, "tcp", []string{glockdAddr}, client.SessionOptions{})
	defer sess.Close()
	l, _ := sess.LockShared(ctx, "ex-holders")
	fmt.Println(l.Holders())
	// Output: 1
}
