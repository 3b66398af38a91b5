package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/capstanhq/capstan/internal/faultnet"
)

// apiAddr is the API address peers forward to.
func (o *options) apiAddr() string {
	if o.advertiseAPI != "" {
		return o.advertiseAPI
	}
	return o.listen
}

// unspecifiedHost reports whether addr's host is empty or 0.0.0.0/::.
func unspecifiedHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// options is every setting of a node. serve takes them from flags, then
// CAPSTAN_* environment variables, then a config file, then defaults (in that
// order of precedence); dev uses the same set with development defaults.
type options struct {
	config          string
	nodeID          string
	dataDir         string
	listen          string
	raftAddr        string
	region          string
	shards          int
	bootstrap       bool
	policyFile      string
	policyFormat    string
	apiKeysFile     string
	noAuth          bool
	tlsCert         string
	tlsKey          string
	pprof           bool
	logLevel        string
	logFormat       string
	shutdownTimeout time.Duration

	// cluster mode (docs/cluster-contract.md)
	advertiseAPI     string
	advertiseRaft    string
	gossipAddr       string
	advertiseGossip  string
	join             string
	replicas         int
	bootstrapExpect  int
	clusterKey       string
	regionLatency    string
	unsafeStaleAllow bool
}

// flags registers the options on fs with the given defaults.
func (o *options) flags(fs *flag.FlagSet, def options) {
	fs.StringVar(&o.config, "config", "", "YAML `file` of settings keyed by flag name (e.g. data-dir: /var/lib/capstan)")
	fs.StringVar(&o.nodeID, "node-id", def.nodeID, "this node's id, unique in the cluster")
	fs.StringVar(&o.dataDir, "data-dir", def.dataDir, "directory for raft logs, snapshots and state")
	fs.StringVar(&o.listen, "listen", def.listen, "HTTP address for the API, health, reflection and /metrics")
	fs.StringVar(&o.raftAddr, "raft-addr", def.raftAddr, "address for raft traffic between nodes")
	fs.StringVar(&o.region, "region", def.region, "region this node runs in")
	fs.IntVar(&o.shards, "shards", def.shards, "number of shards (raft groups) customers are spread over; fixed when the data dir is bootstrapped (0: 64 for a new data dir, else as bootstrapped)")
	fs.BoolVar(&o.bootstrap, "bootstrap", def.bootstrap, "bootstrap a new cluster with this node when the data dir is empty")
	fs.StringVar(&o.policyFile, "policy", def.policyFile, "policy document installed when the cluster has none (json, yaml, toml or stof)")
	fs.StringVar(&o.policyFormat, "policy-format", "", "format of --policy (default: from the file extension, else detected)")
	fs.StringVar(&o.apiKeysFile, "api-keys-file", "", "`file` of API keys, one key:role per line (role client or admin); CAPSTAN_API_KEYS=\"key:role,...\" adds more")
	fs.BoolVar(&o.noAuth, "no-auth", false, "serve without API keys (everyone is an admin); for local experiments only")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "TLS certificate file (PEM); without it the API is plain HTTP/1.1 and h2c")
	fs.StringVar(&o.tlsKey, "tls-key", "", "TLS private key file (PEM)")
	fs.BoolVar(&o.pprof, "pprof", false, "serve net/http/pprof on /debug/pprof/ (unauthenticated: keep the listener private)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error (requests log at info, refusals at warn)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a shutdown waits for in-flight requests")

	fs.StringVar(&o.advertiseAPI, "advertise-api", "", "API address other nodes forward calls to (default: --listen)")
	fs.StringVar(&o.advertiseRaft, "advertise-raft", "", "raft address peers dial (default: --raft-addr); a host name stays a name")
	fs.StringVar(&o.gossipAddr, "gossip-addr", "", "memberlist bind address; setting it runs the node as part of a cluster")
	fs.StringVar(&o.advertiseGossip, "advertise-gossip", "", "memberlist address peers use (default: --gossip-addr)")
	fs.StringVar(&o.join, "join", "", "comma-separated gossip addresses of nodes to join (any one is enough; empty on the first node)")
	fs.IntVar(&o.replicas, "replicas", 3, "voters per shard, fixed when the cluster forms")
	fs.IntVar(&o.bootstrapExpect, "bootstrap-expect", 0, "on the first start, form the cluster (placing shards across regions) once this many nodes have joined")
	fs.StringVar(&o.clusterKey, "cluster-key", "", "shared secret authenticating node-to-node forwarding (required in a cluster; prefer CAPSTAN_CLUSTER_KEY)")
	fs.StringVar(&o.regionLatency, "region-latency", "", "simulated latency between regions on the node-to-node links, e.g. \"us-east<->eu-west=40ms\" (internal/faultnet spec)")
	fs.BoolVar(&o.unsafeStaleAllow, "unsafe-stale-allow", false, "UNSAFE, tests only: answer Allow from this node's replica without raft when another node leads the shard (breaks caps; proves the linearizability checker can fail)")
}

// clustered reports whether the options ask for cluster mode.
func (o *options) clustered() bool { return o.gossipAddr != "" }

