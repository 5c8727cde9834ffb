package loader

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestLayoutMatchesBPF holds the Go mirror of bpf/ober.h to the compiled
// object: sizes of the hand-written key/value types and the limits.
func TestLayoutMatchesBPF(t *testing.T) {
	spec, err := loadOber()
	require.NoError(t, err)
	m := spec.Maps

	svc := m["ober_service_set"].InnerMap
	require.EqualValues(t, binary.Size(svcKey{}), svc.KeySize, "struct ober_svc_key")
	require.EqualValues(t, binary.Size(svcVal{}), svc.ValueSize, "struct ober_svc_val")
	require.EqualValues(t, MaxServiceEntries, svc.MaxEntries)
	require.EqualValues(t, unix.BPF_F_NO_PREALLOC, svc.Flags, "the table allocates as it fills")
	// The earlier layout a migration reads.
	require.Equal(t, svcKeySize, binary.Size(svcKey{}))
	require.Equal(t, earlierSvcValSize, binary.Size(earlierSvcVal{}))

	absent := m["ober_vip_absent"]
	require.Equal(t, ebpf.Array, absent.Type)
	require.EqualValues(t, 1, absent.MaxEntries)
	require.EqualValues(t, binary.Size(vipAbsent{}), absent.ValueSize, "struct ober_vip_absent")

	acl := m["ober_access"]
	require.EqualValues(t, MaxAccessLists, acl.MaxEntries)
	require.EqualValues(t, binary.Size(lpmKey{}), acl.InnerMap.KeySize, "struct ober_lpm_key")
	require.EqualValues(t, 4, acl.InnerMap.ValueSize)
	require.EqualValues(t, MaxAccessEntries, acl.InnerMap.MaxEntries)
	require.EqualValues(t, unix.BPF_F_NO_PREALLOC, acl.InnerMap.Flags)

	wl := m["ober_whitelists"]
	require.EqualValues(t, MaxWhitelists, wl.MaxEntries)
	require.EqualValues(t, binary.Size(lpmKey{}), wl.InnerMap.KeySize, "struct ober_lpm_key")
	require.EqualValues(t, MaxWhitelistEntries, wl.InnerMap.MaxEntries)

	mag := m["ober_maglev"].InnerMap
	require.EqualValues(t, MaglevDefaultSize+maglevHeader, mag.MaxEntries)
	require.EqualValues(t, 4, mag.KeySize)
	require.EqualValues(t, 4, mag.ValueSize)

	require.EqualValues(t, MaxInstances, m["ober_instances"].MaxEntries)
	// ober_sockets is as every earlier release pinned it: an upgrade adopts
	// it, running instances' sockets and all. The listeners past it are in
	// ober_sockets_hi.
	lo, hi := m["ober_sockets"], m["ober_sockets_hi"]
	require.Equal(t, ebpf.SockMap, lo.Type)
	require.EqualValues(t, 256*MaxInstances, lo.MaxEntries)
	require.EqualValues(t, 4, lo.KeySize)
	require.EqualValues(t, 8, lo.ValueSize)
	require.Equal(t, 256, lowListeners)
	require.Equal(t, ebpf.SockHash, hi.Type)
	require.EqualValues(t, (MaxListeners-lowListeners)*MaxInstances, hi.MaxEntries)
	require.EqualValues(t, 4, hi.KeySize)
	require.EqualValues(t, 8, hi.ValueSize)
	require.EqualValues(t, reasonSlots*numActions, m["ober_counters"].MaxEntries)
	require.LessOrEqual(t, int(numReasons), reasonSlots, "enum ober_reason outgrew OBER_R_SLOTS")
	require.EqualValues(t, MaxInstances, m["ober_steered"].MaxEntries)
	require.EqualValues(t, MaxInstances+1, m["ober_assigned"].MaxEntries)
	require.EqualValues(t, MaxWhitelists, m["ober_wl_meta"].MaxEntries)

	ho := m["ober_handoff_set"]
	require.EqualValues(t, 1, ho.MaxEntries)
	require.EqualValues(t, 4, ho.InnerMap.KeySize)
	require.EqualValues(t, binary.Size(handoffVal{}), ho.InnerMap.ValueSize, "struct ober_handoff")
	require.EqualValues(t, 1, ho.InnerMap.MaxEntries)
	require.EqualValues(t, 4, m["ober_probing"].ValueSize)

	own := m["ober_owners"]
	require.EqualValues(t, 1, own.MaxEntries)
	require.EqualValues(t, binary.Size(flowKey{}), own.InnerMap.KeySize, "struct ober_flow")
	require.EqualValues(t, 4, own.InnerMap.ValueSize)
	require.EqualValues(t, MaxOwnedFlows, own.InnerMap.MaxEntries)
	require.EqualValues(t, 8, m["ober_handoff_rl"].ValueSize)
}

// TestReasonNames pins the counter numbering the metrics and the program
// share: reasons are only ever appended.
func TestReasonNames(t *testing.T) {
	want := []string{"not_vip", "passed", "steered", "no_service", "whitelist_drop", "whitelist_reject",
		"fragment", "malformed", "handoff_forwarded", "handoff_received", "handoff_no_target",
		"handoff_no_route", "handoff_too_big", "handoff_unknown", "handoff_limited", "access_denied"}
	var got []string
	for _, r := range Reasons() {
		got = append(got, r.String())
	}
	require.Equal(t, want, got)
	require.Equal(t, "reason(16)", Reason(16).String())
}

// TestJHashMatchesKernelJhash2 pins the hash to known values of the
// kernel's jhash2 so that a change on either side is caught even when
// both sides change together.
func TestJHashMatchesKernelJhash2(t *testing.T) {
	// Computed with the kernel's jhash2 (include/linux/jhash.h).
	require.Equal(t, uint32(0xa46158f5), jhash2([]uint32{1, 2, 3}, 0))
	require.Equal(t, uint32(0x8d93ced9), jhash2([]uint32{1, 2, 3, 4, 5, 6, 7, 8, 9}, 42))
}
