package cephlab

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseHealth(t *testing.T) {
	h, err := parseHealth([]byte(`{"status":"HEALTH_WARN","checks":{
		"MGR_DOWN":{"severity":"HEALTH_WARN","summary":{"message":"no active mgr","count":1},"muted":true},
		"POOL_NEARFULL":{"severity":"HEALTH_WARN","summary":{"message":"7 pool(s) nearfull","count":7},"muted":false},
		"OSD_NEARFULL":{"severity":"HEALTH_WARN","summary":{"message":"1 nearfull osd(s)","count":1},"muted":false}},"mutes":[]}`))
	require.NoError(t, err)
	require.Equal(t, "HEALTH_WARN", h.Status)
	require.Equal(t, []string{"OSD_NEARFULL: 1 nearfull osd(s)", "POOL_NEARFULL: 7 pool(s) nearfull"}, h.Checks, "muted checks left out, sorted")
	require.True(t, h.Full)

	h, err = parseHealth([]byte(`{"status":"HEALTH_OK","checks":{},"mutes":[{"code":"MGR_DOWN","sticky":true}]}`))
	require.NoError(t, err)
	require.Equal(t, Health{Status: "HEALTH_OK"}, h)

	_, err = parseHealth([]byte(`HEALTH_OK`))
	require.ErrorContains(t, err, "ceph health")
}
