package bench

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/procstat"
)

// Captured on the bench's Debian 12 VM (AMD EPYC, OpenSSL 3.0.19) with
// `openssl speed -elapsed -seconds 1 -bytes 16384 -evp aes-128-gcm`.
const opensslBytesFixture = `version: 3.0.19
built on: Fri Apr  3 12:29:32 2026 UTC
options: bn(64,64)
compiler: gcc -fPIC -pthread -m64 -Wa,--noexecstack -Wall -fzero-call-used-regs=used-gpr -DOPENSSL_TLS_SECURITY_LEVEL=2 -Wa,--noexecstack -g -O2 -ffile-prefix-map=/build/reproducible-path/openssl-3.0.19=. -fstack-protector-strong -Wformat -Werror=format-security -DOPENSSL_USE_NODELETE -DL_ENDIAN -DOPENSSL_PIC -DOPENSSL_BUILDING_OPENSSL -DNDEBUG -Wdate-time -D_FORTIFY_SOURCE=2
CPUINFO: OPENSSL_ia32cap=0xfffa3203078bffff:0x405fc6f1bf07ab
The 'numbers' are in 1000s of bytes per second processed.
type          16384 bytes
AES-128-GCM    5379555.33k
`

// The same machine's full table, without -bytes.
const opensslTableFixture = `version: 3.0.19
built on: Fri Apr  3 12:29:32 2026 UTC
options: bn(64,64)
compiler: gcc -fPIC -pthread -m64 -Wa,--noexecstack -Wall -fzero-call-used-regs=used-gpr -DOPENSSL_TLS_SECURITY_LEVEL=2 -Wa,--noexecstack -g -O2 -ffile-prefix-map=/build/reproducible-path/openssl-3.0.19=. -fstack-protector-strong -Wformat -Werror=format-security -DOPENSSL_USE_NODELETE -DL_ENDIAN -DOPENSSL_PIC -DOPENSSL_BUILDING_OPENSSL -DNDEBUG -Wdate-time -D_FORTIFY_SOURCE=2
CPUINFO: OPENSSL_ia32cap=0xfffa3203078bffff:0x405fc6f1bf07ab
The 'numbers' are in 1000s of bytes per second processed.
type             16 bytes     64 bytes    256 bytes   1024 bytes   8192 bytes  16384 bytes
AES-128-GCM      51334.72k   200735.81k   760887.30k  2140602.37k  4747649.02k  5308137.47k
`

// The first processor of the same machine's /proc/cpuinfo, and the
// start of the second.
const cpuinfoFixture = `processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 26
model		: 2
model name	: AMD EPYC
stepping	: 1
microcode	: 0x1000065
cpu MHz		: 2596.124
cache size	: 1024 KB
physical id	: 0
siblings	: 2
core id		: 0
cpu cores	: 2
apicid		: 0
initial apicid	: 0
fpu		: yes
fpu_exception	: yes
cpuid level	: 28
wp		: yes
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 clzero xsaveerptr arat avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid fsrm avx512_vp2intersect
bugs		: sysret_ss_attrs null_seg spectre_v1 spectre_v2 spec_store_bypass srso spectre_v2_user
bogomips	: 5192.24
TLB size	: 192 4K pages
clflush size	: 64
cache_alignment	: 64
address sizes	: 48 bits physical, 48 bits virtual
power management:
processor	: 1
vendor_id	: AuthenticAMD
processor	: 1
vendor_id	: AuthenticAMD
model name	: AMD EPYC
flags		: fpu
`

// An arm64 /proc/cpuinfo: no "model name", flags under "Features".
const cpuinfoARMFixture = `processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
CPU implementer	: 0x41
CPU part	: 0xd0c
`

// An x86 without AVX-512 or VAES, whose flags contain near misses.
const cpuinfoOldFixture = `processor	: 0
model name	: Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz
flags		: fpu sse2 pclmulqdq aes avx avx2 avx512fake sha
`

