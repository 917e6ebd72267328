package main

import (
	"bufio"
	"bytes"
	"encoding/gob"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// call is one outstanding request. rpcErr is the Error text of the reply
// header (an RPC-level failure); err is a transport or protocol failure.
type call struct {
	seq    uint64
	method string
	reply  any // pointer made by newReply, or nil to discard the body
	rpcErr string
	err    error
	done   chan struct{}
}

// rpcClient is a multiplexed GeeRPC client: one reader goroutine, pending
// calls keyed by Seq (first Seq is 1), header+body written under a mutex.
type rpcClient struct {
	conn    net.Conn
	buf     *bufio.Writer
	enc     *gob.Encoder
	sending sync.Mutex

	mu       sync.Mutex
	seq      uint64
	pending  map[uint64]*call
	shutdown error
}

// teeConn copies the bytes of a connection to files (either may be nil).
type teeConn struct {
	net.Conn
	c2s, s2c io.Writer
}

func (t *teeConn) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	if n > 0 && t.s2c != nil {
		_, _ = t.s2c.Write(p[:n])
	}
	return n, err
}

func (t *teeConn) Write(p []byte) (int, error) {
	n, err := t.Conn.Write(p)
	if n > 0 && t.c2s != nil {
		_, _ = t.c2s.Write(p[:n])
	}
	return n, err
}

// wideOptionSize is the size of a widened Option (docs/protocol.md 3.3): both
// encoding/json engines of the reference server read exactly these bytes.
const wideOptionSize = 512

// writeOption writes the Option as the reference client does (JSON plus "\n"
// in one write) or, when wide, padded with spaces inside the braces to exactly
// 512 bytes with no newline, so that the reference server's JSON decoder
// cannot read past it.
func writeOption(conn net.Conn, opt Option, wide bool) error {
	if !wide {
		return json.NewEncoder(conn).Encode(&opt)
	}
	b, err := json.Marshal(&opt)
	if err != nil {
		return err
	}
	if len(b) > wideOptionSize {
		return fmt.Errorf("option is longer than %d bytes", wideOptionSize)
	}
	padded := append(b[:len(b)-1:len(b)-1], bytes.Repeat([]byte(" "), wideOptionSize-len(b))...)
	_, err = conn.Write(append(padded, '}'))
	return err
}

// dialClient connects (network is what net.Dial gets: "tcp", or the protocol
// of an xclient address), performs the CONNECT exchange when overHTTP (as the
// reference's DialHTTP), writes the Option and starts the reader. The s2c dump gets every
// byte received (the CONNECT answer included), the c2s dump every byte sent
// after the Option.
func dialClient(network, addr string, opt Option, overHTTP, wide bool, optionPause time.Duration, c2s, s2c io.Writer) (*rpcClient, error) {
	raw, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	var tee *teeConn
	conn := raw
	if c2s != nil || s2c != nil {
		tee = &teeConn{Conn: raw, s2c: s2c}
		conn = tee
	}
	if overHTTP {
		if conn, err = httpConnect(conn, 10*time.Second); err != nil {
			raw.Close()
			return nil, err
		}
	}
	if err := writeOption(conn, opt, wide); err != nil {
		raw.Close()
		return nil, fmt.Errorf("writing option: %w", err)
	}
	if optionPause > 0 {
		time.Sleep(optionPause)
	}
	if tee != nil {
		tee.c2s = c2s // only this goroutine has written so far
	}
	c := &rpcClient{
		conn:    conn,
		buf:     bufio.NewWriter(conn),
		seq:     1,
		pending: make(map[uint64]*call),
	}
	c.enc = gob.NewEncoder(c.buf)
	go c.receive(gob.NewDecoder(conn))
	return c, nil
}

// available reports whether the client can still send calls (its reader has
// not stopped).
func (c *rpcClient) available() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.shutdown == nil
}

func (c *rpcClient) receive(dec *gob.Decoder) {
	var err error
	for err == nil {
		var h Header
		if err = dec.Decode(&h); err != nil {
			break
		}
		c.mu.Lock()
		cl := c.pending[h.Seq]
		delete(c.pending, h.Seq)
		c.mu.Unlock()
		switch {
		case cl == nil:
			err = discard(dec)
			if err == nil {
				err = fmt.Errorf("reply for unknown seq %d (%s)", h.Seq, h.ServiceMethod)
			}
		case h.Error != "":
			cl.rpcErr = h.Error
			if derr := discard(dec); derr != nil {
				err = fmt.Errorf("reading error body: %w", derr)
			}
			close(cl.done)
		default:
			if derr := dec.Decode(cl.reply); derr != nil {
				cl.err = fmt.Errorf("reading body %w", derr)
				err = derr
			}
			close(cl.done)
		}
	}
	if errors.Is(err, io.EOF) {
		err = errors.New("connection closed by server (EOF)")
	}
	c.mu.Lock()
	c.shutdown = err
	for _, cl := range c.pending {
		cl.err = err
		close(cl.done)
	}
	c.pending = map[uint64]*call{}
	c.mu.Unlock()
}

