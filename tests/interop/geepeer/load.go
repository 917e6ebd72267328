package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// loadResult is what "geepeer load" prints: one JSON object.
type loadResult struct {
	Calls       int     `json:"calls"`
	Seconds     float64 `json:"seconds"`
	CallsPerS   float64 `json:"calls_per_s"`
	P50Us       float64 `json:"p50_us"`
	P99Us       float64 `json:"p99_us"`
	InFlight    int     `json:"in_flight"`
	Conns       int     `json:"conns"`
	LatenciesNs []int64 `json:"latencies_ns,omitempty"`
}

// runLoad is a load generator (benchmarks/bench_calls.py uses it): it keeps
// -in-flight calls of Arith.Multiply{6, 7} (or Arith.Echo of a -payload-byte
// string) outstanding over -conns connections (each slot is a goroutine that
// issues its next call as soon as its reply arrives, on connection slot %
// conns), first for -warmup calls, then for -duration; it counts the calls
// that completed within the window and reports calls/s and p50/p99 latency.
// Every reply is checked; a wrong one or a transport error fails the run.
// With -markers it prints OPEN and CLOSED as the window opens and closes
// (benchmarks/bench_calls.py reads the server's CPU time then).
func runLoad(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	addr := fs.String("addr", "", "server address host:port")
	inFlight := fs.Int("in-flight", 1, "calls kept outstanding")
	conns := fs.Int("conns", 1, "connections the calls are spread over")
	duration := fs.Duration("duration", 2*time.Second, "measurement window")
	warmup := fs.Int("warmup", 1000, "calls made before the window opens")
	warmupFor := fs.Duration("warmup-for", 300*time.Millisecond, "the warm-up ends after -warmup calls or this long, whichever is first")
	payload := fs.Int("payload", 0, "call Arith.Echo with a string of this many bytes instead of Arith.Multiply")
	wideOption := fs.Bool("wide-option", false, "send the Option padded to 512 bytes (docs/protocol.md 3.3)")
	latencies := fs.Bool("latencies", false, "also print every call's latency (latencies_ns)")
	markers := fs.Bool("markers", false, "print OPEN and CLOSED lines as the window opens and closes")
	callTimeout := fs.Duration("call-timeout", 20*time.Second, "give up waiting for one reply after this")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("load: -addr is required")
	}
	if *inFlight < 1 || *conns < 1 {
		return errors.New("load: -in-flight and -conns must be positive")
	}
	opt := Option{MagicNumber: MagicNumber, CodecType: GobType, ConnectTimeout: 10 * time.Second}
	clients := make([]*rpcClient, *conns)
	for i := range clients {
		c, err := dialClient("tcp", *addr, opt, false, *wideOption, 0, nil, nil)
		if err != nil {
			return err
		}
		defer c.conn.Close()
		clients[i] = c
	}
	method, arg, want := "Arith.Multiply", any(Args{6, 7}), any(42)
	if *payload > 0 {
		text := strings.Repeat("x", *payload)
		method, arg, want = "Arith.Echo", any(text), any(text)
	}
	check := func(c *rpcClient) error {
		cl := c.start(method, arg)
		c.wait(cl, *callTimeout)
		switch {
		case cl.err != nil:
			return cl.err
		case cl.rpcErr != "":
			return errors.New(cl.rpcErr)
		}
		var got any
		switch r := cl.reply.(type) {
		case *int:
			got = *r
		case *string:
			got = *r
		}
		if got != want {
			return fmt.Errorf("%s: unexpected reply %.40v", method, got)
		}
		return nil
	}
	for _, c := range clients { // each connection answers before we measure
		if err := check(c); err != nil {
			return err
		}
	}
	// phase 0: warm-up, 1: measuring, 2: stopped. Slots read it after each call.
	var (
		mu       sync.Mutex
		phase    int
		warmed   int
		opened   time.Time
		deadline time.Time
		failure  error
	)
	samples := make([][]int64, *inFlight)
	var wg sync.WaitGroup
	startWindow := func() { // with mu held
		phase = 1
		if *markers {
			fmt.Println("OPEN")
		}
		opened = time.Now()
		deadline = opened.Add(*duration)
	}
	closeWindow := func() { // with mu held
		if phase == 1 && *markers {
			fmt.Println("CLOSED")
		}
		phase = 2
	}
	began := time.Now()
	if *warmup <= 0 {
		startWindow()
	}
	for slot := 0; slot < *inFlight; slot++ {
		wg.Add(1)
		go func(slot int) {
			defer wg.Done()
			c := clients[slot%len(clients)]
			for {
				sent := time.Now()
				err := check(c)
				now := time.Now()
				mu.Lock()
				if err != nil && failure == nil {
					failure = err
					closeWindow()
				}
				switch phase {
				case 0:
					warmed++
					if warmed >= *warmup || now.Sub(began) >= *warmupFor {
						startWindow()
					}
				case 1:
					if now.After(deadline) {
						closeWindow()
						break
					}
					samples[slot] = append(samples[slot], int64(now.Sub(sent)))
				}
				stop := phase == 2
				mu.Unlock()
				if stop {
					return
				}
			}
		}(slot)
	}
	wg.Wait()
	if failure != nil {
		return failure
	}
	var all []int64
	for _, s := range samples {
		all = append(all, s...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	seconds := duration.Seconds()
	out := loadResult{
		Calls: len(all), Seconds: seconds, CallsPerS: float64(len(all)) / seconds,
		P50Us: percentileUs(all, 50), P99Us: percentileUs(all, 99),
		InFlight: *inFlight, Conns: *conns,
	}
	if *latencies {
		out.LatenciesNs = all
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// percentileUs is the nearest-rank percentile of sorted nanoseconds, in µs.
func percentileUs(sorted []int64, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := (len(sorted)*p + 99) / 100
	if rank < 1 {
		rank = 1
	}
	return float64(sorted[rank-1]) / 1e3
}