func TestParseSpeed(t *testing.T) {
	bps, err := parseSpeed(opensslBytesFixture, "aes-128-gcm", 16384)
	require.NoError(t, err)
	assert.InDelta(t, 5379555.33e3, bps, 1)

	bps, err = parseSpeed(opensslTableFixture, "aes-128-gcm", 16384)
	require.NoError(t, err)
	assert.InDelta(t, 5308137.47e3, bps, 1)
	bps, err = parseSpeed(opensslTableFixture, "AES-128-GCM", 1024)
	require.NoError(t, err)
	assert.InDelta(t, 2140602.37e3, bps, 1)

	legacy := "type             16 bytes     64 bytes\naes-128 cbc      1000.00k     2000.50k\n"
	bps, err = parseSpeed(legacy, "aes-128 cbc", 64)
	require.NoError(t, err)
	assert.InDelta(t, 2000.5e3, bps, 1e-6)

	for _, tc := range []struct {
		name, out, cipher string
		block             int
		want              string
	}{
		{"no table", "Error setting cipher\n", "aes-128-gcm", 16384, "no table"},
		{"other cipher", opensslBytesFixture, "aes-256-gcm", 16384, "no row for aes-256-gcm"},
		{"no column", opensslBytesFixture, "aes-128-gcm", 8192, "no 8192-byte column"},
		{"no unit", "type 16384 bytes\nAES-128-GCM 5379555.33\n", "aes-128-gcm", 16384, "no k suffix"},
		{"bad number", "type 16384 bytes\nAES-128-GCM 53x9555.33k\n", "aes-128-gcm", 16384, "invalid syntax"},
		{"zero", "type 16384 bytes\nAES-128-GCM 0.00k\n", "aes-128-gcm", 16384, "not positive"},
		{"bad header", "type 16384 octets\nAES-128-GCM 1.00k\n", "aes-128-gcm", 16384, "header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseSpeed(tc.out, tc.cipher, tc.block)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestCryptoCeiling(t *testing.T) {
	_, err := CryptoCeiling(t.Context(), 0, 2)
	require.ErrorContains(t, err, "seconds 0")
	_, err = CryptoCeiling(t.Context(), 1, 0)
	require.ErrorContains(t, err, "cores 0")

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = CryptoCeiling(ctx, 1, 2)
	require.Error(t, err, "a cancelled context must stop openssl")

	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not found: install it with `apt-get install openssl`")
	}
	c, err := CryptoCeiling(t.Context(), 1, 3)
	require.NoError(t, err)
	assert.Equal(t, "aes-128-gcm", c.Cipher)
	assert.Equal(t, 16384, c.BlockBytes)
	assert.Equal(t, "openssl speed -elapsed -seconds 1 -bytes 16384 -evp aes-128-gcm", c.Command)
	assert.Greater(t, c.GBpsPerCore, 0.05)
	assert.Less(t, c.GBpsPerCore, 100.0)
	assert.InDelta(t, 3*c.GBpsPerCore, c.GBpsMachine, 1e-9)
	t.Logf("aes-128-gcm, 16 KiB: %.2f GB/s per core", c.GBpsPerCore)
}

func TestParseCPUInfo(t *testing.T) {
	read := func(text string) (string, []string) {
		dir := t.TempDir()
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "proc"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "proc", "cpuinfo"), []byte(text), 0o644))
		ci, err := procstat.Under(dir).CPUInfo()
		require.NoError(t, err)
		return ci.Model, cryptoOf(ci.Flags)
	}
	model, flags := read(cpuinfoFixture)
	assert.Equal(t, "AMD EPYC", model)
	assert.Equal(t, []string{"aes", "avx", "avx2", "avx512f", "vaes", "vpclmulqdq", "sha_ni", "pclmulqdq"}, flags,
		"the first processor's flags, in the fixed order")

	model, flags = read(cpuinfoOldFixture)
	assert.Equal(t, "Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz", model)
	assert.Equal(t, []string{"aes", "avx", "avx2", "pclmulqdq"}, flags, "whole flags only: not avx512fake, not sha")

	model, flags = read(cpuinfoARMFixture)
	assert.Empty(t, model)
	assert.Equal(t, []string{"aes"}, flags)

	model, flags = read("")
	assert.Empty(t, model)
	assert.Empty(t, flags)
}

