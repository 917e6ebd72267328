package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// The registry side of docs/protocol.md sections 9 and 10 as the reference puts it
// on the wire: a server's heartbeats (POST, X-Geerpc-Server), the registry
// discovery's GET (X-Geerpc-Servers) and an XClient that picks one of the
// listed servers per call, at random or round robin.
const (
	defaultRegistryPath    = "/_geerpc_/registry"
	serverHeader           = "X-Geerpc-Server"
	serversHeader          = "X-Geerpc-Servers"
	defaultRegistryTimeout = 5 * time.Minute
	// defaultHeartbeat is the reference's period when it is given 0: the
	// registry's default timeout less one minute.
	defaultHeartbeat = defaultRegistryTimeout - time.Minute
	// defaultUpdateTimeout is how old the discovery's list may get before a
	// get fetches it again (the reference's default).
	defaultUpdateTimeout = 10 * time.Second
	// registryRequestTimeout bounds every registry request. The reference has
	// no limit (defects 30 and 33); a limit changes nothing on the wire and
	// keeps a test from hanging on a registry that does not answer.
	registryRequestTimeout = 10 * time.Second
)

// sendHeartbeat POSTs one heartbeat as the reference does, so the request is
// vector 10's: no body (Go then sends Content-Length: 0) and the address in
// X-Geerpc-Server. It returns the answer's status line, which the reference
// does not check (defect 33) and neither does the caller.
func sendHeartbeat(registry, addr string) (string, error) {
	req, err := http.NewRequest(http.MethodPost, registry, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set(serverHeader, addr)
	resp, err := (&http.Client{Timeout: registryRequestTimeout}).Do(req)
	if err != nil {
		return "", err
	}
	// Unlike the reference the body is read and closed (defect 33), so the
	// connection goes back to the pool whatever the registry answers.
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.Status, nil
}

// startHeartbeat keeps addr registered at registry as the reference's
// heartbeat helper does: one beat at once (the caller waits for it), then one
// per period from a goroutine; 0 means the reference's default period. As in
// the reference, the first request that fails (the very first included) ends
// the heartbeats for good (defect 32). It returns the first beat's status
// line, or "ERROR " and the error; each later beat prints its own HEARTBEAT
// line on stdout.
func startHeartbeat(registry, addr string, period time.Duration) string {
	if period == 0 {
		period = defaultHeartbeat
	}
	status, err := sendHeartbeat(registry, addr)
	if err != nil {
		log.Println("rpc registry: heartbeat error:", err)
		return "ERROR " + err.Error()
	}
	go func() {
		ticker := time.NewTicker(period)
		defer ticker.Stop()
		for range ticker.C {
			status, err := sendHeartbeat(registry, addr)
			if err != nil {
				log.Println("rpc registry: heartbeat error:", err)
				fmt.Printf("HEARTBEAT ERROR %s\n", err)
				return
			}
			fmt.Printf("HEARTBEAT %s\n", status)
		}
	}()
	return status
}

// registryDiscovery is the reference's registry discovery. Before every get it
// fetches the list again when the last fetch is updateTimeout old; a fetch
// that fails fails the get (the old list is not used). The list is the
// answer's X-Geerpc-Servers split on commas, spaces trimmed, empty entries
// dropped. Round robin starts at a random position and steps by one, modulo
// the current length.
type registryDiscovery struct {
	registry      string
	updateTimeout time.Duration
	http          *http.Client

	mu         sync.Mutex
	servers    []string
	lastUpdate time.Time
	index      int
	rng        *rand.Rand
}

func newRegistryDiscovery(registry string, updateTimeout time.Duration) *registryDiscovery {
	if updateTimeout == 0 {
		updateTimeout = defaultUpdateTimeout
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>32))
	return &registryDiscovery{
		registry:      registry,
		updateTimeout: updateTimeout,
		http:          &http.Client{Timeout: registryRequestTimeout},
		index:         rng.IntN(math.MaxInt32 - 1),
		rng:           rng,
	}
}

// refreshLocked fetches the list when it is stale, with a plain GET (the
// request bytes are vector 12's). Unlike the reference (defect 30) the status
// is checked and the body closed.
func (d *registryDiscovery) refreshLocked() error {
	if !d.lastUpdate.IsZero() && time.Since(d.lastUpdate) < d.updateTimeout {
		return nil
	}
	resp, err := d.http.Get(d.registry)
	if err != nil {
		return fmt.Errorf("rpc discovery: refresh err: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("rpc discovery: the registry answered %s", resp.Status)
	}
	servers := []string{}
	for _, server := range strings.Split(resp.Header.Get(serversHeader), ",") {
		if server = strings.TrimSpace(server); server != "" {
			servers = append(servers, server)
		}
	}
	d.servers = servers
	d.lastUpdate = time.Now()
	return nil
}

// get picks one server with mode "random" or "roundrobin".
func (d *registryDiscovery) get(mode string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.refreshLocked(); err != nil {
		return "", err
	}
	n := len(d.servers)
	if n == 0 {
		return "", errors.New("rpc discovery: no available servers")
	}
	switch mode {
	case "random":
		return d.servers[d.rng.IntN(n)], nil
	case "roundrobin":
		server := d.servers[d.index%n]
		d.index = (d.index + 1) % n
		return server, nil
	}
	return "", fmt.Errorf("rpc discovery: not supported select mode %q", mode)
}

// getAll returns every listed server.
func (d *registryDiscovery) getAll() ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.refreshLocked(); err != nil {
		return nil, err
	}
	return slices.Clone(d.servers), nil
}

