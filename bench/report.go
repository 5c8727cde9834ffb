package bench

import (
	"slices"
	"time"
)

// Report is one run of the bench harness, as written to its JSON file.
// Field names are stable: scripts compare runs by them.
type Report struct {
	Version  string    `json:"version"` // ober's version
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"` // wall time of the whole run
	Quick    bool      `json:"quick"`
	Machine  Machine   `json:"machine"`
	Crypto   Crypto    `json:"crypto"`
	Settings Settings  `json:"settings"`
	// Throughput: large-object GET and PUT over HTTPS, per target,
	// object size and connection count.
	Throughput []Throughput `json:"throughput"`
	// Handshakes: new TLS connections per second (one request each).
	Handshakes []Handshakes `json:"handshakes"`
	// Resumed: new TLS connections per second whose client resumes its
	// session with a ticket (one request each); absent from runs before
	// Settings.SessionTickets.
	Resumed []Handshakes `json:"resumed,omitempty"`
	// Small: 4 KiB GETs on keep-alive connections.
	Small []Small `json:"small"`
	// XDP: ns per packet of ober's program and of an empty one.
	XDP []XDPPoint `json:"xdp"`
}

// Machine is what the figures were measured on.
type Machine struct {
	CPUModel string `json:"cpu_model"`
	Cores    int    `json:"cores"` // online logical CPUs
	Kernel   string `json:"kernel"`
	HAProxy  string `json:"haproxy"` // version line of the binary both targets ran
	// HAProxyTLS is the TLS library that HAProxy runs on (`haproxy -vv`),
	// which is what serves the handshakes; OpenSSL below is the system's
	// openssl tool, which measured the crypto ceiling.
	HAProxyTLS string   `json:"haproxy_tls,omitempty"`
	OpenSSL    string   `json:"openssl"` // version line
	Flags      []string `json:"flags"`   // of interest: aes, avx2, vaes, ...
}

// Crypto is the machine's crypto ceiling, from `openssl speed`.
type Crypto struct {
	Cipher string `json:"cipher"` // aes-128-gcm
	// BlockBytes is the buffer size of the figure (16384: TLS records).
	BlockBytes int `json:"block_bytes"`
	// GBpsPerCore is one process's encryption rate in GB/s (10^9 B/s).
	GBpsPerCore float64 `json:"gbps_per_core"`
	// GBpsMachine is GBpsPerCore times Cores: the ceiling on what this
	// machine could encrypt if it did nothing else.
	GBpsMachine float64 `json:"gbps_machine"`
	Command     string  `json:"command"`
}

// Settings are the knobs of the run.
type Settings struct {
	Instances    []int   `json:"instances"`     // ober instance counts measured
	ObjectBytes  []int   `json:"object_bytes"`  // large-object sizes
	Conns        []int   `json:"conns"`         // connection counts of the sweep
	PointSeconds float64 `json:"point_seconds"` // window of each throughput point
	RateSeconds  float64 `json:"rate_seconds"`  // window of the handshake and small figures
	SmallBytes   int     `json:"small_bytes"`
	// SteeringMode is ober's instances.steering in this run (auto, on,
	// off; empty in runs before auto), SteeringOn whether the node's XDP
	// steered, per entry of Instances (auto decides by the node's links
	// and instance count), and Steering whether it steered in any.
	SteeringMode string `json:"steering_mode,omitempty"`
	SteeringOn   []bool `json:"steering_on,omitempty"`
	Steering     bool   `json:"steering"`
	// SessionTickets says both targets issue session tickets from the
	// same keys, and the run has Resumed points.
	SessionTickets bool `json:"session_tickets"`
	// AA marks a calibration run: both columns are the baseline HAProxy.
	AA bool `json:"aa,omitempty"`
	// BaselineXDP says the baseline's link had an XDP program that
	// passes everything (--baseline-xdp).
	BaselineXDP bool `json:"baseline_xdp,omitempty"`
	// Tune is both targets' haproxy.tune (key=value,...), VariantTune
	// what the first column's HAProxy set over it in an A/A run: its
	// ratios are then that lever's effect.
	Tune        string `json:"tune,omitempty"`
	VariantTune string `json:"variant_tune,omitempty"`
	// TLSMax is the highest TLS version the client offered (1.3, or 1.2
	// with --tls12); empty in runs before it was recorded (1.3).
	TLSMax     string `json:"tls_max,omitempty"`
	XDPPackets int    `json:"xdp_packets"`
}