func TestParseCPUList(t *testing.T) {
	for in, want := range map[string]int{"0-1\n": 2, "0": 1, "0-3,8,10-11": 7, "0-3,2-5": 6} {
		n, err := parseCPUList(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, n, in)
	}
	for _, in := range []string{"", "\n", "a", "3-1", "0-", "-1", "0,,1"} {
		_, err := parseCPUList(in)
		assert.Error(t, err, "%q", in)
	}
}

func TestReadMachine(t *testing.T) {
	m := ReadMachine(t.Context(), "haproxy")
	assert.GreaterOrEqual(t, m.Cores, 1)
	assert.NotEmpty(t, m.Kernel)
	if _, err := os.Stat("/proc/cpuinfo"); err == nil {
		assert.NotEmpty(t, m.CPUModel)
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		assert.Contains(t, m.OpenSSL, "OpenSSL")
	}
	if _, err := exec.LookPath("haproxy"); err == nil {
		assert.Contains(t, m.HAProxy, "HAProxy")
		assert.Contains(t, m.HAProxyTLS, "OpenSSL")
	}
	assert.Empty(t, toolLine(t.Context(), "ober-no-such-tool", "-v"), "a missing tool is an empty string")
	assert.Empty(t, toolLine(t.Context(), "false"), "a failing tool is an empty string")
	assert.Equal(t, "b", firstLine("\n  \nb\nc\n"))
}

// throughputPoint is a consistent large-object point.
func throughputPoint(op, target string, instances, conns int, gbps, ceiling float64) Throughput {
	const size = 64 << 20
	seconds := 10.0
	bytes := int64(gbps * 1e9 * seconds)
	return Throughput{
		Op: op, Target: target, Instances: instances, ObjectBytes: size, Conns: conns,
		Objects: int(bytes / size), Bytes: bytes, Seconds: seconds, GBps: gbps, OfCrypto: gbps / ceiling,
	}
}

