package main

import (
	"bufio"
	"encoding/gob"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"time"
)

func runServer(args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "TCP address to listen on")
	overHTTP := fs.Bool("http", false,
		"serve GeeRPC over HTTP like the reference's HandleHTTP + http.Serve: CONNECT "+
			defaultRPCPath+", the debug page at "+defaultDebugPath)
	registry := fs.String("registry", "",
		"registry URL (http://HOST:PORT"+defaultRegistryPath+") to heartbeat to, as the "+
			"reference's registry.Heartbeat: the first beat before serving, then one per period")
	period := fs.Duration("heartbeat", 0,
		"time between heartbeats (0: the reference's default, "+defaultHeartbeat.String()+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *period < 0 {
		return fmt.Errorf("server: -heartbeat must not be negative, got %s", *period)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	// os.Stdout is unbuffered: the line is on the pipe when Printf returns.
	fmt.Printf("LISTENING %s\n", ln.Addr())
	if *registry != "" {
		protocol := "tcp"
		if *overHTTP {
			protocol = "http"
		}
		// Like the reference, serve whatever became of the first beat.
		fmt.Printf("HEARTBEAT %s\n", startHeartbeat(*registry, protocol+"@"+ln.Addr().String(), *period))
	}
	if *overHTTP {
		return serveHTTP(ln)
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Println("rpc server: accept error:", err)
			return err
		}
		go serveConn(conn)
	}
}

// serveConn reads the Option exactly as the reference does: a JSON decoder on
// the raw connection, then a gob decoder on the same raw connection. Bytes the
// JSON decoder read beyond the Option are lost with it (docs/protocol.md 3.3); that
// hazard is kept on purpose.
func serveConn(conn net.Conn) {
	defer conn.Close()
	var opt Option
	if err := json.NewDecoder(conn).Decode(&opt); err != nil {
		log.Println("rpc server: options error: ", err)
		return
	}
	if opt.MagicNumber != MagicNumber {
		log.Printf("rpc server: invalid magic number %x", opt.MagicNumber)
		return
	}
	if opt.CodecType != GobType {
		log.Printf("rpc server: invalid codec type %s", opt.CodecType)
		return
	}
	c := &serverConn{
		conn: conn,
		dec:  gob.NewDecoder(conn),
		buf:  bufio.NewWriter(conn),
	}
	c.enc = gob.NewEncoder(c.buf)
	c.serve(opt.HandleTimeout)
}

type serverConn struct {
	conn    net.Conn
	dec     *gob.Decoder
	buf     *bufio.Writer
	enc     *gob.Encoder
	sending sync.Mutex
}

// invalidBody is what an error reply carries: Go's empty anonymous struct.
var invalidBody = struct{}{}

func (c *serverConn) serve(timeout time.Duration) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var h Header
		if err := c.dec.Decode(&h); err != nil {
			if !errors.Is(err, io.EOF) {
				log.Println("rpc server: read header error:", err)
			}
			return
		}
		m, err := lookup(h.ServiceMethod)
		if err != nil {
			// Unlike the reference, consume the body so the stream stays aligned.
			discardErr := discard(c.dec)
			h.Error = err.Error()
			c.send(&h, invalidBody)
			if discardErr != nil {
				log.Println("rpc server: read body err:", discardErr)
				return
			}
			continue
		}
		arg := m.newArg()
		if err := c.dec.Decode(arg); err != nil {
			// As the reference: log "read body err", reply with the codec's text.
			log.Println("rpc server: read body err:", err)
			h.Error = err.Error()
			c.send(&h, invalidBody)
			continue
		}
		countCall(h.ServiceMethod)
		wg.Add(1)
		go func(h Header) {
			defer wg.Done()
			c.handle(&h, m, arg, timeout)
		}(h)
	}
}

func lookup(serviceMethod string) (*method, error) {
	dot := strings.LastIndex(serviceMethod, ".")
	if dot < 0 {
		return nil, errors.New("rpc server: service/method request ill-formed: " + serviceMethod)
	}
	svcName, methodName := serviceMethod[:dot], serviceMethod[dot+1:]
	svc, ok := services[svcName]
	if !ok {
		return nil, errors.New("rpc server: can't find service " + svcName)
	}
	m, ok := svc[methodName]
	if !ok {
		return nil, errors.New("rpc server: can't find method " + methodName)
	}
	return m, nil
}

type result struct {
	reply any
	err   error
}

func (c *serverConn) handle(h *Header, m *method, arg any, timeout time.Duration) {
	done := make(chan result, 1) // buffered: a timed-out method never blocks
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- result{err: fmt.Errorf("rpc server: method panicked: %v", p)}
			}
		}()
		reply, err := m.call(arg)
		done <- result{reply: reply, err: err}
	}()
	var res result
	if timeout > 0 {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		select {
		case res = <-done:
		case <-timer.C:
			res.err = fmt.Errorf("rpc server: request handle timeout: expect within %s", timeout)
		}
	} else if timeout < 0 {
		// The reference's time.After(negative) fires at once (measured: every
		// call gets the timeout error); make that deterministic.
		res.err = fmt.Errorf("rpc server: request handle timeout: expect within %s", timeout)
	} else {
		res = <-done
	}
	if res.err != nil {
		h.Error = res.err.Error()
		c.send(h, invalidBody)
		return
	}
	c.send(h, res.reply)
}

// send writes one reply (header then body) whole, under the connection's lock.
func (c *serverConn) send(h *Header, body any) {
	c.sending.Lock()
	defer c.sending.Unlock()
	err := c.enc.Encode(h)
	if err == nil {
		err = c.enc.Encode(body)
	}
	if err == nil {
		err = c.buf.Flush()
	}
	if err != nil {
		log.Println("rpc server: write response error:", err)
		_ = c.conn.Close()
	}
}
