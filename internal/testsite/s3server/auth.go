package s3server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	sigAlgorithm = "AWS4-HMAC-SHA256"
	iso8601Basic = "20060102T150405Z"
	emptySHA256  = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

	payloadUnsigned                 = "UNSIGNED-PAYLOAD"
	payloadStreamingSigned          = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	payloadStreamingSignedTrailer   = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	payloadStreamingUnsignedTrailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

	// Request.PayloadMode values that are not x-amz-content-sha256 literals.
	modeSHA256    = "sha256"
	modePresigned = "presigned"

	maxClockSkew     = 15 * time.Minute
	maxPresignExpiry = 7 * 24 * 60 * 60
)

type authKind int

const (
	authNone authKind = iota
	authHeader
	authPresigned
	authBoth
	authV2
)

// detectAuth tells which authentication mechanism a request claims to use.
func detectAuth(r *http.Request) authKind {
	_, hasHeader := r.Header["Authorization"]
	q := r.URL.Query()
	presigned := q.Has("X-Amz-Signature") || q.Has("X-Amz-Credential") || q.Has("X-Amz-Algorithm")
	switch {
	case hasHeader && presigned:
		return authBoth
	case hasHeader:
		return authHeader
	case presigned:
		return authPresigned
	case q.Has("AWSAccessKeyId") && q.Has("Signature"):
		return authV2
	}
	return authNone
}

// authContext is the outcome of a successful authentication; the streaming
// decoder needs it to verify chunk and trailer signatures.
type authContext struct {
	accessKey  string
	signingKey []byte
	amzDate    string // ISO 8601 basic timestamp used in the string to sign
	scope      string // date/region/s3/aws4_request
	seedSig    string // signature of the request headers
	payload    string // x-amz-content-sha256 value (or UNSIGNED-PAYLOAD)
	presigned  bool
}

// payloadMode maps the authentication outcome to Request.PayloadMode.
func (a *authContext) payloadMode() string {
	if a.presigned {
		return modePresigned
	}
	switch a.payload {
	case payloadUnsigned, payloadStreamingSigned, payloadStreamingSignedTrailer, payloadStreamingUnsignedTrailer:
		return a.payload
	}
	return modeSHA256
}

type credentialScope struct {
	accessKey, date, region, service string
}

func (c credentialScope) scope() string {
	return c.date + "/" + c.region + "/" + c.service + "/aws4_request"
}

func parseCredential(v string) (credentialScope, bool) {
	parts := strings.Split(v, "/")
	if len(parts) < 5 || parts[len(parts)-1] != "aws4_request" {
		return credentialScope{}, false
	}
	n := len(parts)
	c := credentialScope{
		accessKey: strings.Join(parts[:n-4], "/"),
		date:      parts[n-4],
		region:    parts[n-3],
		service:   parts[n-2],
	}
	return c, c.accessKey != ""
}

// authenticate verifies the request's SigV4 signature (header or presigned).
// A nil error means the request headers, path and query are authentic;
// the body is verified later while it is read.
func (s *Server) authenticate(r *http.Request, now time.Time) (*authContext, *apiError) {
	switch detectAuth(r) {
	case authHeader:
		return s.authHeader(r, now)
	case authPresigned:
		return s.authPresigned(r, now)
	case authBoth:
		return nil, authError(http.StatusBadRequest, "InvalidArgument",
			"Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified")
	case authV2:
		return nil, errUnsupportedAuth()
	}
	return nil, errAccessDenied("Access Denied")
}

func errUnsupportedAuth() *apiError {
	return authError(http.StatusBadRequest, "InvalidRequest",
		"The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.")
}

func errHeaderMalformed(format string, args ...any) *apiError {
	return authError(http.StatusBadRequest, "AuthorizationHeaderMalformed", format, args...)
}

func errQueryMalformed(format string, args ...any) *apiError {
	return authError(http.StatusBadRequest, "AuthorizationQueryParametersError", format, args...)
}