// start sends a request and returns its call without waiting for the reply.
func (c *rpcClient) start(method string, arg any) *call {
	cl := &call{method: method, reply: newReply(method), done: make(chan struct{})}
	c.mu.Lock()
	if c.shutdown != nil {
		cl.err = c.shutdown
		c.mu.Unlock()
		close(cl.done)
		return cl
	}
	cl.seq = c.seq
	c.seq++
	c.pending[cl.seq] = cl
	c.mu.Unlock()

	c.sending.Lock()
	err := c.enc.Encode(&Header{ServiceMethod: method, Seq: cl.seq})
	if err == nil {
		err = c.enc.Encode(arg)
	}
	if err == nil {
		err = c.buf.Flush()
	}
	c.sending.Unlock()
	if err != nil {
		c.mu.Lock()
		if c.pending[cl.seq] == cl {
			delete(c.pending, cl.seq)
			cl.err = fmt.Errorf("sending request: %w", err)
			close(cl.done)
		}
		c.mu.Unlock()
	}
	return cl
}

func (c *rpcClient) wait(cl *call, timeout time.Duration) {
	select {
	case <-cl.done:
	case <-time.After(timeout):
		c.mu.Lock()
		if c.pending[cl.seq] == cl {
			delete(c.pending, cl.seq)
			cl.err = fmt.Errorf("no reply within %s (seq %d)", timeout, cl.seq)
			close(cl.done)
		}
		c.mu.Unlock()
		<-cl.done
	}
}

// output is one line of client output.
type output struct {
	Case   string          `json:"case"`
	Method string          `json:"method"`
	Reply  json.RawMessage `json:"reply"`
	Error  string          `json:"error"`
	Equal  *bool           `json:"equal,omitempty"`
}

type scenario struct {
	client  *rpcClient
	timeout time.Duration
	out     *json.Encoder
}

func (s *scenario) emit(name string, cl *call, compare *Record) error {
	if cl.err != nil {
		return fmt.Errorf("case %s (%s, seq %d): %w", name, cl.method, cl.seq, cl.err)
	}
	line := output{Case: name, Method: cl.method, Error: cl.rpcErr, Reply: json.RawMessage("null")}
	if cl.rpcErr == "" && cl.reply != nil {
		raw, err := replyJSON(cl.reply)
		if err != nil {
			return fmt.Errorf("case %s: rendering reply: %w", name, err)
		}
		line.Reply = raw
	}
	if compare != nil {
		eq := false
		if r, ok := cl.reply.(*Record); ok && cl.rpcErr == "" {
			eq = recordsEqual(r, compare)
		}
		line.Equal = &eq
	}
	return s.out.Encode(line)
}

func (s *scenario) do(name, method string, arg any, compare *Record) error {
	cl := s.client.start(method, arg)
	s.client.wait(cl, s.timeout)
	return s.emit(name, cl, compare)
}

func runClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	addr := fs.String("addr", "", "server address host:port")
	name := fs.String("scenario", "basic", "basic, timeout, records or idle")
	optionPause := fs.Duration("option-pause", 0,
		"pause after writing the Option, before the first request (works around "+
			"the reference server's read-ahead, docs/protocol.md 3.3)")
	wideOption := fs.Bool("wide-option", false,
		"send the Option padded to 512 bytes without newline (the measured escape hatch "+
			"of docs/protocol.md 3.3), so even the reference server reads no request bytes with it")
	overHTTP := fs.Bool("http", false,
		"dial like the reference's DialHTTP: send \"CONNECT "+defaultRPCPath+
			" HTTP/1.0\\n\\n\", require \""+connected+"\", then speak GeeRPC")
	callTimeout := fs.Duration("call-timeout", 20*time.Second, "give up waiting for one reply after this")
	idle := fs.Duration("idle", time.Second, "idle scenario: the pause between calls")
	idleCalls := fs.Int("idle-calls", 3, "idle scenario: the calls made, each after a pause")
	dumpC2S := fs.String("dump-c2s", "", "write the request bytes sent after the Option to this file")
	dumpS2C := fs.String("dump-s2c", "", "write every byte received from the server to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("client: -addr is required")
	}
	opt := Option{MagicNumber: MagicNumber, CodecType: GobType, ConnectTimeout: 10 * time.Second}
	if *name == "timeout" {
		opt.HandleTimeout = 250 * time.Millisecond
	}
	var records []*Record
	if *name == "records" {
		var err error
		if records, err = readRecords(os.Stdin); err != nil {
			return err
		}
	}
	var c2s, s2c io.Writer
	for _, d := range []struct {
		path string
		w    *io.Writer
	}{{*dumpC2S, &c2s}, {*dumpS2C, &s2c}} {
		if d.path == "" {
			continue
		}
		f, err := os.Create(d.path)
		if err != nil {
			return err
		}
		defer f.Close()
		*d.w = f
	}
	c, err := dialClient("tcp", *addr, opt, *overHTTP, *wideOption, *optionPause, c2s, s2c)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	s := &scenario{client: c, timeout: *callTimeout, out: enc}
	switch *name {
	case "basic":
		return s.basic()
	case "timeout":
		if err := s.do("sleep", "Foo.Sleep", Args{1, 0}, nil); err != nil {
			return err
		}
		return s.do("sum_after_timeout", "Foo.Sum", Args{2, 3}, nil)
	case "idle":
		return s.idle(*idle, *idleCalls)
	case "records":
		for i, r := range records {
			cl := s.client.start("Records.Echo", r)
			s.client.wait(cl, s.timeout)
			if err := s.emit("records", cl, r); err != nil {
				return fmt.Errorf("record %d: %w", i, err)
			}
		}
		return nil
	}
	return fmt.Errorf("client: unknown scenario %q", *name)
}

func (s *scenario) basic() error {
	sample := sampleRecord()
	steps := []struct {
		name, method string
		arg          any
		compare      *Record
	}{
		{"sum", "Foo.Sum", Args{1, 2}, nil},
		{"multiply", "Arith.Multiply", Args{3, 4}, nil},
		{"divide_by_zero", "Arith.Divide", Args{7, 0}, nil},
		{"divide", "Arith.Divide", Args{-7, 2}, nil},
		{"echo", "Arith.Echo", "héllo, 世界 ✓", nil},
		{"fail", "Arith.Fail", "custom failure 100%", nil},
		{"unknown_method", "Foo.Nope", Args{5, 6}, nil},
		{"after_unknown", "Foo.Sum", Args{8, 9}, nil},
		{"unknown_service", "Nope.Sum", Args{1, 1}, nil},
		{"keys", "Records.Keys", map[string]int{"b": 2, "a": 1, "ç": 3}, nil},
		{"keys_empty", "Records.Keys", map[string]int{}, nil},
		{"record", "Records.Echo", sample, &sample},
	}
	for _, st := range steps {
		if err := s.do(st.name, st.method, st.arg, st.compare); err != nil {
			return err
		}
	}
	calls := make([]*call, 64)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			calls[i] = s.client.start("Foo.Sum", Args{i, 1000 * i})
		}()
	}
	wg.Wait()
	for _, cl := range calls {
		s.client.wait(cl, s.timeout)
	}
	for _, cl := range calls {
		if err := s.emit("concurrent", cl, nil); err != nil {
			return err
		}
	}
	return nil
}

// idleLine is one call of the idle scenario: transport_error is the
// client's own error (the connection is gone) instead of a reply.
type idleLine struct {
	Case           string          `json:"case"`
	Reply          json.RawMessage `json:"reply"`
	Error          string          `json:"error"`
	TransportError string          `json:"transport_error"`
}

// idle calls Foo.Sum once, then calls more times, each after a pause with
// the connection idle, on the same client, as a long-lived GeeRPC client
// does; it never redials. A call that fails in transport is printed, not
// fatal: what the client does with a connection the server closed while it
// was idle is what the scenario measures.
func (s *scenario) idle(pause time.Duration, calls int) error {
	for i := 0; i <= calls; i++ {
		if i > 0 {
			time.Sleep(pause)
		}
		cl := s.client.start("Foo.Sum", Args{i, 1})
		s.client.wait(cl, s.timeout)
		line := idleLine{Case: fmt.Sprintf("call_%d", i), Reply: json.RawMessage("null"), Error: cl.rpcErr}
		if cl.err != nil {
			line.TransportError = cl.err.Error()
		} else if cl.rpcErr == "" {
			raw, err := replyJSON(cl.reply)
			if err != nil {
				return err
			}
			line.Reply = raw
		}
		if err := s.out.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

// readRecords reads Records in the JSON form, one per non-blank line.
func readRecords(r io.Reader) ([]*Record, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	var out []*Record
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		rec, err := parseRecord(line)
		if err != nil {
			return nil, fmt.Errorf("stdin line %d: %w", n, err)
		}
		out = append(out, rec)
	}
	return out, sc.Err()
}