// xClient calls through a registryDiscovery with one cached connection per
// "protocol@address" (replaced when it has shut down), as the reference's
// XClient. There is no retry: a dial error is the call's result.
type xClient struct {
	discovery *registryDiscovery
	mode      string
	opt       Option
	wide      bool
	timeout   time.Duration

	mu      sync.Mutex
	clients map[string]*rpcClient
}

// dial returns the connection to rpcAddr: "tcp@host:port", "http@host:port"
// (CONNECT first, as the reference's DialHTTP) or any other net.Dial network.
func (x *xClient) dial(rpcAddr string) (*rpcClient, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if c, ok := x.clients[rpcAddr]; ok {
		if c.available() {
			return c, nil
		}
		_ = c.conn.Close()
		delete(x.clients, rpcAddr)
	}
	protocol, addr, ok := strings.Cut(rpcAddr, "@")
	if !ok || strings.Contains(addr, "@") {
		return nil, fmt.Errorf("rpc client err: wrong format '%s', expect protocol@addr", rpcAddr)
	}
	network, overHTTP := protocol, false
	if protocol == "http" {
		network, overHTTP = "tcp", true
	}
	c, err := dialClient(network, addr, x.opt, overHTTP, x.wide, 0, nil, nil)
	if err != nil {
		return nil, err
	}
	x.clients[rpcAddr] = c
	return c, nil
}

func (x *xClient) close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for addr, c := range x.clients {
		_ = c.conn.Close()
		delete(x.clients, addr)
	}
}

// xOutput is one line of xclient output: which server the call went to and
// what came back. Error holds the RPC error or the transport failure.
type xOutput struct {
	Case      string          `json:"case"`
	Method    string          `json:"method"`
	Server    string          `json:"server"`
	Reply     json.RawMessage `json:"reply"`
	Error     string          `json:"error"`
	Transport bool            `json:"transport_error"`
}

// callOn makes one call on server and describes it.
func (x *xClient) callOn(name, server, method string, arg any) xOutput {
	line := xOutput{Case: name, Method: method, Server: server, Reply: json.RawMessage("null")}
	c, err := x.dial(server)
	if err != nil {
		line.Error, line.Transport = err.Error(), true
		return line
	}
	cl := c.start(method, arg)
	c.wait(cl, x.timeout)
	switch {
	case cl.err != nil:
		line.Error, line.Transport = cl.err.Error(), true
	case cl.rpcErr != "":
		line.Error = cl.rpcErr
	default:
		raw, err := replyJSON(cl.reply)
		if err != nil {
			line.Error, line.Transport = "rendering reply: "+err.Error(), true
		} else {
			line.Reply = raw
		}
	}
	return line
}

func runXClient(args []string) error {
	fs := flag.NewFlagSet("xclient", flag.ContinueOnError)
	registry := fs.String("registry", "", "registry URL, e.g. http://127.0.0.1:9999"+defaultRegistryPath)
	name := fs.String("scenario", "spread",
		"spread: -calls sequential Foo.Sum{i, 1000i} calls, one server picked per call; "+
			"broadcast: Foo.Sum{1, 2} on every listed server at once")
	mode := fs.String("select", "roundrobin", "roundrobin or random")
	calls := fs.Int("calls", 10, "number of calls of the spread scenario")
	wideOption := fs.Bool("wide-option", false,
		"send the Option padded to 512 bytes without newline (needed by geepeer's own "+
			"faithful server, docs/protocol.md 3.3)")
	callTimeout := fs.Duration("call-timeout", 20*time.Second, "give up waiting for one reply after this")
	updateTimeout := fs.Duration("update-timeout", 0,
		"fetch the list again before a pick when it is this old (0: the reference's "+
			defaultUpdateTimeout.String()+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *registry == "" {
		return errors.New("xclient: -registry is required")
	}
	if *mode != "roundrobin" && *mode != "random" {
		return fmt.Errorf("xclient: -select must be roundrobin or random, not %q", *mode)
	}
	if *calls < 1 {
		return fmt.Errorf("xclient: -calls must be at least 1, got %d", *calls)
	}
	if *updateTimeout < 0 {
		return fmt.Errorf("xclient: -update-timeout must not be negative, got %s", *updateTimeout)
	}
	x := &xClient{
		discovery: newRegistryDiscovery(*registry, *updateTimeout),
		mode:      *mode,
		opt:       Option{MagicNumber: MagicNumber, CodecType: GobType, ConnectTimeout: 10 * time.Second},
		wide:      *wideOption,
		timeout:   *callTimeout,
		clients:   map[string]*rpcClient{},
	}
	defer x.close()
	var lines []xOutput
	switch *name {
	case "spread":
		for i := 1; i <= *calls; i++ {
			server, err := x.discovery.get(x.mode)
			if err != nil {
				return err
			}
			lines = append(lines, x.callOn("spread", server, "Foo.Sum", Args{i, 1000 * i}))
		}
	case "broadcast":
		servers, err := x.discovery.getAll()
		if err != nil {
			return err
		}
		lines = make([]xOutput, len(servers))
		var wg sync.WaitGroup
		for i, server := range servers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lines[i] = x.callOn("broadcast", server, "Foo.Sum", Args{1, 2})
			}()
		}
		wg.Wait()
	default:
		return fmt.Errorf("xclient: unknown scenario %q", *name)
	}
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	failed := 0
	for _, line := range lines {
		if err := out.Encode(line); err != nil {
			return err
		}
		if line.Transport {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d calls failed in transport (see their lines)", failed, len(lines))
	}
	return nil
}