func (s *Server) authHeader(r *http.Request, now time.Time) (*authContext, *apiError) {
	hdr := r.Header.Get("Authorization")
	algo, rest, _ := strings.Cut(strings.TrimSpace(hdr), " ")
	if algo != sigAlgorithm {
		if algo == "AWS" {
			return nil, errUnsupportedAuth()
		}
		return nil, errHeaderMalformed("The authorization header is malformed; unsupported algorithm %q.", algo)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, errHeaderMalformed("The authorization header is malformed; the component %q is not of the form key=value.", part)
		}
		if _, dup := fields[k]; dup {
			return nil, errHeaderMalformed("The authorization header is malformed; %s appears twice.", k)
		}
		fields[k] = v
	}
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if fields[k] == "" {
			return nil, errHeaderMalformed("The authorization header is malformed; missing %s.", k)
		}
	}
	cred, ok := parseCredential(fields["Credential"])
	if !ok {
		return nil, errHeaderMalformed("The authorization header is malformed; the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
	}

	amzDate, t, aerr := requestTime(r)
	if aerr != nil {
		return nil, aerr
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if payload == "" {
		return nil, authError(http.StatusBadRequest, "InvalidRequest",
			"Missing required header for this request: x-amz-content-sha256")
	}
	if !validPayloadHash(payload) {
		return nil, authError(http.StatusBadRequest, "InvalidArgument",
			"x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.")
	}
	if strings.HasPrefix(payload, "STREAMING-") && !isStreamingPayload(payload) {
		return nil, authError(http.StatusNotImplemented, "NotImplemented",
			"x-amz-content-sha256 %s is not supported by this server", payload)
	}

	ac, aerr := s.verify(r, verifyInput{
		cred:          cred,
		credMalformed: errHeaderMalformed,
		amzDate:       amzDate,
		signedHeaders: fields["SignedHeaders"],
		signature:     fields["Signature"],
		payload:       payload,
	})
	if aerr != nil {
		return nil, aerr
	}
	if d := now.Sub(t); d > maxClockSkew || d < -maxClockSkew {
		e := authError(http.StatusForbidden, "RequestTimeTooSkewed",
			"The difference between the request time (%s) and the current time (%s) is too large.",
			t.Format(iso8601Basic), now.UTC().Format(iso8601Basic))
		return nil, e
	}
	return ac, nil
}

// requestTime returns the timestamp used in the string to sign: X-Amz-Date,
// or the Date header re-formatted as ISO 8601 basic.
func requestTime(r *http.Request) (string, time.Time, *apiError) {
	if v := r.Header.Get("X-Amz-Date"); v != "" {
		t, err := time.Parse(iso8601Basic, v)
		if err != nil {
			return "", time.Time{}, errAccessDenied2("AWS authentication requires a valid Date or x-amz-date header")
		}
		return v, t, nil
	}
	if v := r.Header.Get("Date"); v != "" {
		t, err := http.ParseTime(v)
		if err != nil {
			return "", time.Time{}, errAccessDenied2("AWS authentication requires a valid Date or x-amz-date header")
		}
		return t.UTC().Format(iso8601Basic), t, nil
	}
	return "", time.Time{}, errAccessDenied2("AWS authentication requires a valid Date or x-amz-date header")
}

// errAccessDenied2 is an AccessDenied that counts as an authentication
// failure (the request carried credentials).
func errAccessDenied2(msg string) *apiError {
	e := errAccessDenied(msg)
	e.auth = true
	return e
}

func validPayloadHash(v string) bool {
	if strings.HasPrefix(v, "STREAMING-") || v == payloadUnsigned {
		return true
	}
	if len(v) != 64 {
		return false
	}
	_, err := hex.DecodeString(v)
	return err == nil
}

func isStreamingPayload(v string) bool {
	switch v {
	case payloadStreamingSigned, payloadStreamingSignedTrailer, payloadStreamingUnsignedTrailer:
		return true
	}
	return false
}

func (s *Server) authPresigned(r *http.Request, now time.Time) (*authContext, *apiError) {
	q := r.URL.Query()
	for _, k := range []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"} {
		if q.Get(k) == "" {
			return nil, errQueryMalformed("Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters; %s is missing.", k)
		}
	}
	if q.Get("X-Amz-Algorithm") != sigAlgorithm {
		return nil, errQueryMalformed("X-Amz-Algorithm only supports \"%s\"", sigAlgorithm)
	}
	cred, ok := parseCredential(q.Get("X-Amz-Credential"))
	if !ok {
		return nil, errQueryMalformed("Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
	}
	amzDate := q.Get("X-Amz-Date")
	t, err := time.Parse(iso8601Basic, amzDate)
	if err != nil {
		return nil, errQueryMalformed("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
	}
	expires, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || expires < 0 {
		return nil, errQueryMalformed("X-Amz-Expires should be a number")
	}
	if expires > maxPresignExpiry {
		return nil, errQueryMalformed("X-Amz-Expires must be less than a week (in seconds) that is 604800")
	}
	payload := q.Get("X-Amz-Content-Sha256")
	if payload == "" {
		payload = payloadUnsigned
	}
	ac, aerr := s.verify(r, verifyInput{
		cred:          cred,
		credMalformed: errQueryMalformed,
		amzDate:       amzDate,
		signedHeaders: q.Get("X-Amz-SignedHeaders"),
		signature:     q.Get("X-Amz-Signature"),
		payload:       payload,
		presigned:     true,
	})
	if aerr != nil {
		return nil, aerr
	}
	if t.Sub(now) > maxClockSkew {
		return nil, errAccessDenied2("Request is not valid yet")
	}
	if now.After(t.Add(time.Duration(expires) * time.Second)) {
		return nil, errAccessDenied2("Request has expired")
	}
	return ac, nil
}

type verifyInput struct {
	cred          credentialScope
	credMalformed func(format string, args ...any) *apiError
	amzDate       string
	signedHeaders string
	signature     string
	payload       string
	presigned     bool
}

// verify checks the credential scope and recomputes the request signature.
func (s *Server) verify(r *http.Request, in verifyInput) (*authContext, *apiError) {
	secret, ok := s.creds[in.cred.accessKey]
	if !ok {
		e := authError(http.StatusForbidden, "InvalidAccessKeyId",
			"The AWS Access Key Id you provided does not exist in our records.")
		e.accessKey = in.cred.accessKey
		return nil, e
	}
	if in.cred.date != in.amzDate[:min(8, len(in.amzDate))] {
		return nil, in.credMalformed("Invalid credential date %q. This date is not the same as X-Amz-Date: %q.", in.cred.date, in.amzDate)
	}
	if in.cred.region != s.region {
		return nil, in.credMalformed("The authorization header is malformed; the region '%s' is wrong; expecting '%s'", in.cred.region, s.region)
	}
	if in.cred.service != "s3" {
		return nil, in.credMalformed("Error parsing the Credential: incorrect service %q. This endpoint belongs to \"s3\".", in.cred.service)
	}

	signed := strings.Split(in.signedHeaders, ";")
	signedSet := make(map[string]bool, len(signed))
	for _, h := range signed {
		if h == "" || h != strings.ToLower(h) {
			return nil, in.credMalformed("SignedHeaders %q must be a ';'-separated list of lower-case header names.", in.signedHeaders)
		}
		signedSet[h] = true
	}
	if !signedSet["host"] {
		return nil, in.credMalformed("SignedHeaders must include host.")
	}
	var notSigned []string
	for k := range r.Header {
		lk := strings.ToLower(k)
		if !strings.HasPrefix(lk, "x-amz-") || signedSet[lk] {
			continue
		}
		if in.presigned && lk == "x-amz-content-sha256" {
			continue
		}
		notSigned = append(notSigned, lk)
	}
	if len(notSigned) > 0 {
		sort.Strings(notSigned)
		e := errAccessDenied2("There were headers present in the request which were not signed")
		e.headersNotSigned = strings.Join(notSigned, ", ")
		return nil, e
	}

	canonical, missing := canonicalRequest(r, signed, in.signedHeaders, in.payload, in.presigned)
	scope := in.cred.scope()
	sts := sigAlgorithm + "\n" + in.amzDate + "\n" + scope + "\n" + hexSHA256([]byte(canonical))
	key := signingKey(secret, in.cred.date, in.cred.region, in.cred.service)
	want := hex.EncodeToString(hmacSHA256(key, sts))
	if !hmac.Equal([]byte(want), []byte(in.signature)) {
		msg := "The request signature we calculated does not match the signature you provided. Check your key and signing method."
		if len(missing) > 0 {
			msg += " Signed header(s) missing from the request: " + strings.Join(missing, ", ") + "."
		}
		e := errSignatureMismatch(msg)
		e.accessKey = in.cred.accessKey
		e.stringToSign = sts
		e.canonicalRequest = canonical
		e.signature = in.signature
		return nil, e
	}
	return &authContext{
		accessKey:  in.cred.accessKey,
		signingKey: key,
		amzDate:    in.amzDate,
		scope:      scope,
		seedSig:    want,
		payload:    in.payload,
		presigned:  in.presigned,
	}, nil
}

// canonicalRequest builds the SigV4 canonical request. It returns the names
// of signed headers that are absent from the request (their value is taken
// as empty, which makes the signature fail; the names help diagnosis).
func canonicalRequest(r *http.Request, signed []string, signedHeaders, payload string, presigned bool) (string, []string) {
	var b strings.Builder
	var missing []string
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(wirePath(r))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL.RawQuery, presigned))
	b.WriteByte('\n')
	for _, h := range signed {
		v, ok := canonicalHeaderValue(r, h)
		if !ok {
			missing = append(missing, h)
		}
		b.WriteString(h)
		b.WriteByte(':')
		b.WriteString(v)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(signedHeaders)
	b.WriteByte('\n')
	b.WriteString(payload)
	return b.String(), missing
}

// wirePath is the request path exactly as it appeared on the request line.
func wirePath(r *http.Request) string {
	u := r.RequestURI
	if u == "" {
		return r.URL.EscapedPath()
	}
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i]
	}
	if !strings.HasPrefix(u, "/") {
		// absolute-form request target: scheme://authority/path
		if i := strings.Index(u, "://"); i >= 0 {
			rest := u[i+3:]
			if j := strings.IndexByte(rest, '/'); j >= 0 {
				u = rest[j:]
			} else {
				u = ""
			}
		}
	}
	if u == "" {
		u = "/"
	}
	return u
}

