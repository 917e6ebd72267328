package main

import (
	"bufio"
	"encoding/gob"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Phases of a pipelined load run, read by every goroutine after each reply.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStopped
)

// pipeRun is the state the connections of one "geepeer pipeload" share.
type pipeRun struct {
	method string
	arg    any
	want   any // int or string: the only reply accepted

	phase    atomic.Int32
	warmed   atomic.Int64  // replies received during the warm-up
	warmup   int64         // the warm-up ends after this many replies ...
	warmedUp chan struct{} // ... closed then

	failOnce sync.Once
	failure  error
	failed   chan struct{} // closed on the first failure
}

func (r *pipeRun) fail(err error) {
	r.failOnce.Do(func() {
		r.failure = err
		r.phase.Store(phaseStopped)
		close(r.failed)
	})
}

// pipeConn is one connection of a pipelined load: a writer goroutine that
// sends a request for every free slot and flushes only when no more slots
// are free (many requests per write), and a reader goroutine that matches
// each reply to its slot by Seq and frees the slot again. A slot's requests
// carry Seq = round*window + slot + 1, so the Seq names the slot and no map
// or lock is needed.
type pipeConn struct {
	run    *pipeRun
	conn   net.Conn
	buf    *bufio.Writer
	enc    *gob.Encoder
	dec    *gob.Decoder
	window int
	free   chan int       // slots ready to send (capacity window)
	sentAt []atomic.Int64 // per slot: when its request was written (UnixNano)
	seqOf  []atomic.Uint64
	round  []uint64 // per slot, the writer's only

	retired atomic.Int64  // slots that will not be sent again (stopped)
	done    chan struct{} // closed when every slot retired
	calls   int           // replies in the window (the reader's only)
	samples []int64       // their latencies in ns (the reader's only)
}

func (c *pipeConn) retire() {
	if c.retired.Add(1) == int64(c.window) {
		close(c.done)
	}
}

