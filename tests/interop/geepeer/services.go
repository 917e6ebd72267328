package main

import (
	"errors"
	"sort"
	"sync"
	"time"
)

// method is one callable "Service.Method": how to allocate its argument and
// how to run it. call receives the pointer made by newArg and returns the
// reply value (never a pointer) or an error.
type method struct {
	newArg func() any
	call   func(arg any) (any, error)
}

func argsMethod(f func(Args) (int, error)) *method {
	return &method{
		newArg: func() any { return new(Args) },
		call:   func(a any) (any, error) { return f(*a.(*Args)) },
	}
}

// served counts the calls this process has run, by "Service.Method" (known
// methods whose argument decoded). Peer.Calls reads it.
var served = struct {
	sync.Mutex
	calls map[string]int
}{calls: map[string]int{}}

func countCall(serviceMethod string) {
	served.Lock()
	served.calls[serviceMethod]++
	served.Unlock()
}

// services mirrors txgeerpc.examples: Foo, Arith and Records. Peer is
// geepeer's own, for tests that need to know which server ran their calls.
var services = map[string]map[string]*method{
	"Foo": {
		"Sum": argsMethod(func(a Args) (int, error) { return a.Num1 + a.Num2, nil }),
		"Sleep": argsMethod(func(a Args) (int, error) {
			if a.Num1 > 0 {
				time.Sleep(time.Duration(a.Num1) * time.Second)
			}
			return a.Num1 + a.Num2, nil
		}),
	},
	"Arith": {
		"Multiply": argsMethod(func(a Args) (int, error) { return a.Num1 * a.Num2, nil }),
		"Divide": argsMethod(func(a Args) (int, error) {
			if a.Num2 == 0 {
				return 0, errors.New("divide by zero")
			}
			return a.Num1 / a.Num2, nil // Go truncates toward zero
		}),
		"Echo": {
			newArg: func() any { return new(string) },
			call:   func(a any) (any, error) { return *a.(*string), nil },
		},
		"Fail": {
			newArg: func() any { return new(string) },
			call:   func(a any) (any, error) { return 0, errors.New(*a.(*string)) },
		},
	},
	"Records": {
		"Echo": {
			newArg: func() any { return new(Record) },
			call:   func(a any) (any, error) { return *a.(*Record), nil },
		},
		"Keys": {
			newArg: func() any { return new(map[string]int) },
			call: func(a any) (any, error) {
				m := *a.(*map[string]int)
				keys := make([]string, 0, len(m)) // non-nil even when empty
				for k := range m {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				return keys, nil
			},
		},
	},
	"Peer": {
		// Calls("Foo.Sum") is how many Foo.Sum calls this server has run so
		// far (this one included when asked about itself).
		"Calls": {
			newArg: func() any { return new(string) },
			call: func(a any) (any, error) {
				served.Lock()
				defer served.Unlock()
				return served.calls[*a.(*string)], nil
			},
		},
	},
}

// newReply allocates the reply a Go client would pass for serviceMethod, or
// returns nil when the reply should be discarded (unknown method).
func newReply(serviceMethod string) any {
	switch serviceMethod {
	case "Foo.Sum", "Foo.Sleep", "Arith.Multiply", "Arith.Divide", "Arith.Fail", "Peer.Calls":
		return new(int)
	case "Arith.Echo":
		return new(string)
	case "Records.Echo":
		return new(Record)
	case "Records.Keys":
		return new([]string)
	}
	return nil
}

// newArgFor allocates the argument a Go client sends for serviceMethod; unknown
// methods default to Args (as in the basic scenario's Foo.Nope).
func newArgFor(serviceMethod string) any {
	switch serviceMethod {
	case "Arith.Echo", "Arith.Fail", "Peer.Calls":
		return new(string)
	case "Records.Echo":
		return new(Record)
	case "Records.Keys":
		return new(map[string]int)
	}
	return new(Args)
}
