package haproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ober-ingress/ober/internal/testsite/haproxytest"
)

// TestRealH2GlitchesCloseConnection: an HTTP/2 client that keeps sending
// malformed requests (header names in capitals, a stream error each, one
// glitch each) is cut off on 3.0 once it reaches h2Glitches (GOAWAY
// ENHANCE_YOUR_CALM); 3.0 without the threshold, like 2.6, keeps such a
// connection open however many it sends.
func TestRealH2GlitchesCloseConnection(t *testing.T) {
	haproxytest.Each(t, testRealH2GlitchesCloseConnection)
}

func testRealH2GlitchesCloseConnection(t *testing.T, bin string) {
	dir := shortTempDir(t)
	cert := newTestCert(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr, in, out := startTLSInstance(t, ctx, bin, dir, cert)

	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: cert.Pool, ServerName: "localhost", NextProtos: []string{"h2"}})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(30*time.Second)))
	require.Equal(t, "h2", c.ConnectionState().NegotiatedProtocol)
	_, err = io.WriteString(c, http2.ClientPreface)
	require.NoError(t, err)
	fr := http2.NewFramer(c, c)
	require.NoError(t, fr.WriteSettings())
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, h := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "/bucket/key"}, {":authority", "localhost"}, {"X-Upper", "1"}} {
		require.NoError(t, enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]}))
	}

	// The server's frames, until a GOAWAY or the PING answer.
	type end struct {
		goaway *http2.GoAwayFrame
		pinged bool
		err    error
	}
	ended := make(chan end, 1)
	go func() {
		for {
			fm, err := fr.ReadFrame()
			switch fm := fm.(type) {
			case *http2.GoAwayFrame:
				ended <- end{goaway: fm}
				return
			case *http2.PingFrame:
				if fm.IsAck() {
					ended <- end{pinged: true}
					return
				}
			}
			if err != nil {
				ended <- end{err: err}
				return
			}
		}
	}()
	const malformed = 3 * h2Glitches
	sent := 0
	for id := uint32(1); sent < malformed; id += 2 {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			break // closed under us: what 3.0 does
		}
		sent++
	}
	// Still open, a PING is answered.
	_ = fr.WritePing(false, [8]byte{'o', 'b', 'e', 'r'})
	var e end
	select {
	case e = <-ended:
	case <-ctx.Done():
		t.Fatalf("no GOAWAY and no PING answer after %d malformed requests\n%s", sent, out)
	}
	if FeaturesFor(in.Version).H2GlitchesThreshold {
		require.NotNil(t, e.goaway, "cut off after %d malformed requests: %+v\n%s", sent, e, out)
		require.Equal(t, http2.ErrCodeEnhanceYourCalm, e.goaway.ErrCode)
		require.Less(t, int(e.goaway.LastStreamID), 2*malformed, "before all %d were read", malformed)
	} else {
		require.True(t, e.pinged, "the connection stays open: %+v", e)
		require.Equal(t, malformed, sent)
	}
}

// startTLSInstance runs one real, unprivileged instance with a TLS
// frontend on a listener of its own, in front of a backend that answers
// "ok", and waits for its runtime API. It returns the listener's address,
// the instance and its output so far.
func startTLSInstance(t *testing.T, ctx context.Context, bin, dir string, cert testCert) (string, Instance, *syncBuffer) {
	t.Helper()
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(be.Close)
	f, addr := listenerFile(t)
	in := baseInstance()
	in.Version = haproxyVersion(t, bin)
	in.CPU = lastCPU(t)
	in.StatsSocket = filepath.Join(dir, "s.sock")
	in.Frontends = []Frontend{{Name: "tls-443", Mode: ModeTLS, Port: 443, PEM: cert.CombinedPEM,
		Binds: []Bind{{FD: 3, Family: 4}}, Pool: DefaultPool}}
	in.Pools = []Pool{{Name: DefaultPool, Balance: BalanceLeastConn,
		Servers: []Server{{Name: "be", Addr: netip.MustParseAddrPort(be.Listener.Addr().String()), Weight: 1}}}}
	in.MaxConn = 1000
	unprivileged(t, &in, dir)
	_, out, exited := startHAProxy(t, bin, writeConfig(t, dir, in), f)
	waitReady(t, ctx, Runtime{Path: in.StatsSocket, Timeout: time.Second}, exited)
	return addr, in, out
}