// dialPipe connects, writes the Option and makes one call, answered, before
// any pipelining (so a server's read-ahead of the Option, docs/protocol.md
// 3.3, cannot matter, and every connection is known to work).
func dialPipe(run *pipeRun, addr string, opt Option, wide bool, window int, timeout time.Duration) (*pipeConn, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if err := writeOption(conn, opt, wide); err != nil {
		conn.Close()
		return nil, fmt.Errorf("writing option: %w", err)
	}
	c := &pipeConn{
		run: run, conn: conn, window: window,
		buf:    bufio.NewWriterSize(conn, 64<<10),
		dec:    gob.NewDecoder(conn), // buffered: gob wraps a reader that is not a ByteReader
		free:   make(chan int, window),
		sentAt: make([]atomic.Int64, window),
		seqOf:  make([]atomic.Uint64, window),
		round:  make([]uint64, window),
		done:   make(chan struct{}),
	}
	c.enc = gob.NewEncoder(c.buf)
	_ = conn.SetDeadline(time.Now().Add(timeout))
	err = c.send(0)
	if err == nil {
		err = c.buf.Flush()
	}
	if err == nil {
		_, err = c.reply()
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("first call: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

// send encodes slot's next request into the buffer.
func (c *pipeConn) send(slot int) error {
	seq := c.round[slot]*uint64(c.window) + uint64(slot) + 1
	c.round[slot]++
	c.seqOf[slot].Store(seq)
	c.sentAt[slot].Store(time.Now().UnixNano())
	if err := c.enc.Encode(&Header{ServiceMethod: c.run.method, Seq: seq}); err != nil {
		return err
	}
	return c.enc.Encode(c.run.arg)
}

// write is the writer goroutine: it ends when free is closed or on error.
func (c *pipeConn) write() {
	send := func(slot int) error {
		if c.run.phase.Load() == phaseStopped {
			c.retire()
			return nil
		}
		return c.send(slot)
	}
	for slot := range c.free {
		err := send(slot)
	more: // every other slot already free joins this write
		for err == nil {
			select {
			case slot, ok := <-c.free:
				if !ok {
					break more
				}
				err = send(slot)
			default:
				break more
			}
		}
		if err == nil {
			err = c.buf.Flush()
		}
		if err != nil {
			c.run.fail(fmt.Errorf("sending requests: %w", err))
			return
		}
	}
}

// reply reads one reply and checks it: a known Seq, no error, the expected
// value; it returns the reply's slot. A transport error is returned as is,
// a wrong reply as a replyError.
func (c *pipeConn) reply() (int, error) {
	var h Header // fresh: gob leaves fields absent from the stream (zero values) alone
	if err := c.dec.Decode(&h); err != nil {
		return 0, err
	}
	if h.Seq == 0 {
		return 0, replyError{fmt.Errorf("reply with Seq 0 (%s)", h.ServiceMethod)}
	}
	slot := int((h.Seq - 1) % uint64(c.window))
	if c.seqOf[slot].Load() != h.Seq {
		return 0, replyError{fmt.Errorf("reply for unknown seq %d (%s)", h.Seq, h.ServiceMethod)}
	}
	if h.Error != "" {
		return 0, replyError{fmt.Errorf("%s: %s", c.run.method, h.Error)}
	}
	var got any
	switch c.run.want.(type) {
	case int:
		var n int
		if err := c.dec.Decode(&n); err != nil {
			return 0, err
		}
		got = n
	default:
		var text string
		if err := c.dec.Decode(&text); err != nil {
			return 0, err
		}
		got = text
	}
	if got != c.run.want {
		return 0, replyError{fmt.Errorf("%s: unexpected reply %.40s", c.run.method, fmt.Sprint(got))}
	}
	return slot, nil
}

// replyError is a reply that arrived but was wrong.
type replyError struct{ error }

// read is the reader goroutine: every reply is checked and its slot freed,
// or retired once the run stopped.
func (c *pipeConn) read() {
	for {
		slot, err := c.reply()
		if err != nil {
			var wrong replyError
			if errors.As(err, &wrong) {
				c.run.fail(wrong.error)
			} else {
				c.readFailed(err)
			}
			return
		}
		switch c.run.phase.Load() {
		case phaseWarmup:
			if c.run.warmed.Add(1) == c.run.warmup {
				close(c.run.warmedUp)
			}
		case phaseMeasure:
			now := time.Now().UnixNano()
			c.calls++
			c.samples = append(c.samples, now-c.sentAt[slot].Load())
		case phaseStopped:
			c.retire()
			if c.retired.Load() == int64(c.window) {
				return
			}
			continue
		}
		c.free <- slot
	}
}

func (c *pipeConn) readFailed(err error) {
	select {
	case <-c.done: // every reply arrived: a close now is ours
	default:
		c.run.fail(fmt.Errorf("reading replies: %w", err))
	}
}

// runPipeLoad is a cheap load generator for benchmarks/bench_calls.py's
// workers rows: -in-flight calls (split evenly over -conns connections, each
// a fixed window of slots) pipelined, many requests per write, replies
// matched by Seq; the GeeRPC wire exactly (the Option, then gob header and
// body per message), so any GeeRPC server can be measured. Unlike "load" it
// does not behave like the Go GeeRPC client (one write and one goroutine
// hand-over per call): it spends as little CPU per call as it can, so that
// the server, not the generator, is what is measured. Output and markers are
// "load"'s; calls/s is over the measured window.
func runPipeLoad(args []string) error {
	fs := flag.NewFlagSet("pipeload", flag.ContinueOnError)
	addr := fs.String("addr", "", "server address host:port, or several, comma-separated (connection i goes to address i % count)")
	inFlight := fs.Int("in-flight", 64, "calls kept outstanding, split evenly over -conns")
	conns := fs.Int("conns", 4, "connections")
	duration := fs.Duration("duration", 2*time.Second, "measurement window")
	warmup := fs.Int("warmup", 1000, "replies received before the window opens")
	warmupFor := fs.Duration("warmup-for", 300*time.Millisecond, "the warm-up ends after -warmup replies or this long, whichever is first")
	payload := fs.Int("payload", 0, "call Arith.Echo with a string of this many bytes instead of Arith.Multiply")
	wideOption := fs.Bool("wide-option", false, "send the Option padded to 512 bytes (docs/protocol.md 3.3)")
	latencies := fs.Bool("latencies", false, "also print every call's latency (latencies_ns)")
	markers := fs.Bool("markers", false, "print OPEN and CLOSED lines as the window opens and closes")
	callTimeout := fs.Duration("call-timeout", 20*time.Second, "give up when the outstanding calls are not all answered this long after the window closed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("pipeload: -addr is required")
	}
	if *conns < 1 || *inFlight < *conns {
		return errors.New("pipeload: -conns must be positive and -in-flight at least -conns")
	}
	run := &pipeRun{
		method: "Arith.Multiply", arg: &Args{6, 7}, want: 42,
		warmup: int64(*warmup), warmedUp: make(chan struct{}), failed: make(chan struct{}),
	}
	if *payload > 0 {
		text := strings.Repeat("x", *payload)
		run.method, run.arg, run.want = "Arith.Echo", &text, text
	}
	if run.warmup <= 0 {
		close(run.warmedUp)
	}
	addrs := strings.Split(*addr, ",")
	opt := Option{MagicNumber: MagicNumber, CodecType: GobType, ConnectTimeout: 10 * time.Second}
	pipes := make([]*pipeConn, *conns)
	for i := range pipes {
		window := *inFlight / *conns
		if i < *inFlight%*conns {
			window++
		}
		p, err := dialPipe(run, addrs[i%len(addrs)], opt, *wideOption, window, *callTimeout)
		if err != nil {
			return err
		}
		defer p.conn.Close()
		pipes[i] = p
		// Loaded before the next is dialled: a server whose processes
		// share one listening socket (twistd geerpc --workers) hands the
		// next connection to whichever accepts first, the least busy one.
		go p.read()
		go p.write()
		for slot := 0; slot < p.window; slot++ {
			p.free <- slot
		}
	}
	began := time.Now()
	select {
	case <-run.warmedUp:
	case <-run.failed:
	case <-time.After(*warmupFor - time.Since(began)):
	}
	if !run.phase.CompareAndSwap(phaseWarmup, phaseMeasure) {
		return run.failure
	}
	if *markers {
		fmt.Println("OPEN")
	}
	opened := time.Now()
	select {
	case <-run.failed:
	case <-time.After(*duration):
	}
	if !run.phase.CompareAndSwap(phaseMeasure, phaseStopped) {
		return run.failure
	}
	closed := time.Now()
	if *markers {
		fmt.Println("CLOSED")
	}
	drained := time.After(*callTimeout)
	for _, p := range pipes {
		select {
		case <-p.done:
			close(p.free) // nobody sends to it any more: the writer ends
		case <-run.failed:
			return run.failure
		case <-drained:
			return fmt.Errorf("pipeload: calls still unanswered %s after the window closed", *callTimeout)
		}
	}
	var all []int64
	calls := 0
	for _, p := range pipes {
		all = append(all, p.samples...)
		calls += p.calls
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	seconds := closed.Sub(opened).Seconds()
	out := loadResult{
		Calls: calls, Seconds: seconds, CallsPerS: float64(calls) / seconds,
		P50Us: percentileUs(all, 50), P99Us: percentileUs(all, 99),
		InFlight: *inFlight, Conns: *conns,
	}
	if *latencies {
		out.LatenciesNs = all
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
