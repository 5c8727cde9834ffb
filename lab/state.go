package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
	"github.com/ober-ingress/ober/lab/netsite"
)

// StateFile is the lab's description inside its directory: what `ober lab
// status` and `ober lab down` need, from a process other than the one
// that built the lab.
const StateFile = "lab.json"

// ErrNoLab says there is no lab in the directory.
var ErrNoLab = errors.New("no lab")

// State describes a lab. It is written as soon as the lab's directory
// exists and again as the lab grows, so that a half-built lab can be
// reported on too.
type State struct {
	Prefix  string    `json:"prefix"`
	Dir     string    `json:"dir"`
	HA      string    `json:"ha"` // bgp or vrrp: how status and the demo read the lab
	Started time.Time `json:"started"`
	// Ready is set once every node announces and the router spreads the
	// VIPs over all of them (BGP), or every VIP is on its owner (VRRP).
	Ready bool `json:"ready"`

	// Endpoints are https://10.99.0.100 and https://[fd99::100] (BGP),
	// or one per VIP, https://10.99.1.101 to .103 (VRRP).
	Endpoints []string `json:"endpoints"`
	// PlainEndpoints are the same VIPs over plain HTTP (port 80), which
	// only the client namespace's addresses may reach.
	PlainEndpoints []string `json:"plain_endpoints"`
	AccessKey      string   `json:"access_key"`
	SecretKey      string   `json:"secret_key"`
	CA             string   `json:"ca"` // the VIPs' self-signed certificate

	Router   RouterState    `json:"router"`
	Client   string         `json:"client"` // namespace
	Nodes    []NodeState    `json:"nodes"`
	Backends []BackendState `json:"backends"`
	Ceph     string         `json:"ceph"` // namespace of the monitor and OSD
	S3       S3State        `json:"s3"`
	// Namespaces lists every namespace of the lab.
	Namespaces []string `json:"namespaces"`
}

// S3State is the S3 backend's storage.
type S3State struct {
	BlockFile string `json:"block_file"` // the OSD's sparse file
	Capacity  int64  `json:"capacity"`   // its size
	Quota     int64  `json:"quota"`      // what the S3 user may store
}

// RouterState is the BIRD router.
type RouterState struct {
	NS     string `json:"ns"`
	Socket string `json:"socket"` // birdc -s
	Log    string `json:"log"`
}

// NodeState is one ober node.
type NodeState struct {
	Name   string `json:"name"`
	NS     string `json:"ns"`
	Addr   string `json:"addr"`
	Addr6  string `json:"addr6"`
	Config string `json:"config"`
	Log    string `json:"log"`
	PID    int    `json:"pid,omitempty"`
}

// BackendState is one S3 backend host.
type BackendState struct {
	Name    string `json:"name"`
	NS      string `json:"ns"`
	Listen  string `json:"listen"`
	Gateway string `json:"gateway"` // radosgw's client name, rgw1
}

func statePath(dir string) string { return filepath.Join(filepath.Clean(dir), StateFile) }

// save replaces the state file atomically.
func (s *State) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	path := statePath(s.Dir)
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("lab state: %w", err)
	}
	return nil
}

// Load reads the lab in dir. Without a state file but with a ledger (the
// builder died before writing one), the state holds the prefix only.
// Neither is ErrNoLab.
func Load(dir string) (*State, error) {
	dir = filepath.Clean(dir)
	b, err := os.ReadFile(statePath(dir))
	if err == nil {
		var s State
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("lab state %s: %w", statePath(dir), err)
		}
		return &s, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab state: %w", err)
	}
	rec, rerr := netsite.ReadRecord(dir)
	switch {
	case errors.Is(rerr, os.ErrNotExist):
		return nil, fmt.Errorf("%w in %s", ErrNoLab, dir)
	case rerr != nil:
		return nil, rerr
	}
	return &State{Prefix: rec.Prefix, Dir: dir, Namespaces: rec.Namespaces}, nil
}