// plausibleReport is what a good run on the 2-CPU VM looks like.
func plausibleReport() *Report {
	r := &Report{
		Version: "v0.1.0-test",
		Started: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC),
		Seconds: 321.5,
		Machine: Machine{
			CPUModel: "AMD EPYC", Cores: 2, Kernel: "6.1.0-test",
			HAProxy: "HAProxy version 2.6.12", OpenSSL: "OpenSSL 3.0.19",
			Flags: []string{"aes", "avx2", "vaes"},
		},
		Crypto: Crypto{
			Cipher: "aes-128-gcm", BlockBytes: 16384, GBpsPerCore: 5.38, GBpsMachine: 10.76,
			Command: "openssl speed -elapsed -seconds 1 -bytes 16384 -evp aes-128-gcm",
		},
		Settings: Settings{
			Instances: []int{2}, ObjectBytes: []int{64 << 20}, Conns: []int{1, 2, 4, 8},
			PointSeconds: 10, RateSeconds: 5, SmallBytes: 4096, XDPPackets: 10000,
			SessionTickets: true,
		},
	}
	for _, op := range []string{"GET", "PUT"} {
		for _, conns := range []int{1, 2, 4, 8} {
			g := 0.5 * float64(conns)
			g = min(g, 2.5)
			r.Throughput = append(r.Throughput,
				throughputPoint(op, TargetOber, 2, conns, g, 10.76),
				throughputPoint(op, TargetHAProxy, 2, conns, g*0.8, 10.76))
		}
	}
	r.Handshakes = []Handshakes{
		{Target: TargetOber, Instances: 2, Conns: 16, Handshakes: 30000, Seconds: 10, ConnsPerSecond: 3000},
		{Target: TargetHAProxy, Instances: 2, Conns: 16, Handshakes: 24000, Seconds: 10, ConnsPerSecond: 2400, Errors: 3},
	}
	r.Resumed = []Handshakes{
		{Target: TargetOber, Instances: 2, Conns: 16, Handshakes: 70000, Seconds: 10, ConnsPerSecond: 7000, Resumed: 70000,
			HAProxyCPUSeconds: 8, PerCPUSecond: 8750},
		{Target: TargetHAProxy, Instances: 2, Conns: 16, Handshakes: 50000, Seconds: 10, ConnsPerSecond: 5000, Resumed: 49990},
	}
	r.Small = []Small{
		{Target: TargetOber, Instances: 2, Conns: 16, Bytes: 4096, Requests: 200000, Seconds: 10,
			RequestsPerSecond: 20000, P50Ms: 0.7, P99Ms: 2.1},
		{Target: TargetHAProxy, Instances: 2, Conns: 16, Bytes: 4096, Requests: 100000, Seconds: 10,
			RequestsPerSecond: 10000, P50Ms: 1.4, P99Ms: 4.0},
	}
	r.XDP = []XDPPoint{
		{Case: "syn-v4-redirect", Action: "redirect", NsPerPacket: 180, EmptyNs: 40, OverEmptyNs: 140},
		{Case: "ack1400-v4-redirect", Action: "redirect", NsPerPacket: 120, EmptyNs: 40, OverEmptyNs: 80},
		{Case: "wl-drop-v4", Action: "drop", NsPerPacket: 90, EmptyNs: 38, OverEmptyNs: 52},
		{Case: "non-vip-v4-pass", Action: "pass", NsPerPacket: 50, EmptyNs: 38, OverEmptyNs: 12},
	}
	return r
}

func TestCheckPlausible(t *testing.T) {
	require.NoError(t, plausibleReport().Check())
}

func TestCheckRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(r *Report)
		want   string
	}{
		{"cores", func(r *Report) { r.Machine.Cores = 0 }, "machine: cores 0 is below 1"},
		{"cpu model", func(r *Report) { r.Machine.CPUModel = " " }, "machine: cpu_model is empty"},
		{"crypto slow", func(r *Report) { r.Crypto.GBpsPerCore, r.Crypto.GBpsMachine = 0.01, 0.02 },
			"crypto: gbps_per_core 0.01 is not between 0.05 and 100"},
		{"crypto fast", func(r *Report) { r.Crypto.GBpsPerCore, r.Crypto.GBpsMachine = 5380, 10760 },
			"crypto: gbps_per_core 5380 is not between 0.05 and 100"},
		{"crypto machine", func(r *Report) { r.Crypto.GBpsMachine = 5.38 },
			"crypto: gbps_machine 5.38 is not gbps_per_core x machine.cores = 10.76"},
		{"gbps zero", func(r *Report) { r.Throughput[3].GBps, r.Throughput[3].OfCrypto = 0, 0 },
			"throughput[3] (GET haproxy 67108864 B x 2 conns): gbps 0 is not positive"},
		{"objects", func(r *Report) { r.Throughput[0].Objects = -1 },
			"throughput[0] (GET ober 67108864 B x 1 conns): objects -1 is negative"},
		{"gbps of bytes", func(r *Report) { r.Throughput[0].Bytes *= 2 },
			"throughput[0] (GET ober 67108864 B x 1 conns): gbps 0.5 is not bytes / seconds / 1e9 = 1"},
		{"bytes", func(r *Report) { r.Throughput[1].Bytes = -5 }, "throughput[1] (GET haproxy 67108864 B x 1 conns): bytes -5 is not positive"},
		{"seconds", func(r *Report) { r.Throughput[2].Seconds = 0 }, "throughput[2] (GET ober 67108864 B x 2 conns): seconds 0 is not positive"},
		{"conns", func(r *Report) { r.Throughput[2].Conns = 0 }, "throughput[2] (GET ober 67108864 B x 0 conns): conns 0 is not positive"},
		{"instances", func(r *Report) { r.Throughput[2].Instances = 0 }, "throughput[2] (GET ober 67108864 B x 2 conns): instances 0 is not positive"},
		{"errors", func(r *Report) { r.Throughput[0].Errors = 1 }, // of 74+1 transfers
			"throughput[0] (GET ober 67108864 B x 1 conns): errors 1 is more than 1% of 76 transfers"},
		{"op", func(r *Report) { r.Throughput[0].Op = "HEAD" }, `throughput[0] (HEAD ober 67108864 B x 1 conns): op "HEAD" is not GET or PUT`},
		{"target", func(r *Report) { r.Throughput[0].Target = "nginx" }, `throughput[0] (GET nginx 67108864 B x 1 conns): target "nginx" is not ober or haproxy`},
		{"above crypto", func(r *Report) {
			r.Throughput[6] = throughputPoint("GET", TargetOber, 2, 8, 50, 10.76)
		}, "throughput[6] (GET ober 67108864 B x 8 conns): gbps 50 is not below 4 x crypto.gbps_machine 10.76"},
		{"above any", func(r *Report) {
			r.Crypto.GBpsPerCore, r.Crypto.GBpsMachine = 90, 180
			r.Throughput[6] = throughputPoint("GET", TargetOber, 2, 8, 250, 180)
		}, "throughput[6] (GET ober 67108864 B x 8 conns): gbps 250 is not below 200"},
		{"of crypto", func(r *Report) { r.Throughput[4].OfCrypto *= 1.05 },
			"throughput[4] (GET ober 67108864 B x 4 conns): of_crypto 0.19516728624535318 is not gbps / crypto.gbps_machine = 0.1858736059479554"},
		{"handshakes count", func(r *Report) { r.Handshakes[0].Handshakes = 0 },
			"handshakes[0] (ober x 16 conns): handshakes 0 is not positive"},
		{"handshakes rate", func(r *Report) { r.Handshakes[1].ConnsPerSecond = 2e6 },
			"handshakes[1] (haproxy x 16 conns): conns_per_second 2000000 is not below 1000000"},
		{"handshakes zero rate", func(r *Report) { r.Handshakes[1].ConnsPerSecond = 0 },
			"handshakes[1] (haproxy x 16 conns): conns_per_second 0 is not positive"},
		{"handshakes errors", func(r *Report) { r.Handshakes[1].Errors = 500 },
			"handshakes[1] (haproxy x 16 conns): errors 500 is more than 1% of 24500 handshakes"},
		{"small requests", func(r *Report) { r.Small[0].Requests = 0 }, "small[0] (ober 4096 B x 16 conns): requests 0 is not positive"},
		{"small rate", func(r *Report) { r.Small[1].RequestsPerSecond = -1 },
			"small[1] (haproxy 4096 B x 16 conns): requests_per_second -1 is not positive"},
		{"small errors", func(r *Report) { r.Small[0].Errors = 3000 }, "small[0] (ober 4096 B x 16 conns): errors 3000 is more than 1% of 203000 requests"},
		{"p50 above p99", func(r *Report) { r.Small[0].P50Ms = 5 }, "small[0] (ober 4096 B x 16 conns): p50_ms 5 is above p99_ms 2.1"},
		{"p50 negative", func(r *Report) { r.Small[0].P50Ms = -1 }, "small[0] (ober 4096 B x 16 conns): p50_ms -1 is negative"},
		{"p99 zero", func(r *Report) { r.Small[0].P50Ms, r.Small[0].P99Ms = 0, 0 }, "small[0] (ober 4096 B x 16 conns): p99_ms 0 is not positive"},
		{"p99 huge", func(r *Report) { r.Small[1].P99Ms = 20000 }, "small[1] (haproxy 4096 B x 16 conns): p99_ms 20000 is not below 10000"},
		{"xdp zero", func(r *Report) { r.XDP[0].NsPerPacket = 0 }, "xdp[0] (syn-v4-redirect): ns_per_packet 0 is not positive"},
		{"xdp huge", func(r *Report) { r.XDP[1].NsPerPacket = 2e5 }, "xdp[1] (ack1400-v4-redirect): ns_per_packet 200000 is not below 100000"},
		{"xdp empty", func(r *Report) { r.XDP[2].EmptyNs = 0 }, "xdp[2] (wl-drop-v4): empty_ns 0 is not positive"},
		{"xdp below empty", func(r *Report) { r.XDP[3].NsPerPacket = 10 },
			"xdp[3] (non-vip-v4-pass): ns_per_packet 10 is below 0.5 x empty_ns 38"},
		{"no haproxy PUT", func(r *Report) {
			r.Throughput = filter(r.Throughput, func(t Throughput) bool { return t.Op != "PUT" || t.Target != TargetHAProxy })
		}, "throughput: no PUT point for target haproxy"},
		{"no ober GET", func(r *Report) {
			r.Throughput = filter(r.Throughput, func(t Throughput) bool { return t.Op != "GET" || t.Target != TargetOber })
		}, "throughput: no GET point for target ober"},
		{"no ober handshakes", func(r *Report) { r.Handshakes = r.Handshakes[1:] }, "handshakes: no point for target ober"},
		{"no haproxy small", func(r *Report) { r.Small = r.Small[:1] }, "small: no point for target haproxy"},
		{"no haproxy resumed", func(r *Report) { r.Resumed = r.Resumed[:1] }, "resumed: no point for target haproxy"},
		{"tickets refused", func(r *Report) { r.Resumed[0].Resumed = 100 },
			"resumed[0] (ober x 16 conns): resumed 100 of 70000 handshakes, below 0.99"},
		{"full handshakes resumed", func(r *Report) { r.Handshakes[1].Resumed = 5 },
			"handshakes[1] (haproxy x 16 conns): resumed 5: a full handshake's client keeps no session"},
		{"resumed without tickets", func(r *Report) { r.Settings.SessionTickets = false },
			"resumed: 2 points in a run without settings.session_tickets"},
		{"no syn", func(r *Report) { r.XDP = r.XDP[1:] }, `xdp: no case whose name contains "syn"`},
		{"no non-vip", func(r *Report) { r.XDP = r.XDP[:3] }, `xdp: no case whose name contains "non-vip"`},
		{"empty", func(r *Report) { *r = Report{} }, "throughput: no GET point for target ober"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := plausibleReport()
			tc.mutate(r)
			err := r.Check()
			require.Error(t, err)
			assert.Contains(t, strings.Split(err.Error(), "\n"), tc.want, "a line of the error, exactly")
		})
	}
}