// Targets of the HTTP figures.
const (
	TargetOber    = "ober"    // VIP through XDP, sk_lookup, per-CPU HAProxy instances
	TargetHAProxy = "haproxy" // the same HAProxy build, one process, same thread count, no XDP
)

// Throughput is one point of the large-object sweep.
type Throughput struct {
	Op          string  `json:"op"` // GET or PUT
	Target      string  `json:"target"`
	Instances   int     `json:"instances"` // ober instances, or HAProxy threads
	ObjectBytes int     `json:"object_bytes"`
	Conns       int     `json:"conns"`
	Objects     int     `json:"objects"` // transfers completed
	Bytes       int64   `json:"bytes"`
	Seconds     float64 `json:"seconds"`
	GBps        float64 `json:"gbps"` // 10^9 bytes per second
	// OfCrypto is GBps as a fraction of Crypto.GBpsMachine.
	OfCrypto float64 `json:"of_crypto"`
	Errors   int     `json:"errors"`
	// HAProxyCPUSeconds is the CPU time (user and system) the target's
	// HAProxy processes used in the window, and GBPerCPUSecond the bytes
	// moved per such second: the per-core figure that scales to a larger
	// machine, where the client and backend do not share the node's CPUs.
	HAProxyCPUSeconds float64 `json:"haproxy_cpu_seconds"`
	GBPerCPUSecond    float64 `json:"gb_per_cpu_second"`
	// HAProxySysSeconds is the system part of HAProxyCPUSeconds: the
	// kernel's work for HAProxy (socket reads and writes, TCP), which no
	// HAProxy setting removes short of kTLS or splicing.
	HAProxySysSeconds float64 `json:"haproxy_sys_seconds,omitempty"`
	// MachineCPUSeconds is the busy time of the whole machine in the
	// window (/proc/stat: client, backend and node together), and
	// SoftirqCPUSeconds the part of it in softirq, where the kernel
	// receives packets (XDP, the cpumap's and the veths' receive, TCP
	// input). ClientTxPackets and ClientRxPackets are the packets the
	// client sent to the target and received from it: the node's
	// packets in and out on its client link. Together they give the
	// per-packet figures of the scaling model in BENCHMARKS.md.
	MachineCPUSeconds float64 `json:"machine_cpu_seconds,omitempty"`
	SoftirqCPUSeconds float64 `json:"softirq_cpu_seconds,omitempty"`
	ClientTxPackets   int64   `json:"client_tx_packets,omitempty"`
	ClientRxPackets   int64   `json:"client_rx_packets,omitempty"`
}

// Handshakes is the new-connection rate of one target.
type Handshakes struct {
	Target         string  `json:"target"`
	Instances      int     `json:"instances"`
	Conns          int     `json:"conns"` // concurrent clients
	Handshakes     int     `json:"handshakes"`
	Seconds        float64 `json:"seconds"`
	ConnsPerSecond float64 `json:"conns_per_second"`
	Errors         int     `json:"errors"`
	// Resumed counts the connections whose session was resumed (the
	// Resumed points; 0 in the full handshakes').
	Resumed int `json:"resumed,omitempty"`
	// HAProxyCPUSeconds is the CPU time of the target's HAProxy
	// processes in the window, and PerCPUSecond the connections per
	// second of it: what the server side costs, apart from the client
	// and backend that share the machine.
	HAProxyCPUSeconds float64 `json:"haproxy_cpu_seconds,omitempty"`
	PerCPUSecond      float64 `json:"per_cpu_second,omitempty"`
}