// joinList splits --join.
func (o *options) joinList() []string {
	var out []string
	for _, s := range strings.Split(o.join, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// setUsage prints what the command does, its flags, and where else settings
// come from.
func setUsage(fs *flag.FlagSet, about string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: %s [flags]\n\n%s\n\n", fs.Name(), about)
		fmt.Fprintf(w, "Every flag can also be set as CAPSTAN_<FLAG> (CAPSTAN_DATA_DIR for --data-dir) or in\n"+
			"the --config file; flags win over the environment, which wins over the file.\n\nFlags:\n")
		fs.PrintDefaults()
	}
}

// envName is the environment variable for a flag: CAPSTAN_DATA_DIR for data-dir.
func envName(flagName string) string {
	return "CAPSTAN_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseOptions parses args, then fills every flag not given on the command
// line from the environment, then from the config file (--config or
// CAPSTAN_CONFIG).
func parseOptions(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var setErr error
	fill := func(name, value, source string) {
		if setErr != nil || set[name] {
			return
		}
		if err := fs.Set(name, value); err != nil {
			setErr = usageError{fmt.Errorf("%s: invalid value %q for %s: %v", source, value, name, err)}
			return
		}
		set[name] = true
	}
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" {
			fill(f.Name, v, envName(f.Name))
		}
	})
	if setErr != nil {
		return setErr
	}
	path := fs.Lookup("config").Value.String()
	if path == "" {
		return nil
	}
	values, err := readConfig(path)
	if err != nil {
		return usageError{err}
	}
	for _, name := range sortedNames(values) {
		if name == "config" || fs.Lookup(name) == nil {
			return usageError{fmt.Errorf("%s: unknown setting %q (settings are flag names, see -h)", path, name)}
		}
		fill(name, values[name], path)
	}
	return setErr
}

// readConfig reads a YAML mapping of flag names to scalar values.
func readConfig(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		switch x := v.(type) {
		case string, bool, int, int64, float64:
			out[k] = fmt.Sprint(x)
		case nil:
			out[k] = ""
		default:
			return nil, fmt.Errorf("config %s: %s: want a scalar value, got %T", path, k, v)
		}
	}
	return out, nil
}

func sortedNames(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// formatOf is the policy format for a file: the flag, else the extension,
// else "" (detected from the text).
func formatOf(path, flagFormat string) string {
	if flagFormat != "" {
		return flagFormat
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		return "json"
	case ".yaml", ".yml":
		return "yaml"
	case ".toml":
		return "toml"
	case ".stof":
		return "stof"
	}
	return ""
}

// validate checks options that flag parsing cannot.
func (o *options) validate() error {
	switch {
	case o.nodeID == "":
		return usageError{fmt.Errorf("--node-id is required")}
	case o.dataDir == "":
		return usageError{fmt.Errorf("--data-dir is required")}
	case o.listen == "":
		return usageError{fmt.Errorf("--listen is required")}
	case o.raftAddr == "":
		return usageError{fmt.Errorf("--raft-addr is required")}
	case o.shards < 0 || o.shards > 1024:
		return usageError{fmt.Errorf("--shards must be 0..1024, got %d", o.shards)}
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return usageError{fmt.Errorf("--tls-cert and --tls-key go together")}
	}
	if o.clustered() {
		switch {
		case o.bootstrap:
			return usageError{fmt.Errorf("--bootstrap starts a standalone node; a cluster forms with --bootstrap-expect (and --join)")}
		case o.clusterKey == "":
			return usageError{fmt.Errorf("--cluster-key (or CAPSTAN_CLUSTER_KEY) is required with --gossip-addr: it authenticates node-to-node forwarding")}
		case len(o.clusterKey) < 16:
			return usageError{fmt.Errorf("--cluster-key must be at least 16 characters")}
		case o.bootstrapExpect < 0:
			return usageError{fmt.Errorf("--bootstrap-expect must not be negative")}
		case o.replicas < 1 || o.replicas > 7:
			return usageError{fmt.Errorf("--replicas must be 1..7, got %d", o.replicas)}
		case o.bootstrapExpect == 0 && o.join == "":
			return usageError{fmt.Errorf("a cluster node needs --bootstrap-expect (first start of a new cluster) or --join (an existing one)")}
		}
		if err := faultnet.NewRules().Set(o.regionLatency); err != nil {
			return usageError{fmt.Errorf("--region-latency: %w", err)}
		}
		if api := o.apiAddr(); unspecifiedHost(api) {
			return usageError{fmt.Errorf("--advertise-api is required when --listen (%s) is not an address peers can dial", o.listen)}
		}
	} else {
		for name, set := range map[string]bool{"join": o.join != "", "bootstrap-expect": o.bootstrapExpect != 0,
			"region-latency": o.regionLatency != "", "unsafe-stale-allow": o.unsafeStaleAllow} {
			if set {
				return usageError{fmt.Errorf("--%s needs --gossip-addr (cluster mode)", name)}
			}
		}
	}
	switch o.policyFormat {
	case "", "json", "yaml", "toml", "stof":
	default:
		return usageError{fmt.Errorf("--policy-format: want json, yaml, toml or stof, got %q", o.policyFormat)}
	}
	if _, err := parseLevel(o.logLevel); err != nil {
		return usageError{err}
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return usageError{fmt.Errorf("--log-format: want text or json, got %q", o.logFormat)}
	}
	return nil
}
