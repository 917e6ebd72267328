// Command netrpcpeer is a Go net/rpc program written with the standard library
// only (net/rpc, net/rpc/jsonrpc, net/http): the peer of txgeerpc's net/rpc and
// JSON-RPC 1.0 interop tests.
//
//	netrpcpeer server
//	    listens on three 127.0.0.1 ports and prints
//	    "LISTENING tcp=ADDR http=ADDR json=ADDR": net/rpc's gob over raw TCP
//	    (rpc.ServeConn), net/rpc over HTTP (rpc.HandleHTTP: CONNECT /_goRPC_)
//	    and JSON-RPC 1.0 (jsonrpc.ServeConn). It serves Foo.Sum and
//	    Arith.Multiply/Divide/Echo/Fail until killed.
//	netrpcpeer client -addr HOST:PORT -transport tcp|http|json [-batch N]
//	    calls a server with rpc.Dial, rpc.DialHTTP or jsonrpc.Dial and prints
//	    one JSON object per call: {"case","method","reply","error"}; then
//	    N concurrent Foo.Sum calls, as one object {"case":"batch","replies":[...]}.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/rpc"
	"net/rpc/jsonrpc"
	"os"
	"time"
)

type Args struct {
	Num1, Num2 int
}

type Foo int

func (*Foo) Sum(args Args, reply *int) error {
	*reply = args.Num1 + args.Num2
	return nil
}

type Arith int

func (*Arith) Multiply(args Args, reply *int) error {
	*reply = args.Num1 * args.Num2
	return nil
}

func (*Arith) Divide(args Args, reply *int) error {
	if args.Num2 == 0 {
		return errors.New("divide by zero")
	}
	*reply = args.Num1 / args.Num2
	return nil
}

func (*Arith) Echo(text string, reply *string) error {
	*reply = text
	return nil
}

func (*Arith) Fail(text string, reply *string) error {
	return errors.New(text)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: netrpcpeer server | client -addr HOST:PORT -transport tcp|http|json")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		serve()
	case "client":
		client(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func listen() net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return l
}

func accept(l net.Listener, serve func(net.Conn)) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		go serve(conn)
	}
}

func serve() {
	server := rpc.NewServer()
	if err := server.Register(new(Foo)); err != nil {
		panic(err)
	}
	if err := server.Register(new(Arith)); err != nil {
		panic(err)
	}
	raw, web, js := listen(), listen(), listen()
	mux := http.NewServeMux()
	mux.Handle(rpc.DefaultRPCPath, server)
	go accept(raw, func(c net.Conn) { server.ServeConn(c) })
	go accept(js, func(c net.Conn) { server.ServeCodec(jsonrpc.NewServerCodec(c)) })
	go http.Serve(web, mux)
	fmt.Printf("LISTENING tcp=%s http=%s json=%s\n", raw.Addr(), web.Addr(), js.Addr())
	select {}
}

type line struct {
	Case    string `json:"case"`
	Method  string `json:"method,omitempty"`
	Reply   any    `json:"reply"`
	Error   string `json:"error"`
	Replies []int  `json:"replies,omitempty"`
}

func client(argv []string) {
	flags := flag.NewFlagSet("client", flag.ExitOnError)
	addr := flags.String("addr", "", "server HOST:PORT")
	transport := flags.String("transport", "tcp", "tcp, http or json")
	batch := flags.Int("batch", 32, "concurrent Foo.Sum calls at the end")
	flags.Parse(argv)
	var c *rpc.Client
	var err error
	switch *transport {
	case "tcp":
		c, err = rpc.Dial("tcp", *addr)
	case "http":
		c, err = rpc.DialHTTP("tcp", *addr)
	case "json":
		c, err = jsonrpc.Dial("tcp", *addr)
	default:
		err = fmt.Errorf("unknown transport %q", *transport)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer c.Close()
	out := json.NewEncoder(os.Stdout)
	call := func(name, method string, arg any, reply any) {
		done := c.Go(method, arg, reply, nil).Done
		select {
		case result := <-done:
			l := line{Case: name, Method: method}
			if result.Error != nil {
				l.Error = result.Error.Error()
			} else {
				l.Reply = reply
			}
			out.Encode(l)
		case <-time.After(10 * time.Second):
			fmt.Fprintln(os.Stderr, "timed out:", name)
			os.Exit(1)
		}
	}
	call("sum", "Foo.Sum", Args{1, 2}, new(int))
	call("multiply", "Arith.Multiply", Args{3, 4}, new(int))
	call("divide_by_zero", "Arith.Divide", Args{1, 0}, new(int))
	call("divide", "Arith.Divide", Args{-7, 2}, new(int))
	call("echo", "Arith.Echo", "héllo, 世界 ✓", new(string))
	call("fail", "Arith.Fail", "custom failure 100%", new(string))
	call("unknown_method", "Foo.Nope", Args{}, new(int))
	call("after_unknown", "Foo.Sum", Args{8, 9}, new(int))

	// Concurrent calls on the one connection: all sent before any reply is read.
	calls := make([]*rpc.Call, *batch)
	replies := make([]int, *batch)
	for i := range calls {
		calls[i] = c.Go("Foo.Sum", Args{i, 1000 * i}, &replies[i], make(chan *rpc.Call, 1))
	}
	timeout := time.After(20 * time.Second)
	for i, pending := range calls {
		select {
		case result := <-pending.Done:
			if result.Error != nil {
				fmt.Fprintf(os.Stderr, "batch call %d: %v\n", i, result.Error)
				os.Exit(1)
			}
		case <-timeout:
			fmt.Fprintln(os.Stderr, "batch timed out")
			os.Exit(1)
		}
	}
	out.Encode(line{Case: "batch", Replies: replies})
}
