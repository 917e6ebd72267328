// Command gobcapture prints encoding/gob streams of a few values that
// exercise the corners of the format (interface values whose concrete type
// is defined inside the value, zero arrays and structs, nil pointers, maps),
// one "name hex" line each.  tests/test_gob.py keeps a copy of its output;
// tests/interop/test_interop_gob.py checks that copy against a live build.
//
// "gobcapture show" prints each value as "name %#v" instead; "gobcapture
// decode" reads "name hex" lines (streams from another encoder), decodes each
// into the Go type of that name and prints it the same way.
package main

import (
	"bufio"
	"bytes"
	"encoding/gob"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

type Point struct{ X, Y int }

type Holder struct {
	Name string
	I    interface{}
}

type Inner struct {
	Label string
	J     interface{}
}

type Leaf struct{ V []int }

type WithArray struct {
	A [3]int
	P Point
	Q *Point
	M map[int]string
}

var values = []struct {
	name  string
	value interface{}
}{
	{"iface_inline_def", Holder{Name: "h", I: Point{3, -4}}},
	{"iface_nested_defs", Holder{Name: "n", I: Inner{Label: "in", J: Leaf{V: []int{1, 2}}}}},
	{"iface_basic", Holder{I: "text"}},
	{"iface_nil", Holder{Name: "nil"}},
	{"zero_fields", WithArray{}},
	{"array_ptr_map", WithArray{A: [3]int{0, 5, 0}, Q: &Point{}, M: map[int]string{7: "seven"}}},
	{"top_slice_iface", []interface{}{1, "a", nil, 2.5, []string{"x"}}},
	{"iface_slice_split", splitSlice()},
	{"uint_max", uint64(18446744073709551615)},
	{"int_min", int64(-9223372036854775808)},
}

// splitSlice holds a struct first, then more elements than the bytes its
// first message has left: Go continues it in the next message.
func splitSlice() []interface{} {
	items := []interface{}{Point{1, 2}}
	for n := 1; n < 60; n++ {
		items = append(items, n)
	}
	return items
}

// show prints a value with pointers followed, so two decodings compare equal.
func show(value interface{}) string {
	if holder, ok := value.(WithArray); ok && holder.Q != nil {
		pointed := *holder.Q
		holder.Q = nil
		return fmt.Sprintf("%#v Q:&%#v", holder, pointed)
	}
	return fmt.Sprintf("%#v", value)
}

func decode(name, text string) (interface{}, error) {
	raw, err := hex.DecodeString(text)
	if err != nil {
		return nil, err
	}
	decoder := gob.NewDecoder(bytes.NewReader(raw))
	switch {
	case name == "top_slice_iface" || name == "iface_slice_split":
		var value []interface{}
		err = decoder.Decode(&value)
		return value, err
	case strings.HasPrefix(name, "iface_"):
		var value Holder
		err = decoder.Decode(&value)
		return value, err
	case name == "zero_fields" || name == "array_ptr_map":
		var value WithArray
		err = decoder.Decode(&value)
		return value, err
	case name == "uint_max":
		var value uint64
		err = decoder.Decode(&value)
		return value, err
	case name == "int_min":
		var value int64
		err = decoder.Decode(&value)
		return value, err
	}
	return nil, fmt.Errorf("unknown value %q", name)
}

func main() {
	gob.Register(Point{})
	gob.Register(Inner{})
	gob.Register(Leaf{})
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "":
		for _, item := range values {
			var buffer bytes.Buffer
			if err := gob.NewEncoder(&buffer).Encode(item.value); err != nil {
				fmt.Fprintln(os.Stderr, item.name, err)
				os.Exit(1)
			}
			fmt.Printf("%s %x\n", item.name, buffer.Bytes())
		}
	case "show":
		for _, item := range values {
			fmt.Printf("%s %s\n", item.name, show(item.value))
		}
	case "decode":
		lines := bufio.NewScanner(os.Stdin)
		lines.Buffer(make([]byte, 1<<20), 1<<20)
		for lines.Scan() {
			name, text, _ := strings.Cut(lines.Text(), " ")
			value, err := decode(name, text)
			if err != nil {
				fmt.Fprintln(os.Stderr, name, err)
				os.Exit(1)
			}
			fmt.Printf("%s %s\n", name, show(value))
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: gobcapture [show|decode]")
		os.Exit(2)
	}
}
