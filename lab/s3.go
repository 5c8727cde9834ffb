package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7/pkg/signer"

	"github.com/ober-ingress/ober/lab/netsite"
)

// s3Client sends SigV4-signed S3 requests from the client namespace, one
// new connection per request, so that each request is a new flow for the
// router's ECMP hash and every answer's X-Served-By tells where it went.
type s3Client struct {
	endpoint       string
	access, secret string
	hc             *http.Client
}

func newS3Client(st *State, d *netsite.Dialer, endpoint string) (*s3Client, error) {
	pem, err := os.ReadFile(st.CA)
	if err != nil {
		return nil, fmt.Errorf("read the lab's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", st.CA)
	}
	return &s3Client{endpoint: endpoint, access: st.AccessKey, secret: st.SecretKey, hc: &http.Client{
		Transport: &http.Transport{
			DialContext:       d.DialContext,
			TLSClientConfig:   &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}},
			DisableKeepAlives: true,
		},
	}}, nil
}

// answer is one request's outcome.
type answer struct {
	status   int
	servedBy string // X-Served-By: <node>/<instance>
	sum      [32]byte
	size     int64
	took     time.Duration
	body     string // the start of an error answer
}

// do sends a signed request with body (nil for none) and reads the
// answer's body into its SHA-256. The payload's hash is signed, so the
// gateway checks the upload too.
func (c *s3Client) do(ctx context.Context, method, path string, body []byte) (answer, error) {
	return c.doPaced(ctx, method, path, body, 0)
}

// doPaced is do, reading the answer's body at most at rate bytes a
// second (0: as fast as it comes): a download that lasts.
func (c *s3Client) doPaced(ctx context.Context, method, path string, body []byte, rate int64) (answer, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint+path, bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.ContentLength = int64(len(body))
	sum := sha256.Sum256(body)
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
	req = signer.SignV4(*req, c.access, c.secret, "", "us-east-1")
	resp, err := c.hc.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, servedBy: resp.Header.Get("X-Served-By")}
	h := sha256.New()
	var head bytes.Buffer
	var r io.Reader = resp.Body
	if rate > 0 {
		r = &pacedReader{r: r, rate: rate, start: time.Now()}
	}
	a.size, err = io.Copy(io.MultiWriter(h, &limited{&head, 512}), r)
	a.took = time.Since(start)
	copy(a.sum[:], h.Sum(nil))
	if err != nil {
		return a, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		a.body = strings.TrimSpace(head.String())
	}
	return a, nil
}

// pacedReader reads no faster than rate bytes a second on average.
type pacedReader struct {
	r     io.Reader
	rate  int64
	start time.Time
	n     int64
}

func (p *pacedReader) Read(b []byte) (int, error) {
	// Small reads keep the pace smooth.
	n, err := p.r.Read(b[:min(len(b), 64<<10)])
	p.n += int64(n)
	due := p.start.Add(time.Duration(float64(p.n) / float64(p.rate) * float64(time.Second)))
	time.Sleep(time.Until(due))
	return n, err
}

// limited keeps the first n bytes written.
type limited struct {
	b *bytes.Buffer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