func TestCheckReportsAll(t *testing.T) {
	r := plausibleReport()
	r.Machine.Cores = 0
	r.Small[0].P99Ms = 0
	r.XDP = nil
	err := r.Check()
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	assert.Contains(t, lines, "machine: cores 0 is below 1")
	assert.Contains(t, lines, "small[0] (ober 4096 B x 16 conns): p99_ms 0 is not positive")
	assert.Contains(t, lines, `xdp: no case whose name contains "wl-drop"`)
}

func filter[T any](s []T, keep func(T) bool) []T {
	var out []T
	for _, v := range s {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}

func TestReportJSONRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "report.json")
	r := plausibleReport()
	require.NoError(t, os.WriteFile(path, []byte("old"), 0o600))
	require.NoError(t, r.WriteJSON(path))

	got, err := ReadReport(path)
	require.NoError(t, err)
	assert.Equal(t, r, got)

	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(b), "{\n  \"version\": \"v0.1.0-test\",\n"), "indented, snake_case: %.60s", b)
	assert.Contains(t, string(b), `"gbps_per_core": 5.38`)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file left behind")

	require.Error(t, r.WriteJSON(filepath.Join(dir, "missing", "report.json")))

	_, err = ReadReport(filepath.Join(dir, "none.json"))
	require.ErrorIs(t, err, os.ErrNotExist)
	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte("{"), 0o600))
	_, err = ReadReport(bad)
	require.ErrorContains(t, err, bad)
}

