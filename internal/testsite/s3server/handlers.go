package s3server

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	minPartSize   = 5 << 20
	maxPartNumber = 10000
	maxKeyLength  = 1024
	xmlTimeFormat = "2006-01-02T15:04:05.000Z"
)

type bucket struct {
	name    string
	owner   string
	created time.Time
	objects map[string]*object
}

// object is immutable once stored; readers may use it without the lock.
type object struct {
	data     []byte
	etag     string // quoted
	modified time.Time
	header   http.Header // stored response headers (Content-Type, x-amz-meta-*, ...)
}

type upload struct {
	id, bucket, key string
	initiated       time.Time
	header          http.Header
	parts           map[int]*part
}

type part struct {
	data []byte
	md5  []byte
	etag string
}

// storedHeaders are request headers persisted with an object and returned
// by GET and HEAD.
var storedHeaders = []string{"Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language", "Cache-Control", "Expires"}

func objectHeaders(r *http.Request) http.Header {
	h := http.Header{}
	for _, k := range storedHeaders {
		if v := r.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	if ce := h.Get("Content-Encoding"); ce != "" {
		var keep []string
		for _, t := range strings.Split(ce, ",") {
			if t = strings.TrimSpace(t); t != "" && !strings.EqualFold(t, "aws-chunked") {
				keep = append(keep, t)
			}
		}
		if len(keep) == 0 {
			h.Del("Content-Encoding")
		} else {
			h.Set("Content-Encoding", strings.Join(keep, ","))
		}
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "binary/octet-stream")
	}
	for k, vv := range r.Header {
		if strings.HasPrefix(strings.ToLower(k), "x-amz-meta-") {
			h[k] = append([]string(nil), vv...)
		}
	}
	return h
}

func (s *Server) dispatch(c *reqCtx) *apiError {
	switch c.rt.op {
	case "ListBuckets":
		return s.listBuckets(c)
	case "CreateBucket":
		return s.createBucket(c)
	case "HeadBucket":
		return s.headBucket(c)
	case "DeleteBucket":
		return s.deleteBucket(c)
	case "GetBucketLocation":
		return s.getBucketLocation(c)
	case "ListObjectsV2", "ListObjects":
		return s.listObjects(c, c.rt.op == "ListObjectsV2")
	case "DeleteObjects":
		return s.deleteObjects(c)
	case "PutObject":
		return s.putObject(c)
	case "GetObject", "HeadObject":
		return s.getObject(c)
	case "DeleteObject":
		return s.deleteObject(c)
	case "CreateMultipartUpload":
		return s.createMultipart(c)
	case "UploadPart":
		return s.uploadPart(c)
	case "CompleteMultipartUpload":
		return s.completeMultipart(c)
	case "AbortMultipartUpload":
		return s.abortMultipart(c)
	}
	return errNotImplemented(c.rt.op)
}

func ownerOf(accessKey string) owner {
	sum := sha256.Sum256([]byte(accessKey))
	return owner{ID: hex.EncodeToString(sum[:]), DisplayName: accessKey}
}

func (s *Server) listBuckets(c *reqCtx) *apiError {
	out := listBucketsXML{Owner: ownerOf(c.ac.accessKey), Buckets: []bucketXML{}}
	s.mu.RLock()
	for _, b := range s.buckets {
		if b.owner == c.ac.accessKey {
			out.Buckets = append(out.Buckets, bucketXML{Name: b.name, CreationDate: b.created.UTC().Format(xmlTimeFormat)})
		}
	}
	s.mu.RUnlock()
	sort.Slice(out.Buckets, func(i, j int) bool { return out.Buckets[i].Name < out.Buckets[j].Name })
	s.writeXML(c, http.StatusOK, out)
	return nil
}

var bucketNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
var ipLikeRE = regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`)

func validBucketName(n string) bool {
	return bucketNameRE.MatchString(n) && !strings.Contains(n, "..") && !ipLikeRE.MatchString(n)
}

func (s *Server) createBucket(c *reqCtx) *apiError {
	if !validBucketName(c.bucket) {
		return newError(http.StatusBadRequest, "InvalidBucketName", "The specified bucket is not valid.")
	}
	if len(bytes.TrimSpace(c.body.data)) > 0 {
		var cfg createBucketRequest
		if err := xml.Unmarshal(c.body.data, &cfg); err != nil {
			return errMalformedXML()
		}
		loc := cfg.LocationConstraint
		if loc != "" && loc != s.region && !(s.region == "us-east-1" && loc == "US") {
			return newError(http.StatusBadRequest, "IllegalLocationConstraintException",
				"The %s location constraint is incompatible for the region specific endpoint this request was sent to.", loc)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.buckets[c.bucket]; ok {
		if b.owner != c.ac.accessKey {
			return newError(http.StatusConflict, "BucketAlreadyExists",
				"The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again.")
		}
	} else {
		s.buckets[c.bucket] = &bucket{name: c.bucket, owner: c.ac.accessKey, created: c.now, objects: map[string]*object{}}
	}
	c.w.Header().Set("Location", "/"+c.bucket)
	c.w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) headBucket(c *reqCtx) *apiError {
	s.mu.RLock()
	_, ok := s.buckets[c.bucket]
	s.mu.RUnlock()
	if !ok {
		return errNoSuchBucket()
	}
	c.w.Header().Set("x-amz-bucket-region", s.region)
	c.w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) deleteBucket(c *reqCtx) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.buckets[c.bucket]
	if !ok {
		return errNoSuchBucket()
	}
	if len(b.objects) > 0 {
		return newError(http.StatusConflict, "BucketNotEmpty", "The bucket you tried to delete is not empty")
	}
	delete(s.buckets, c.bucket)
	for id, u := range s.uploads {
		if u.bucket == c.bucket {
			delete(s.uploads, id)
		}
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) getBucketLocation(c *reqCtx) *apiError {
	s.mu.RLock()
	_, ok := s.buckets[c.bucket]
	s.mu.RUnlock()
	if !ok {
		return errNoSuchBucket()
	}
	loc := s.region
	if loc == "us-east-1" {
		loc = ""
	}
	s.writeXML(c, http.StatusOK, locationXML{Location: loc})
	return nil
}

type listItem struct {
	key string
	obj *object
}

// listObjects implements ListObjectsV2 (v2) and ListObjects (v1).
func (s *Server) listObjects(c *reqCtx, v2 bool) *apiError {
	q := c.r.URL.Query()
	prefix, delim := q.Get("prefix"), q.Get("delimiter")
	encType := q.Get("encoding-type")
	if encType != "" && encType != "url" {
		return errInvalidArgument("Invalid Encoding Method specified in Request")
	}
	maxKeys := 1000
	if v := q.Get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errInvalidArgument("Provided max-keys not an integer or within integer range")
		}
		maxKeys = min(n, 1000)
	}
	marker := q.Get("marker")
	token := q.Get("continuation-token")
	if v2 {
		marker = q.Get("start-after")
		if q.Has("continuation-token") {
			raw, err := base64.RawURLEncoding.DecodeString(token)
			if err != nil || token == "" {
				return errInvalidArgument("The continuation token provided is incorrect")
			}
			marker = string(raw)
		}
	}

	s.mu.RLock()
	b, ok := s.buckets[c.bucket]
	var items []listItem
	if ok {
		for k, o := range b.objects {
			if strings.HasPrefix(k, prefix) && k > marker {
				items = append(items, listItem{k, o})
			}
		}
	}
	s.mu.RUnlock()
	if !ok {
		return errNoSuchBucket()
	}
	sort.Slice(items, func(i, j int) bool { return items[i].key < items[j].key })

	enc := func(v string) string {
		if encType == "url" {
			return uriEncode(v, false)
		}
		return v
	}
	var (
		contents  []listEntryXML
		prefixes  []commonPrefixXML
		count     int
		truncated bool
		last      string
		lastCP    string
	)
	own := ownerOf(b.owner)
	withOwner := !v2 || q.Get("fetch-owner") == "true"
	for _, it := range items {
		cp := ""
		if delim != "" {
			if i := strings.Index(it.key[len(prefix):], delim); i >= 0 {
				cp = it.key[:len(prefix)+i+len(delim)]
				if cp == lastCP || cp <= marker {
					continue
				}
			}
		}
		if count >= maxKeys {
			truncated = true
			break
		}
		count++
		if cp != "" {
			lastCP, last = cp, cp
			prefixes = append(prefixes, commonPrefixXML{Prefix: enc(cp)})
			continue
		}
		last = it.key
		e := listEntryXML{
			Key:          enc(it.key),
			LastModified: it.obj.modified.UTC().Format(xmlTimeFormat),
			ETag:         it.obj.etag,
			Size:         int64(len(it.obj.data)),
			StorageClass: "STANDARD",
		}
		if withOwner {
			o := own
			e.Owner = &o
		}
		contents = append(contents, e)
	}

	if v2 {
		out := listV2XML{
			Name: c.bucket, Prefix: enc(prefix), Delimiter: enc(delim), MaxKeys: maxKeys,
			KeyCount: count, IsTruncated: truncated, ContinuationToken: token,
			StartAfter: enc(q.Get("start-after")), EncodingType: encType,
			Contents: contents, CommonPrefixes: prefixes,
		}
		if truncated {
			out.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(last))
		}
		s.writeXML(c, http.StatusOK, out)
		return nil
	}
	out := listV1XML{
		Name: c.bucket, Prefix: enc(prefix), Marker: enc(marker), Delimiter: enc(delim),
		MaxKeys: maxKeys, IsTruncated: truncated, EncodingType: encType,
		Contents: contents, CommonPrefixes: prefixes,
	}
	if truncated && delim != "" {
		out.NextMarker = enc(last)
	}
	s.writeXML(c, http.StatusOK, out)
	return nil
}

func (s *Server) deleteObjects(c *reqCtx) *apiError {
	var req deleteRequest
	if err := xml.Unmarshal(c.body.data, &req); err != nil || len(req.Objects) > 1000 {
		return errMalformedXML()
	}
	out := deleteResultXML{}
	s.mu.Lock()
	b, ok := s.buckets[c.bucket]
	if ok {
		for _, o := range req.Objects {
			delete(b.objects, o.Key)
			if !req.Quiet {
				out.Deleted = append(out.Deleted, deletedXML{Key: o.Key})
			}
		}
	}
	s.mu.Unlock()
	if !ok {
		return errNoSuchBucket()
	}
	s.writeXML(c, http.StatusOK, out)
	return nil
}

func quotedETag(sum []byte) string { return `"` + hex.EncodeToString(sum) + `"` }

func (s *Server) putObject(c *reqCtx) *apiError {
	if len(c.key) > maxKeyLength {
		return newError(http.StatusBadRequest, "KeyTooLongError", "Your key is too long")
	}
	o := &object{
		data:     c.body.data,
		etag:     quotedETag(c.body.md5),
		modified: c.now,
		header:   objectHeaders(c.r),
	}
	s.mu.Lock()
	b, ok := s.buckets[c.bucket]
	var perr *apiError
	if ok {
		old := b.objects[c.key]
		perr = checkPutConditions(c.r, old)
		if perr == nil {
			b.objects[c.key] = o
		}
	}
	s.mu.Unlock()
	if !ok {
		return errNoSuchBucket()
	}
	if perr != nil {
		return perr
	}
	h := c.w.Header()
	h.Set("ETag", o.etag)
	for k, v := range c.body.verified {
		h.Set(k, v)
	}
	c.w.WriteHeader(http.StatusOK)
	return nil
}

// checkPutConditions implements conditional writes (If-None-Match: * and
// If-Match).
func checkPutConditions(r *http.Request, old *object) *apiError {
	if v := r.Header.Get("If-None-Match"); v != "" {
		if strings.TrimSpace(v) == "*" && old != nil {
			return errPrecondition()
		}
	}
	if v := r.Header.Get("If-Match"); v != "" {
		if old == nil {
			return errNoSuchKey()
		}
		if !etagMatches(v, old.etag) {
			return errPrecondition()
		}
	}
	return nil
}

func etagMatches(list, etag string) bool {
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimSpace(t)
		t = strings.TrimPrefix(t, "W/")
		if t == "*" || strings.Trim(t, `"`) == strings.Trim(etag, `"`) {
			return true
		}
	}
	return false
}

func (s *Server) lookup(bucket, key string) (*object, *apiError) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, ok := s.buckets[bucket]
	if !ok {
		return nil, errNoSuchBucket()
	}
	o, ok := b.objects[key]
	if !ok {
		return nil, errNoSuchKey()
	}
	return o, nil
}

var responseOverrides = map[string]string{
	"response-content-type":        "Content-Type",
	"response-content-language":    "Content-Language",
	"response-expires":             "Expires",
	"response-cache-control":       "Cache-Control",
	"response-content-disposition": "Content-Disposition",
	"response-content-encoding":    "Content-Encoding",
}

func (s *Server) getObject(c *reqCtx) *apiError {
	o, aerr := s.lookup(c.bucket, c.key)
	if aerr != nil {
		return aerr
	}
	size := int64(len(o.data))
	hdr := http.Header{}
	for k, vv := range o.header {
		hdr[k] = vv
	}
	hdr.Set("ETag", o.etag)
	hdr.Set("Last-Modified", o.modified.UTC().Format(http.TimeFormat))
	hdr.Set("Accept-Ranges", "bytes")
	if c.r.Method == http.MethodGet {
		q := c.r.URL.Query()
		for p, hk := range responseOverrides {
			if v := q.Get(p); v != "" {
				hdr.Set(hk, v)
			}
		}
	}
	h := c.w.Header()

	status, aerr := checkGetConditions(c.r, o)
	if aerr != nil {
		return aerr
	}
	if status == http.StatusNotModified {
		h.Set("ETag", o.etag)
		h.Set("Last-Modified", hdr.Get("Last-Modified"))
		c.w.WriteHeader(http.StatusNotModified)
		return nil
	}

	start, end, ranged, rerr := parseRange(c.r.Header.Get("Range"), size)
	if rerr != nil {
		h.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		return rerr
	}
	for k, vv := range hdr {
		h[k] = vv
	}
	status = http.StatusOK
	if ranged {
		status = http.StatusPartialContent
		h.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(end-1, 10)+"/"+strconv.FormatInt(size, 10))
	} else {
		start, end = 0, size
	}
	h.Set("Content-Length", strconv.FormatInt(end-start, 10))
	c.w.WriteHeader(status)
	if c.r.Method == http.MethodHead {
		return nil
	}
	_, _ = io.Copy(c.w, bytes.NewReader(o.data[start:end]))
	return nil
}

// checkGetConditions evaluates If-Match, If-Unmodified-Since, If-None-Match
// and If-Modified-Since as S3 does.
func checkGetConditions(r *http.Request, o *object) (int, *apiError) {
	mod := o.modified.UTC().Truncate(time.Second)
	if v := r.Header.Get("If-Match"); v != "" {
		if !etagMatches(v, o.etag) {
			return 0, errPrecondition()
		}
	} else if v := r.Header.Get("If-Unmodified-Since"); v != "" {
		if t, err := http.ParseTime(v); err == nil && mod.After(t) {
			return 0, errPrecondition()
		}
	}
	if v := r.Header.Get("If-None-Match"); v != "" {
		if etagMatches(v, o.etag) {
			return http.StatusNotModified, nil
		}
	} else if v := r.Header.Get("If-Modified-Since"); v != "" {
		if t, err := http.ParseTime(v); err == nil && !mod.After(t) {
			return http.StatusNotModified, nil
		}
	}
	return 0, nil
}

// parseRange parses a single "bytes=" range against an object of size
// bytes and returns the half-open interval [start, end). A header that is
// absent or syntactically invalid, or that asks for several ranges, is
// ignored (ranged=false: the whole object is returned, as S3 does). A
// well-formed range that cannot be satisfied yields 416 InvalidRange.
func parseRange(h string, size int64) (start, end int64, ranged bool, err *apiError) {
	if h == "" {
		return 0, 0, false, nil
	}
	spec, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false, nil
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, 0, false, nil
	}
	invalid := newError(http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The requested range is not satisfiable")
	if first == "" {
		n, perr := strconv.ParseInt(last, 10, 64)
		if perr != nil || n < 0 {
			return 0, 0, false, nil
		}
		if n == 0 || size == 0 {
			return 0, 0, false, invalid
		}
		return max(size-n, 0), size, true, nil
	}
	a, perr := strconv.ParseInt(first, 10, 64)
	if perr != nil || a < 0 {
		return 0, 0, false, nil
	}
	b := size - 1
	if last != "" {
		v, perr := strconv.ParseInt(last, 10, 64)
		if perr != nil || v < a {
			return 0, 0, false, nil
		}
		b = min(v, size-1)
	}
	if a >= size {
		return 0, 0, false, invalid
	}
	return a, b + 1, true, nil
}

func (s *Server) deleteObject(c *reqCtx) *apiError {
	s.mu.Lock()
	b, ok := s.buckets[c.bucket]
	if ok {
		delete(b.objects, c.key)
	}
	s.mu.Unlock()
	if !ok {
		return errNoSuchBucket()
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

func newUploadID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Server) createMultipart(c *reqCtx) *apiError {
	if len(c.key) > maxKeyLength {
		return newError(http.StatusBadRequest, "KeyTooLongError", "Your key is too long")
	}
	u := &upload{id: newUploadID(), bucket: c.bucket, key: c.key, initiated: c.now, header: objectHeaders(c.r), parts: map[int]*part{}}
	s.mu.Lock()
	_, ok := s.buckets[c.bucket]
	if ok {
		s.uploads[u.id] = u
	}
	s.mu.Unlock()
	if !ok {
		return errNoSuchBucket()
	}
	s.writeXML(c, http.StatusOK, initiateMultipartXML{Bucket: c.bucket, Key: c.key, UploadID: u.id})
	return nil
}

// findUpload returns the upload for the request's uploadId; the caller
// holds s.mu.
func (s *Server) findUpload(c *reqCtx) (*upload, *apiError) {
	if _, ok := s.buckets[c.bucket]; !ok {
		return nil, errNoSuchBucket()
	}
	u, ok := s.uploads[c.r.URL.Query().Get("uploadId")]
	if !ok || u.bucket != c.bucket || u.key != c.key {
		return nil, errNoSuchUpload()
	}
	return u, nil
}

func (s *Server) uploadPart(c *reqCtx) *apiError {
	q := c.r.URL.Query()
	n, err := strconv.Atoi(q.Get("partNumber"))
	if err != nil || n < 1 || n > maxPartNumber {
		return errInvalidArgument("Part number must be an integer between 1 and 10000, inclusive")
	}
	p := &part{data: c.body.data, md5: c.body.md5, etag: quotedETag(c.body.md5)}
	s.mu.Lock()
	u, aerr := s.findUpload(c)
	if aerr == nil {
		u.parts[n] = p
	}
	s.mu.Unlock()
	if aerr != nil {
		return aerr
	}
	h := c.w.Header()
	h.Set("ETag", p.etag)
	for k, v := range c.body.verified {
		h.Set(k, v)
	}
	c.w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) completeMultipart(c *reqCtx) *apiError {
	var req completeMultipartRequest
	if err := xml.Unmarshal(c.body.data, &req); err != nil || len(req.Parts) == 0 {
		return errMalformedXML()
	}
	etag, aerr := s.assemble(c, req)
	if aerr != nil {
		return aerr
	}
	s.writeXML(c, http.StatusOK, completeMultipartXML{
		Location: "/" + c.bucket + "/" + c.key, Bucket: c.bucket, Key: c.key, ETag: etag,
	})
	return nil
}

// assemble validates the part list of a CompleteMultipartUpload and stores
// the object. The ETag is the MD5 of the concatenated binary part MD5s,
// followed by "-" and the number of parts.
func (s *Server) assemble(c *reqCtx, req completeMultipartRequest) (string, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, aerr := s.findUpload(c)
	if aerr != nil {
		return "", aerr
	}
	for i := 1; i < len(req.Parts); i++ {
		if req.Parts[i].PartNumber <= req.Parts[i-1].PartNumber {
			return "", newError(http.StatusBadRequest, "InvalidPartOrder",
				"The list of parts was not in ascending order. The parts list must be specified in order by part number.")
		}
	}
	var total int64
	parts := make([]*part, 0, len(req.Parts))
	for i, rp := range req.Parts {
		p, ok := u.parts[rp.PartNumber]
		if !ok || strings.Trim(rp.ETag, `" `) != strings.Trim(p.etag, `"`) {
			return "", newError(http.StatusBadRequest, "InvalidPart",
				"One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.")
		}
		if i < len(req.Parts)-1 && len(p.data) < minPartSize {
			return "", newError(http.StatusBadRequest, "EntityTooSmall",
				"Your proposed upload is smaller than the minimum allowed object size.")
		}
		total += int64(len(p.data))
		parts = append(parts, p)
	}
	if total > s.maxObjectSize {
		return "", errEntityTooLarge(s.maxObjectSize)
	}
	b := s.buckets[c.bucket]
	if perr := checkPutConditions(c.r, b.objects[c.key]); perr != nil {
		return "", perr
	}
	data := make([]byte, 0, total)
	md5s := md5.New()
	for _, p := range parts {
		data = append(data, p.data...)
		md5s.Write(p.md5)
	}
	etag := `"` + hex.EncodeToString(md5s.Sum(nil)) + "-" + strconv.Itoa(len(parts)) + `"`
	b.objects[c.key] = &object{data: data, etag: etag, modified: c.now, header: u.header}
	delete(s.uploads, u.id)
	return etag, nil
}

func (s *Server) abortMultipart(c *reqCtx) *apiError {
	s.mu.Lock()
	u, aerr := s.findUpload(c)
	if aerr == nil {
		delete(s.uploads, u.id)
	}
	s.mu.Unlock()
	if aerr != nil {
		return aerr
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}
