package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSessionTicketsDefaults(t *testing.T) {
	c := baseConfig()
	c.ApplyDefaults()
	st := c.TLS.SessionTickets
	require.True(t, st.On(), "tickets are on unless turned off")
	require.Equal(t, DefaultTicketRotate, st.Rotate.Duration)
	require.Equal(t, "/run/ober/ticket-seed", st.SeedFile(c.Node.RuntimeDir), "without key_file the seed is the node's own, on tmpfs")
	st.KeyFile = "/etc/ober/tickets.key"
	require.Equal(t, "/etc/ober/tickets.key", st.SeedFile(c.Node.RuntimeDir))

	off := false
	c.TLS.SessionTickets.Enabled = &off
	c.ApplyDefaults()
	require.False(t, c.TLS.SessionTickets.On(), "ApplyDefaults keeps an explicit false")
}

func TestValidateSessionTickets(t *testing.T) {
	key := writeKey(t, goodKey, 0o600)
	short := writeKey(t, "0123456789\n", 0o600)
	open := writeKey(t, goodKey, 0o640)
	tests := []struct {
		name   string
		mutate func(*SessionTickets)
		want   string
	}{
		{"rotate too short", func(s *SessionTickets) { s.Rotate = dur(30 * time.Second) },
			`tls.session_tickets.rotate: 30s: must be 1m to 168h`},
		{"rotate too long", func(s *SessionTickets) { s.Rotate = dur(8 * 24 * time.Hour) },
			`tls.session_tickets.rotate: 192h: must be 1m to 168h`},
		{"rotate negative", func(s *SessionTickets) { s.Rotate = dur(-time.Hour) },
			`tls.session_tickets.rotate: -1h: must be 1m to 168h`},
		{"key missing", func(s *SessionTickets) { s.KeyFile = "/nonexistent/tickets.key" },
			`tls.session_tickets.key_file: "/nonexistent/tickets.key": no such file`},
		{"key short", func(s *SessionTickets) { s.KeyFile = short },
			`tls.session_tickets.key_file: "` + short + `": holds 10 bytes; the key must have at least 32 (openssl rand -hex 32)`},
		{"key readable by the group", func(s *SessionTickets) { s.KeyFile = open },
			`tls.session_tickets.key_file: "` + open + `": mode 0640 lets others read the key; chmod 600 it`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseConfig()
			tt.mutate(&c.TLS.SessionTickets)
			require.EqualError(t, c.Validate(), tt.want)
		})
	}
	t.Run("good", func(t *testing.T) {
		c := baseConfig()
		c.TLS.SessionTickets = SessionTickets{KeyFile: key, Rotate: dur(time.Hour)}
		require.NoError(t, c.Validate())
	})
}

// The block parses from YAML, and an unknown key in it is refused by
// name.
func TestParseSessionTickets(t *testing.T) {
	base := `
node: {name: n1, interfaces: [eth1]}
instances: {cpus: [0]}
vips: [10.0.0.1]
backends: {servers: [{address: "10.1.0.1:8080"}]}
services: [{port: 80, mode: http}]
`
	c, err := parse([]byte(base+"tls: {session_tickets: {enabled: false, rotate: 1h}}\n"), nodeA())
	require.NoError(t, err)
	require.False(t, c.TLS.SessionTickets.On())
	require.Equal(t, time.Hour, c.TLS.SessionTickets.Rotate.Duration)

	_, err = parse([]byte(base+"tls: {session_tickets: {rotation: 1h}}\n"), nodeA())
	require.ErrorContains(t, err, "tls.session_tickets.rotation")
}