// decodeSVG parses the whole document, returning its text content and
// the elements seen.
func decodeSVG(t *testing.T, doc []byte) (text string, elems map[string]int) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	elems = make(map[string]int)
	var sb strings.Builder
	depth := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				require.Equal(t, "svg", tok.Name.Local)
				require.Equal(t, "http://www.w3.org/2000/svg", tok.Name.Space)
			}
			depth++
			elems[tok.Name.Local]++
			for _, a := range tok.Attr {
				if a.Name.Local == "class" {
					elems["."+a.Value]++
				}
				if a.Name.Local == "stroke-dasharray" {
					elems["dash "+a.Value]++
				}
			}
		case xml.EndElement:
			depth--
		case xml.CharData:
			sb.Write(tok)
			sb.WriteByte('\n')
		}
	}
	require.Zero(t, depth)
	return sb.String(), elems
}

func TestWriteSVG(t *testing.T) {
	r := plausibleReport()
	r.Machine.CPUModel = `AMD <EPYC> & "Co"`
	var a, b bytes.Buffer
	require.NoError(t, WriteSVG(&a, r))
	require.NoError(t, WriteSVG(&b, r))
	assert.Equal(t, a.String(), b.String(), "deterministic")

	text, elems := decodeSVG(t, a.Bytes())
	lines := strings.Split(text, "\n")
	assert.NotContains(t, a.String(), "<EPYC>", "escaped")
	assert.Equal(t, 4, elems[".series"], "two targets x two ops")
	assert.Equal(t, 1, elems[".legend"])
	assert.Equal(t, 2, elems[".panel"])
	for _, s := range []string{"GET", "PUT", "ober, 64 MiB, 2 instances", "haproxy, 64 MiB, 2 threads",
		"connections (log2 scale)", "GB/s", "1", "2", "4", "8"} {
		assert.Contains(t, lines, s)
	}
	// haproxy dashed (one line per panel and a legend sample), ober solid.
	assert.Equal(t, 3, elems["dash 6 4"])
	assert.Equal(t, 9, elems["circle"], "ober markers: 8 points and a legend sample")
	assert.Equal(t, 9, elems["rect"]-3, "haproxy markers, besides the background and the two frames")
	// The data tops at 2.5 GB/s, the ceiling is 10.76: off scale.
	assert.Contains(t, lines, `ober bench: HTTPS throughput on AMD <EPYC> & "Co", 2 CPUs (crypto ceiling 10.76 GB/s, off scale)`)
	assert.Zero(t, elems[".ceiling"])
	assert.NotContains(t, lines, "crypto ceiling")

	// Data within half of the ceiling: the ceiling is drawn.
	for i := range r.Throughput {
		r.Throughput[i].GBps *= 2.4
	}
	a.Reset()
	require.NoError(t, WriteSVG(&a, r))
	text, elems = decodeSVG(t, a.Bytes())
	lines = strings.Split(text, "\n")
	assert.Contains(t, lines, `ober bench: HTTPS throughput on AMD <EPYC> & "Co", 2 CPUs`)
	assert.Equal(t, 2, elems[".ceiling"])
	assert.Contains(t, lines, "crypto ceiling 10.76 GB/s")
	assert.Contains(t, lines, "crypto ceiling", "legend entry")
	assert.Contains(t, lines, "15", "the y axis reaches past the ceiling")

	// No points: still a valid document.
	a.Reset()
	require.NoError(t, WriteSVG(&a, &Report{}))
	text, elems = decodeSVG(t, a.Bytes())
	assert.Zero(t, elems[".series"])
	assert.Contains(t, strings.Split(text, "\n"), "no data")
}