// canonicalQuery decodes each name/value pair of the raw query and
// re-encodes it with SigV4 rules, sorted by name then value. A name
// without '=' gets an empty value. X-Amz-Signature is left out for
// presigned requests.
func canonicalQuery(raw string, presigned bool) string {
	if raw == "" {
		return ""
	}
	type pair struct{ k, v string }
	var pairs []pair
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, v = queryUnescape(k), queryUnescape(v)
		if presigned && k == "X-Amz-Signature" {
			continue
		}
		pairs = append(pairs, pair{uriEncode(k, true), uriEncode(v, true)})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

func queryUnescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// uriEncode percent-encodes every byte except the SigV4 unreserved set
// A-Z a-z 0-9 - . _ ~ (and '/' when encodeSlash is false), with upper-case
// hex digits.
func uriEncode(s string, encodeSlash bool) string {
	const hexdig = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexdig[c>>4])
			b.WriteByte(hexdig[c&15])
		}
	}
	return b.String()
}

// canonicalHeaderValue returns the canonical value of a signed header:
// values trimmed, runs of spaces collapsed, multiple values joined by ','.
func canonicalHeaderValue(r *http.Request, name string) (string, bool) {
	switch name {
	case "host":
		return r.Host, r.Host != ""
	case "transfer-encoding":
		if len(r.TransferEncoding) > 0 {
			return strings.Join(r.TransferEncoding, ","), true
		}
	case "content-length":
		if _, ok := r.Header["Content-Length"]; !ok && r.ContentLength >= 0 && len(r.TransferEncoding) == 0 {
			return strconv.FormatInt(r.ContentLength, 10), true
		}
	}
	var vals []string
	if vv, ok := r.Header[http.CanonicalHeaderKey(name)]; ok {
		vals = vv
	} else {
		for k, vv := range r.Header {
			if strings.EqualFold(k, name) {
				vals = append(vals, vv...)
			}
		}
	}
	if vals == nil {
		return "", false
	}
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = trimAll(v)
	}
	return strings.Join(out, ","), true
}

// trimAll trims leading and trailing spaces and collapses sequential spaces.
func trimAll(v string) string {
	v = strings.Trim(v, " \t")
	if !strings.Contains(v, "  ") {
		return v
	}
	var b strings.Builder
	space := false
	for i := 0; i < len(v); i++ {
		if v[i] == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func hexSHA256(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}
