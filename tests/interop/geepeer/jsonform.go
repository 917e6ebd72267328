package main

// The JSON form of Records used on stdin and stdout.
//
// A Record becomes a JSON object with the Go field names. Data is base64 (as
// encoding/json writes []byte), Z is [real, imag], Child is null or a nested
// record object, and Extra is {"type": NAME, "value": VALUE} where NAME is the
// gob name of the concrete type held by the interface ("int", "string",
// "float64", "bool", "[]string", "[]uint8", ... or "nil" for a nil interface).
// A nil slice or map is written as null, an empty one as [] or {}.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
)

type extraJSON struct {
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

type recordJSON struct {
	Name   string
	ID     uint64
	Score  float64
	Active bool
	Data   []byte
	Tags   []string
	Points []Point
	Counts map[string]int
	Matrix [][]float64
	Z      [2]float64
	Child  *recordJSON
	Weight int
	Extra  *extraJSON
}

// extraTypes maps the gob name of each type that encoding/gob registers by
// itself (registerBasics) to that type. Only these can travel in Extra without
// a gob.Register call on the receiving side.
var extraTypes = func() map[string]reflect.Type {
	samples := []any{
		int(0), int8(0), int16(0), int32(0), int64(0),
		uint(0), uint8(0), uint16(0), uint32(0), uint64(0), uintptr(0),
		float32(0), float64(0), complex64(0), complex128(0), false, "",
		[]int(nil), []int8(nil), []int16(nil), []int32(nil), []int64(nil),
		[]uint(nil), []uint8(nil), []uint16(nil), []uint32(nil), []uint64(nil),
		[]uintptr(nil), []float32(nil), []float64(nil), []bool(nil), []string(nil),
	}
	m := make(map[string]reflect.Type, len(samples))
	for _, s := range samples {
		t := reflect.TypeOf(s)
		m[t.String()] = t
	}
	m["[]byte"] = reflect.TypeOf([]byte(nil)) // input alias for []uint8
	return m
}()

func extraToJSON(v any) (*extraJSON, error) {
	if v == nil {
		return &extraJSON{Type: "nil", Value: json.RawMessage("null")}, nil
	}
	t := reflect.TypeOf(v)
	var raw []byte
	var err error
	switch x := v.(type) {
	case complex64:
		raw, err = json.Marshal([2]float32{real(x), imag(x)})
	case complex128:
		raw, err = json.Marshal([2]float64{real(x), imag(x)})
	default:
		raw, err = json.Marshal(v)
	}
	if err != nil {
		return nil, fmt.Errorf("Extra of type %s: %w", t, err)
	}
	return &extraJSON{Type: t.String(), Value: raw}, nil
}

func extraFromJSON(e *extraJSON) (any, error) {
	if e == nil || e.Type == "nil" {
		return nil, nil
	}
	value := []byte(e.Value)
	if len(bytes.TrimSpace(value)) == 0 {
		value = []byte("null")
	}
	switch e.Type {
	case "complex64":
		var p [2]float32
		if err := json.Unmarshal(value, &p); err != nil {
			return nil, fmt.Errorf("Extra complex64: %w", err)
		}
		return complex(p[0], p[1]), nil
	case "complex128":
		var p [2]float64
		if err := json.Unmarshal(value, &p); err != nil {
			return nil, fmt.Errorf("Extra complex128: %w", err)
		}
		return complex(p[0], p[1]), nil
	}
	t, ok := extraTypes[e.Type]
	if !ok {
		return nil, fmt.Errorf("Extra: unsupported type %q", e.Type)
	}
	p := reflect.New(t)
	if err := json.Unmarshal(value, p.Interface()); err != nil {
		return nil, fmt.Errorf("Extra %s: %w", e.Type, err)
	}
	return p.Elem().Interface(), nil
}

func recordToJSON(r *Record) (*recordJSON, error) {
	if r == nil {
		return nil, nil
	}
	extra, err := extraToJSON(r.Extra)
	if err != nil {
		return nil, err
	}
	child, err := recordToJSON(r.Child)
	if err != nil {
		return nil, err
	}
	return &recordJSON{
		Name: r.Name, ID: r.ID, Score: r.Score, Active: r.Active, Data: r.Data,
		Tags: r.Tags, Points: r.Points, Counts: r.Counts, Matrix: r.Matrix,
		Z: [2]float64{real(r.Z), imag(r.Z)}, Child: child, Weight: r.Weight, Extra: extra,
	}, nil
}

func recordFromJSON(j *recordJSON) (*Record, error) {
	if j == nil {
		return nil, nil
	}
	extra, err := extraFromJSON(j.Extra)
	if err != nil {
		return nil, err
	}
	child, err := recordFromJSON(j.Child)
	if err != nil {
		return nil, err
	}
	return &Record{
		Name: j.Name, ID: j.ID, Score: j.Score, Active: j.Active, Data: j.Data,
		Tags: j.Tags, Points: j.Points, Counts: j.Counts, Matrix: j.Matrix,
		Z: complex(j.Z[0], j.Z[1]), Child: child, Weight: j.Weight, Extra: extra,
	}, nil
}

// parseRecord reads one Record in the JSON form. Unknown keys are an error so
// that a typo in a test does not silently produce a zero field.
func parseRecord(line []byte) (*Record, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var j recordJSON
	if err := dec.Decode(&j); err != nil {
		return nil, err
	}
	return recordFromJSON(&j)
}

// replyJSON renders a reply (a pointer as made by newReply, or a plain value)
// as JSON. Records use the JSON form; a nil []string reply (what gob leaves
// for an empty list) is written as [] so that keys_empty reads naturally.
func replyJSON(v any) (json.RawMessage, error) {
	switch x := v.(type) {
	case nil:
		return json.RawMessage("null"), nil
	case *Record:
		j, err := recordToJSON(x)
		if err != nil {
			return nil, err
		}
		return marshal(j)
	case Record:
		return replyJSON(&x)
	case *[]string:
		return replyJSON(*x)
	case []string:
		if x == nil {
			x = []string{}
		}
		return marshal(x)
	case *int:
		return marshal(*x)
	case *string:
		return marshal(*x)
	}
	return marshal(v)
}

// marshal is json.Marshal without HTML escaping and without the trailing newline.
func marshal(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return json.RawMessage(bytes.TrimRight(buf.Bytes(), "\n")), nil
}

// recordsEqual is reflect.DeepEqual for Records except that, at every level, a
// nil slice equals an empty slice and a nil map equals an empty map (gob does
// not transmit empty slices inside structs and decodes a zero-length slice
// element as nil), and NaN equals NaN. A nil Child still differs from a
// non-nil one, and Extra must hold the same concrete type.
func recordsEqual(a, b *Record) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Name == b.Name && a.ID == b.ID && floatEq(a.Score, b.Score) &&
		a.Active == b.Active && bytes.Equal(a.Data, b.Data) &&
		looseEqual(reflect.ValueOf(a.Tags), reflect.ValueOf(b.Tags)) &&
		looseEqual(reflect.ValueOf(a.Points), reflect.ValueOf(b.Points)) &&
		looseEqual(reflect.ValueOf(a.Counts), reflect.ValueOf(b.Counts)) &&
		looseEqual(reflect.ValueOf(a.Matrix), reflect.ValueOf(b.Matrix)) &&
		floatEq(real(a.Z), real(b.Z)) && floatEq(imag(a.Z), imag(b.Z)) &&
		recordsEqual(a.Child, b.Child) && a.Weight == b.Weight &&
		extraEqual(a.Extra, b.Extra)
}

func floatEq(x, y float64) bool {
	return x == y || (math.IsNaN(x) && math.IsNaN(y))
}

func extraEqual(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if reflect.TypeOf(a) != reflect.TypeOf(b) {
		return false
	}
	return looseEqual(reflect.ValueOf(a), reflect.ValueOf(b))
}

// looseEqual compares values of the same type, treating nil and empty
// slices/maps as equal and NaN as equal to NaN.
func looseEqual(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := 0; i < a.Len(); i++ {
			if !looseEqual(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		for _, k := range a.MapKeys() {
			bv := b.MapIndex(k)
			if !bv.IsValid() || !looseEqual(a.MapIndex(k), bv) {
				return false
			}
		}
		return true
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if !looseEqual(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Float32, reflect.Float64:
		return floatEq(a.Float(), b.Float())
	case reflect.Complex64, reflect.Complex128:
		ca, cb := a.Complex(), b.Complex()
		return floatEq(real(ca), real(cb)) && floatEq(imag(ca), imag(cb))
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}
