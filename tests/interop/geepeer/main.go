// Command geepeer is a GeeRPC-protocol peer written from the wire facts in
// docs/protocol.md, used by txgeerpc's interoperability tests. Standard library only.
//
//	geepeer server -listen 127.0.0.1:0 [-http] [-registry URL [-heartbeat 4m0s]]
//	geepeer client -addr HOST:PORT -scenario basic|timeout|records|idle [-idle 1s] [-idle-calls 3] [-http] [-wide-option] [-option-pause 50ms] [-call-timeout 20s]
//	geepeer xclient -registry URL [-scenario spread|broadcast] [-select roundrobin|random] [-calls 10] [-wide-option] [-call-timeout 20s] [-update-timeout 10s]
//	geepeer decode-replies < s2c.bin
//	geepeer encode-requests < requests.jsonl > c2s.bin
//	geepeer load -addr HOST:PORT [-in-flight 1] [-conns 1] [-duration 2s] [-warmup 1000] [-warmup-for 300ms] [-payload 0] [-wide-option] [-latencies]
//	geepeer pipeload -addr HOST:PORT [-in-flight 64] [-conns 4] [-duration 2s] [-warmup 1000] [-warmup-for 300ms] [-payload 0] [-wide-option] [-latencies]
package main

import (
	"fmt"
	"log"
	"os"
)

const usage = `usage:
  geepeer server -listen 127.0.0.1:0 [-http] [-registry URL [-heartbeat 4m0s]]
  geepeer client -addr HOST:PORT -scenario basic|timeout|records|idle [-idle 1s] [-idle-calls 3] [-http] [-wide-option] [-option-pause 50ms] [-call-timeout 20s]
  geepeer xclient -registry URL [-scenario spread|broadcast] [-select roundrobin|random] [-calls 10] [-wide-option] [-call-timeout 20s] [-update-timeout 10s]
  geepeer decode-replies < s2c.bin
  geepeer encode-requests < requests.jsonl > c2s.bin
  geepeer load -addr HOST:PORT [-in-flight 1] [-conns 1] [-duration 2s] [-warmup 1000] [-warmup-for 300ms] [-payload 0] [-wide-option] [-latencies]
  geepeer pipeload -addr HOST:PORT [-in-flight 64] [-conns 4] [-duration 2s] [-warmup 1000] [-warmup-for 300ms] [-payload 0] [-wide-option] [-latencies]
`

func main() {
	log.SetOutput(os.Stderr) // the default; stated because tests read it
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = runServer(os.Args[2:])
	case "client":
		err = runClient(os.Args[2:])
	case "xclient":
		err = runXClient(os.Args[2:])
	case "decode-replies":
		err = runDecodeReplies()
	case "encode-requests":
		err = runEncodeRequests()
	case "load":
		err = runLoad(os.Args[2:])
	case "pipeload":
		err = runPipeLoad(os.Args[2:])
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "geepeer %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