// Small is the small-request rate and latency of one target.
type Small struct {
	Target            string  `json:"target"`
	Instances         int     `json:"instances"`
	Conns             int     `json:"conns"`
	Bytes             int     `json:"bytes"` // object size
	Requests          int     `json:"requests"`
	Seconds           float64 `json:"seconds"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	P50Ms             float64 `json:"p50_ms"`
	P99Ms             float64 `json:"p99_ms"`
	Errors            int     `json:"errors"`
	// latencies are the requests' latencies, sorted: what two halves of
	// one figure pool for their percentiles.
	latencies []time.Duration
}

// merge adds up two measurements of the same point.
func (a Throughput) merge(b Throughput) Throughput {
	a.Objects += b.Objects
	a.Bytes += b.Bytes
	a.Seconds += b.Seconds
	a.Errors += b.Errors
	a.HAProxyCPUSeconds += b.HAProxyCPUSeconds
	a.HAProxySysSeconds += b.HAProxySysSeconds
	a.MachineCPUSeconds += b.MachineCPUSeconds
	a.SoftirqCPUSeconds += b.SoftirqCPUSeconds
	a.ClientTxPackets += b.ClientTxPackets
	a.ClientRxPackets += b.ClientRxPackets
	a.GBps, a.GBPerCPUSecond = 0, 0
	if a.Seconds > 0 {
		a.GBps = float64(a.Bytes) / a.Seconds / 1e9
	}
	if a.HAProxyCPUSeconds > 0 {
		a.GBPerCPUSecond = float64(a.Bytes) / a.HAProxyCPUSeconds / 1e9
	}
	return a
}

// merge adds up two measurements of the same rate.
func (a Handshakes) merge(b Handshakes) Handshakes {
	a.Handshakes += b.Handshakes
	a.Resumed += b.Resumed
	a.Seconds += b.Seconds
	a.Errors += b.Errors
	a.HAProxyCPUSeconds += b.HAProxyCPUSeconds
	a.ConnsPerSecond, a.PerCPUSecond = 0, 0
	if a.Seconds > 0 {
		a.ConnsPerSecond = float64(a.Handshakes) / a.Seconds
	}
	if a.HAProxyCPUSeconds > 0 {
		a.PerCPUSecond = float64(a.Handshakes) / a.HAProxyCPUSeconds
	}
	return a
}

// merge pools two measurements of the same point, percentiles included.
func (a Small) merge(b Small) Small {
	a.latencies = slices.Concat(a.latencies, b.latencies)
	slices.Sort(a.latencies)
	a.Requests += b.Requests
	a.Seconds += b.Seconds
	a.Errors += b.Errors
	a.setRates()
	return a
}

// setRates derives the rate and the percentiles from Requests, Seconds
// and the latencies.
func (s *Small) setRates() {
	s.RequestsPerSecond, s.P50Ms, s.P99Ms = 0, 0, 0
	if s.Seconds > 0 {
		s.RequestsPerSecond = float64(s.Requests) / s.Seconds
	}
	if n := len(s.latencies); n > 0 {
		s.P50Ms = float64(s.latencies[n/2]) / 1e6
		s.P99Ms = float64(s.latencies[n*99/100]) / 1e6
	}
}

// XDPPoint is one packet path's cost.
type XDPPoint struct {
	Case        string  `json:"case"`
	Action      string  `json:"action"`
	NsPerPacket float64 `json:"ns_per_packet"` // ober's program, mean of repeat=1 runs
	EmptyNs     float64 `json:"empty_ns"`      // the empty program, same frame, same method
	OverEmptyNs float64 `json:"over_empty_ns"`
}
