package main

import (
	"bufio"
	"errors"
	"fmt"
	"html"
	"io"
	"log"
	"net"
	"net/http"
	"sort"
	"time"
)

// The HTTP transport of docs/protocol.md section 6, as the reference does it.
const (
	defaultRPCPath   = "/_geeprc_" // the reference's spelling (defect 15)
	defaultDebugPath = "/debug/geerpc"
	connected        = "200 Connected to Gee RPC"
)

// rpcHTTP is the reference's Server.ServeHTTP: CONNECT hijacks the connection,
// anything else gets 405.
type rpcHTTP struct{}

func (rpcHTTP) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != "CONNECT" {
		// Not http.Error: the reference sets these itself, so no
		// X-Content-Type-Options header (vector 08).
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = io.WriteString(w, "405 must CONNECT\n")
		return
	}
	// The hijacked bufio.ReadWriter is ignored, as in the reference (defect
	// 2): whatever the client sent after the CONNECT head and before reading
	// the 200 line is lost (vector 19). Kept on purpose.
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		log.Print("rpc hijacking ", req.RemoteAddr, ": ", err.Error())
		return
	}
	_, _ = io.WriteString(conn, "HTTP/1.0 "+connected+"\n\n")
	serveConn(conn)
}

// debugHTTP is a plain listing of the services and their methods.
type debugHTTP struct{}

func (debugHTTP) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	names := make([]string, 0, len(services))
	for name := range services {
		names = append(names, name)
	}
	sort.Strings(names)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = io.WriteString(w, "<html>\n<body>\n<title>GeeRPC Services</title>\n")
	for _, name := range names {
		fmt.Fprintf(w, "<hr>\nService %s\n<hr>\n<ul>\n", html.EscapeString(name))
		methods := make([]string, 0, len(services[name]))
		for m := range services[name] {
			methods = append(methods, m)
		}
		sort.Strings(methods)
		for _, m := range methods {
			fmt.Fprintf(w, "<li>%s</li>\n", html.EscapeString(m))
		}
		_, _ = io.WriteString(w, "</ul>\n")
	}
	_, _ = io.WriteString(w, "</body>\n</html>\n")
}

// serveHTTP is the reference's HandleHTTP + http.Serve, on a fresh mux
// instead of http.DefaultServeMux (defect 13).
func serveHTTP(ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle(defaultRPCPath, rpcHTTP{})
	mux.Handle(defaultDebugPath, debugHTTP{})
	return http.Serve(ln, mux)
}

// bufConn reads through the bufio.Reader that parsed the CONNECT answer, so
// no byte it buffered is lost; writes go straight to the connection.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// httpConnect performs the client half of the CONNECT exchange as the
// reference's NewHTTPClient does, and returns the connection to speak GeeRPC
// on.
func httpConnect(conn net.Conn, timeout time.Duration) (net.Conn, error) {
	if timeout > 0 {
		if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
			return nil, err
		}
	}
	if _, err := io.WriteString(conn, "CONNECT "+defaultRPCPath+" HTTP/1.0\n\n"); err != nil {
		return nil, fmt.Errorf("writing CONNECT: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		return nil, fmt.Errorf("reading the CONNECT answer: %w", err)
	}
	if resp.Status != connected {
		return nil, errors.New("unexpected HTTP response: " + resp.Status)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	if br.Buffered() == 0 {
		return conn, nil
	}
	return &bufConn{Conn: conn, r: br}, nil
}
