package main

import (
	"time"
)

// MagicNumber marks a GeeRPC connection (docs/protocol.md section 1).
const MagicNumber = 3927900

// GobType is the only codec name the Go reference registers.
const GobType = "application/gob"

// Option is the JSON preamble of every connection. Durations travel as
// integer nanoseconds.
type Option struct {
	MagicNumber    int
	CodecType      string
	ConnectTimeout time.Duration
	HandleTimeout  time.Duration
}

// Header precedes every request and reply body. Field names matter: gob
// matches struct fields by name.
type Header struct {
	ServiceMethod string
	Seq           uint64
	Error         string
}

// Args is the argument of Foo.Sum, Foo.Sleep, Arith.Multiply and Arith.Divide.
type Args struct{ Num1, Num2 int }

// Point is an element of Record.Points.
type Point struct{ X, Y int }

// Record exercises most gob kinds: strings, unsigned and signed ints, floats,
// bools, byte slices, slices of strings and structs, maps, nested slices,
// complex numbers, a recursive pointer and an interface.
type Record struct {
	Name   string
	ID     uint64
	Score  float64
	Active bool
	Data   []byte
	Tags   []string
	Points []Point
	Counts map[string]int
	Matrix [][]float64
	Z      complex128
	Child  *Record
	Weight int
	Extra  interface{}
}

// sampleRecord returns a fresh copy of the SAMPLE record shared with the
// Python tests.
func sampleRecord() Record {
	return Record{
		Name:   "sample ✓ ünïcode",
		ID:     18446744073709551615,
		Score:  -2.5,
		Active: true,
		Data:   []byte{0, 1, 2, 255},
		Tags:   []string{"a", "b c", ""},
		Points: []Point{{1, 2}, {-3, 4}, {0, 0}},
		Counts: map[string]int{"x": 1, "y": -2, "z": 0},
		Matrix: [][]float64{{1.5, 2}, {}, {-0.25}},
		Z:      complex(1.5, -2),
		Child: &Record{
			Name:   "child",
			Weight: 7,
			Tags:   []string{"t"},
			Child:  &Record{Name: "grandchild"},
		},
		Weight: 42,
		Extra:  "extra",
	}
}
