package main

import (
	"bufio"
	"bytes"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
)

// discard reads and drops one value, as gob's Decode(nil) does.
func discard(dec *gob.Decoder) error { return dec.DecodeValue(reflect.Value{}) }

// decodeReplies reads a server-to-client stream (no Option) from r and
// decodes it as a Go GeeRPC client would, writing one JSON line per reply.
func decodeReplies(r io.Reader, w io.Writer) error {
	dec := gob.NewDecoder(bufio.NewReader(r))
	out := json.NewEncoder(w)
	out.SetEscapeHTML(false)
	for n := 1; ; n++ {
		var h Header
		if err := dec.Decode(&h); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reply %d: header: %w", n, err)
		}
		var reply any
		if h.Error == "" {
			reply = newReply(h.ServiceMethod)
		}
		var err error
		if reply == nil {
			err = discard(dec)
		} else {
			err = dec.Decode(reply)
		}
		if err != nil {
			return fmt.Errorf("reply %d (%s seq %d): body: %w", n, h.ServiceMethod, h.Seq, err)
		}
		raw, err := replyJSON(reply)
		if err != nil {
			return fmt.Errorf("reply %d: rendering: %w", n, err)
		}
		line := struct {
			ServiceMethod string
			Seq           uint64
			Error         string
			Reply         json.RawMessage
		}{h.ServiceMethod, h.Seq, h.Error, raw}
		if err := out.Encode(line); err != nil {
			return err
		}
	}
}

// request is one line of encode-requests input. Type overrides the argument
// type chosen from the method: "args", "string", "record", "map", "int".
type request struct {
	Method string          `json:"method"`
	Seq    uint64          `json:"seq"`
	Arg    json.RawMessage `json:"arg"`
	Type   string          `json:"type"`
}

// encodeRequests writes the gob request stream (Header, body, ...) a Go
// client would send for JSON lines of requests read from r. No Option.
func encodeRequests(r io.Reader, w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := gob.NewEncoder(bw)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		arg, err := requestArg(&req)
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		if err := enc.Encode(&Header{ServiceMethod: req.Method, Seq: req.Seq}); err != nil {
			return err
		}
		if err := enc.Encode(arg); err != nil {
			return fmt.Errorf("line %d: encoding argument: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return bw.Flush()
}

func requestArg(req *request) (any, error) {
	kind := req.Type
	if kind == "" {
		switch newArgFor(req.Method).(type) {
		case *string:
			kind = "string"
		case *Record:
			kind = "record"
		case *map[string]int:
			kind = "map"
		default:
			kind = "args"
		}
	}
	raw := []byte(req.Arg)
	if len(raw) == 0 {
		raw = []byte("null")
	}
	switch kind {
	case "record":
		rec, err := parseRecord(raw)
		if err != nil {
			return nil, err
		}
		if rec == nil {
			rec = &Record{}
		}
		return rec, nil
	case "args":
		var a Args
		err := json.Unmarshal(raw, &a)
		return &a, err
	case "string":
		var s string
		err := json.Unmarshal(raw, &s)
		return &s, err
	case "map":
		m := map[string]int{}
		err := json.Unmarshal(raw, &m)
		if m == nil {
			m = map[string]int{}
		}
		return &m, err
	case "int":
		var i int
		err := json.Unmarshal(raw, &i)
		return &i, err
	}
	return nil, fmt.Errorf("unknown argument type %q", kind)
}

func runDecodeReplies() error { return decodeReplies(os.Stdin, os.Stdout) }

func runEncodeRequests() error { return encodeRequests(os.Stdin, os.Stdout) }