func TestWriteText(t *testing.T) {
	r := plausibleReport()
	r.Throughput = append(r.Throughput, throughputPoint("GET", TargetOber, 4, 8, 2.5, 10.76))
	var b bytes.Buffer
	require.NoError(t, r.WriteText(&b))
	out := b.String()
	t.Log("\n" + out)
	assert.Contains(t, out, "machine: AMD EPYC, 2 CPUs, kernel 6.1.0-test")
	assert.Contains(t, out, "crypto ceiling: aes-128-gcm, 16384 B blocks: 5.38 GB/s per core, 10.76 GB/s for the machine")
	assert.Regexp(t, `(?m)^\s*GET\s+64 MiB\s+2\s+8\s+2\.50\s+2\.00\s+1\.25\s+23%\s+0\.00\s+0\.00\s+0\s+0\s*$`, out, "throughput row with ratio")
	assert.Regexp(t, `(?m)^\s*GET\s+64 MiB\s+4\s+8\s+2\.50\s+-\s+-\s+23%\s+0\.00\s+-\s+0\s+-\s*$`, out, "a missing side")
	assert.Regexp(t, `(?m)^\s*PUT\s+64 MiB\s+2\s+1\s+0\.50\s+0\.40\s+1\.25`, out)
	assert.Regexp(t, `(?m)^\s*2\s+16\s+3000\s+2400\s+1\.25\s+-\s+-\s+0\s+3\s*$`, out, "handshakes row")
	assert.Regexp(t, `(?m)^\s*2\s+16\s+7000\s+5000\s+1\.40\s+8750\s+-\s+0\s+0\s*$`, out, "resumed row")
	assert.Less(t, strings.Index(out, "full handshakes"), strings.Index(out, "resumed TLS connections"))
	assert.Regexp(t, `(?m)^\s*4 KiB\s+2\s+16\s+20000\s+10000\s+2\.00\s+0\.70\s+2\.10\s+1\.40\s+4\.00\s+0\s+0\s*$`, out, "small row")
	assert.Regexp(t, `(?m)^\s*syn-v4-redirect\s+redirect\s+180\.0\s+40\.0\s+140\.0\s*$`, out, "xdp row")
	assert.Less(t, strings.Index(out, "GET"), strings.Index(out, "PUT"), "GET first")

	r.Settings.AA, r.Settings.Tune, r.Settings.VariantTune, r.Settings.TLSMax = true, "client_sndbuf=1048576", "bufsize=65536", "1.2"
	b.Reset()
	require.NoError(t, r.WriteText(&b))
	assert.Contains(t, b.String(), ", the client at TLS 1.2, both targets with haproxy.tune client_sndbuf=1048576, A/B of a lever: the ober column is the baseline HAProxy with bufsize=65536")
}

type failingWriter struct{ after int }

func (f *failingWriter) Write(b []byte) (int, error) {
	if f.after < len(b) {
		return 0, errors.New("disk full")
	}
	f.after -= len(b)
	return len(b), nil
}

func TestWriteErrors(t *testing.T) {
	r := plausibleReport()
	require.ErrorContains(t, WriteSVG(&failingWriter{}, r), "disk full")
	for _, after := range []int{0, 100, 1000} {
		require.ErrorContains(t, r.WriteText(&failingWriter{after: after}), "disk full", "failing after %d bytes", after)
	}
}

// The results BENCHMARKS.md quotes are real reports: they read back and
// pass the same plausibility check as a fresh run.
func TestCommittedResults(t *testing.T) {
	files, err := filepath.Glob("../docs/bench/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files, "docs/bench holds the latest full runs")
	for _, f := range files {
		r, err := ReadReport(f)
		require.NoError(t, err, f)
		require.NoError(t, r.Check(), f)
		require.False(t, r.Quick, "%s: BENCHMARKS.md quotes full runs", f)
		require.Equal(t, []int{1, 2}, r.Settings.Instances, f)
	}
}
