package s3server

import (
	"encoding/xml"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Server.
type Options struct {
	// Credentials maps access key to secret key. Required, non-empty.
	Credentials map[string]string
	// Region is the only region accepted in credential scopes and the one
	// reported by GetBucketLocation. Default "us-east-1".
	Region string
	// Logger receives one record per request; nil discards.
	Logger *slog.Logger
	// MaxObjectSize bounds a single PUT or part and an assembled
	// multipart object. Default 1 GiB.
	MaxObjectSize int64
}

// Request is one entry of the request log.
type Request struct {
	Method, Path, RawQuery, Host string
	// Op is the S3 operation, e.g. "PutObject", or "Anonymous" for requests
	// without credentials.
	Op string
	// AuthOK is the signature verification result (headers and, for
	// streaming uploads, every chunk and the trailer). AuthError says why
	// it failed.
	AuthOK    bool
	AuthError string
	// PayloadMode is the x-amz-content-sha256 mode: "UNSIGNED-PAYLOAD",
	// "sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
	// "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
	// "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", "presigned", or ""
	// when the request could not be authenticated.
	PayloadMode string
	Expect100   bool  // Expect: 100-continue
	Chunked     bool  // Transfer-Encoding: chunked on the wire
	AWSChunked  bool  // Content-Encoding: aws-chunked
	BodyBytes   int64 // decoded body bytes received
	BodySHA256  string
	Status      int
	// Header is a copy of the request headers (Go moves Host to the Host
	// field).
	Header     http.Header
	RemoteAddr string

	// Trailer holds the decoded aws-chunked trailer headers, if any.
	Trailer http.Header
	// Checksums lists x-amz-checksum-* values seen in headers or trailers
	// as "alg:verified", "alg:mismatch" or "alg:unsupported".
	Checksums []string
	// RequestURI is the request target exactly as received (the path
	// used in the canonical request, plus the raw query).
	RequestURI string
	// RequestID is the x-amz-request-id returned to the client.
	RequestID string
	Time      time.Time
}

func (r Request) clone() Request {
	r.Header = r.Header.Clone()
	r.Trailer = r.Trailer.Clone()
	r.Checksums = append([]string(nil), r.Checksums...)
	return r
}

const defaultLogSize = 10000

// Server is an in-memory S3 server that verifies SigV4 on every request.
// It is safe for concurrent use.
type Server struct {
	creds         map[string]string
	region        string
	log           *slog.Logger
	maxObjectSize int64
	now           func() time.Time

	mu      sync.RWMutex
	buckets map[string]*bucket
	uploads map[string]*upload

	logMu    sync.Mutex
	reqLog   []Request // ring buffer
	logNext  int
	logMax   int
	logTotal int

	authFailures atomic.Int64
	requests     atomic.Int64
	reqSeq       atomic.Uint64
}

// New returns a Server with an empty in-memory store. It panics when
// opts.Credentials is empty.
func New(opts Options) *Server {
	if len(opts.Credentials) == 0 {
		panic("s3server: Options.Credentials must not be empty")
	}
	s := &Server{
		creds:         make(map[string]string, len(opts.Credentials)),
		region:        opts.Region,
		log:           opts.Logger,
		maxObjectSize: opts.MaxObjectSize,
		now:           time.Now,
		buckets:       map[string]*bucket{},
		uploads:       map[string]*upload{},
		logMax:        defaultLogSize,
	}
	for k, v := range opts.Credentials {
		s.creds[k] = v
	}
	if s.region == "" {
		s.region = "us-east-1"
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxObjectSize <= 0 {
		s.maxObjectSize = 1 << 30
	}
	return s
}

// Requests returns a copy of the request log, oldest first (the last 10000
// requests).
func (s *Server) Requests() []Request {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	out := make([]Request, 0, len(s.reqLog))
	if len(s.reqLog) < s.logMax {
		for _, r := range s.reqLog {
			out = append(out, r.clone())
		}
		return out
	}
	for i := range s.reqLog {
		out = append(out, s.reqLog[(s.logNext+i)%len(s.reqLog)].clone())
	}
	return out
}

// AuthFailures is the number of requests that carried credentials but
// failed authentication (header, presigned, chunk or trailer signature,
// unknown key, clock skew). Anonymous requests are not counted.
func (s *Server) AuthFailures() int { return int(s.authFailures.Load()) }

// RequestCount is the number of requests received since New.
func (s *Server) RequestCount() int { return int(s.requests.Load()) }

// Object returns a copy of a stored object's bytes.
func (s *Server) Object(bucket, key string) ([]byte, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b := s.buckets[bucket]
	if b == nil {
		return nil, false
	}
	o := b.objects[key]
	if o == nil {
		return nil, false
	}
	return append([]byte(nil), o.data...), true
}

func (s *Server) appendLog(r Request) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	s.logTotal++
	if len(s.reqLog) < s.logMax {
		s.reqLog = append(s.reqLog, r)
		s.logNext = len(s.reqLog) % s.logMax
		return
	}
	s.reqLog[s.logNext] = r
	s.logNext = (s.logNext + 1) % s.logMax
}

// statusWriter records the status code sent.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// reqCtx carries per-request state through the handlers.
type reqCtx struct {
	w      *statusWriter
	r      *http.Request
	rec    *Request
	rt     route
	ac     *authContext
	id     string
	body   *body
	now    time.Time
	bucket string
	key    string
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	now := s.now()
	id := strings.ToUpper(strconv.FormatUint(uint64(now.UnixNano())&0xffffffff, 16)) +
		strings.ToUpper(strconv.FormatUint(s.reqSeq.Add(1), 16))
	sw := &statusWriter{ResponseWriter: w}
	rec := &Request{
		Method:     r.Method,
		Path:       r.URL.Path,
		RawQuery:   r.URL.RawQuery,
		Host:       r.Host,
		Expect100:  strings.EqualFold(r.Header.Get("Expect"), "100-continue"),
		Chunked:    len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked",
		AWSChunked: hasToken(r.Header.Values("Content-Encoding"), "aws-chunked"),
		Header:     r.Header.Clone(),
		RemoteAddr: r.RemoteAddr,
		RequestURI: r.RequestURI,
		RequestID:  id,
		Time:       now,
	}
	rt := routeRequest(r)
	rec.Op = rt.op
	c := &reqCtx{w: sw, r: r, rec: rec, rt: rt, id: id, now: now, bucket: rt.bucket, key: rt.key}
	h := sw.Header()
	h.Set("x-amz-request-id", id)
	h.Set("Server", "ober-s3server")

	defer func() {
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		rec.Status = sw.status
		s.appendLog(*rec)
		level := slog.LevelDebug
		if !rec.AuthOK && rec.Op != "Anonymous" {
			level = slog.LevelWarn
		}
		s.log.Log(r.Context(), level, "s3 request", "op", rec.Op, "method", r.Method, "path", rec.Path,
			"status", rec.Status, "auth_ok", rec.AuthOK, "auth_error", rec.AuthError,
			"payload", rec.PayloadMode, "bytes", rec.BodyBytes, "remote", r.RemoteAddr, "request_id", id)
	}()

	if detectAuth(r) == authNone {
		rec.Op = "Anonymous"
		s.writeError(c, errAccessDenied("Access Denied"))
		return
	}
	ac, aerr := s.authenticate(r, now)
	if aerr != nil {
		s.fail(c, aerr)
		return
	}
	c.ac = ac
	rec.AuthOK = true
	rec.PayloadMode = ac.payloadMode()
	if rt.err != nil {
		s.writeError(c, rt.err)
		return
	}
	limit := int64(1 << 20)
	if rt.objectData {
		limit = s.maxObjectSize
	}
	b, berr := s.readBody(r, ac, rec, limit, rt.objectData)
	if berr != nil {
		s.fail(c, berr)
		return
	}
	c.body = b
	if aerr := s.dispatch(c); aerr != nil {
		s.writeError(c, aerr)
	}
}

// fail writes an error and, for authentication failures, records them.
func (s *Server) fail(c *reqCtx, e *apiError) {
	if e.auth {
		c.rec.AuthOK = false
		c.rec.AuthError = e.Code + ": " + e.Message
		if e.headersNotSigned != "" {
			c.rec.AuthError += " (" + e.headersNotSigned + ")"
		}
		s.authFailures.Add(1)
		if e.canonicalRequest != "" {
			s.log.Debug("s3 signature mismatch", "request_id", c.id,
				"canonical_request", e.canonicalRequest, "string_to_sign", e.stringToSign)
		}
	}
	s.writeError(c, e)
}

func (s *Server) writeError(c *reqCtx, e *apiError) {
	h := c.w.Header()
	h.Del("ETag")
	h.Del("Content-Length")
	if c.r.Method == http.MethodHead {
		c.w.WriteHeader(e.Status)
		return
	}
	res := c.r.URL.Path
	out := errorXML{
		Code:              e.Code,
		Message:           e.Message,
		Resource:          res,
		RequestID:         c.id,
		AWSAccessKeyID:    e.accessKey,
		SignatureProvided: e.signature,
		StringToSign:      e.stringToSign,
		CanonicalRequest:  e.canonicalRequest,
		HeadersNotSigned:  e.headersNotSigned,
	}
	switch e.Code {
	case "NoSuchBucket", "BucketNotEmpty", "BucketAlreadyExists":
		out.BucketName = c.bucket
	case "NoSuchKey":
		out.Key = c.key
	}
	s.writeXML(c, e.Status, out)
}

func (s *Server) writeXML(c *reqCtx, status int, v any) {
	data, err := xml.Marshal(v)
	if err != nil {
		http.Error(c.w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := c.w.Header()
	h.Set("Content-Type", "application/xml")
	h.Set("Content-Length", strconv.Itoa(len(xml.Header)+len(data)))
	c.w.WriteHeader(status)
	if c.r.Method == http.MethodHead {
		return
	}
	_, _ = io.WriteString(c.w, xml.Header)
	_, _ = c.w.Write(data)
}

func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
