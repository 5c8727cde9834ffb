package s3server

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// crc64NVMETable is CRC-64/NVME (polynomial 0xad93d23594c93659, reflected,
// init and xor-out all ones), which hash/crc64 computes with the reversed
// polynomial.
var crc64NVMETable = crc64.MakeTable(0x9a6c9329ac4bc9b5)

var crc32cTable = crc32.MakeTable(crc32.Castagnoli)

// newChecksum returns a hash for an x-amz-checksum-<alg> algorithm name, or
// nil when the algorithm is not supported.
func newChecksum(alg string) hash.Hash {
	switch alg {
	case "crc32":
		return crc32.NewIEEE()
	case "crc32c":
		return crc32.New(crc32cTable)
	case "crc64nvme":
		return crc64.New(crc64NVMETable)
	case "sha1":
		return sha1.New()
	case "sha256":
		return sha256.New()
	}
	return nil
}

const checksumPrefix = "x-amz-checksum-"

// notChecksums are x-amz-checksum-* headers that do not carry a value.
var notChecksums = map[string]bool{"algorithm": true, "type": true, "mode": true}

type checksum struct {
	alg         string
	h           hash.Hash
	want        string // base64 value from the header; "" when from the trailer
	fromTrailer bool
}

type body struct {
	data []byte
	md5  []byte
	// checksums that were verified: header name -> base64 value.
	verified map[string]string
}

// readBody reads and verifies the whole request body: aws-chunked decoding
// with chunk/trailer signature checks, x-amz-content-sha256, Content-MD5,
// x-amz-decoded-content-length and, when objectData is set, x-amz-checksum-*
// headers and trailers. Nothing is stored before all checks pass.
func (s *Server) readBody(r *http.Request, ac *authContext, rec *Request, limit int64, objectData bool) (*body, *apiError) {
	var src io.Reader = r.Body
	if src == nil {
		src = http.NoBody
	}
	expected := r.ContentLength
	var dec *awsChunkedReader
	if isStreamingPayload(ac.payload) && !ac.presigned {
		var signer *chunkSigner
		if ac.payload != payloadStreamingUnsignedTrailer {
			signer = &chunkSigner{key: ac.signingKey, amzDate: ac.amzDate, scope: ac.scope, prev: ac.seedSig}
		}
		dec = newAWSChunkedReader(src, signer, ac.payload != payloadStreamingSigned, limit+1)
		src = dec
		expected = -1
		if v := r.Header.Get("X-Amz-Decoded-Content-Length"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return nil, errInvalidArgument("x-amz-decoded-content-length %q is not a valid length", v)
			}
			expected = n
		}
	}
	if expected > limit {
		if objectData {
			return nil, errEntityTooLarge(limit)
		}
		return nil, newError(http.StatusBadRequest, "MaxMessageLengthExceeded", "Your request was too big.")
	}

	// Checksums announced in headers or as trailers.
	var sums []*checksum
	if objectData {
		for k, vv := range r.Header {
			lk := strings.ToLower(k)
			if !strings.HasPrefix(lk, checksumPrefix) || notChecksums[lk[len(checksumPrefix):]] || len(vv) == 0 {
				continue
			}
			sums = append(sums, &checksum{alg: lk[len(checksumPrefix):], want: vv[0]})
		}
		if dec != nil {
			for _, v := range r.Header.Values("X-Amz-Trailer") {
				for _, name := range strings.Split(v, ",") {
					name = strings.ToLower(strings.TrimSpace(name))
					if strings.HasPrefix(name, checksumPrefix) {
						sums = append(sums, &checksum{alg: name[len(checksumPrefix):], fromTrailer: true})
					}
				}
			}
		}
		sort.Slice(sums, func(i, j int) bool { return sums[i].alg < sums[j].alg })
	}
	shaH, md5H := sha256.New(), md5.New()
	writers := []io.Writer{shaH, md5H}
	for _, c := range sums {
		if c.h = newChecksum(c.alg); c.h != nil {
			writers = append(writers, c.h)
		}
	}

	var buf bytes.Buffer
	if expected > 0 {
		buf.Grow(int(expected))
	}
	writers = append(writers, &buf)
	n, err := io.Copy(io.MultiWriter(writers...), io.LimitReader(src, limit+1))
	rec.BodyBytes = n
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return nil, ae
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errEntityTooLarge(limit)
		}
		return nil, errIncompleteBody("Error reading the request body: " + err.Error())
	}
	if n > limit {
		rec.BodyBytes = limit
		if objectData {
			return nil, errEntityTooLarge(limit)
		}
		return nil, newError(http.StatusBadRequest, "MaxMessageLengthExceeded", "Your request was too big.")
	}
	sum := hex.EncodeToString(shaH.Sum(nil))
	rec.BodySHA256 = sum
	if dec != nil {
		rec.Trailer = dec.trailer
	}

	if !ac.presigned && !isStreamingPayload(ac.payload) && ac.payload != payloadUnsigned {
		if !strings.EqualFold(sum, ac.payload) {
			return nil, newError(http.StatusBadRequest, "XAmzContentSHA256Mismatch",
				"The provided 'x-amz-content-sha256' header does not match what was computed (computed %s, provided %s).", sum, ac.payload)
		}
	} else if ac.presigned && ac.payload != payloadUnsigned && !strings.EqualFold(sum, ac.payload) {
		return nil, newError(http.StatusBadRequest, "XAmzContentSHA256Mismatch",
			"The provided 'X-Amz-Content-Sha256' parameter does not match what was computed.")
	}
	if expected >= 0 && n != expected {
		return nil, errIncompleteBody("You did not provide the number of bytes specified by the Content-Length or x-amz-decoded-content-length HTTP header.")
	}
	md5Sum := md5H.Sum(nil)
	if v, ok := r.Header["Content-Md5"]; ok {
		want, err := base64.StdEncoding.DecodeString(strings.TrimSpace(strings.Join(v, "")))
		if err != nil || len(want) != md5.Size {
			return nil, newError(http.StatusBadRequest, "InvalidDigest", "The Content-MD5 you specified was invalid.")
		}
		if !bytes.Equal(want, md5Sum) {
			return nil, newError(http.StatusBadRequest, "BadDigest", "The Content-MD5 you specified did not match what we received.")
		}
	}

	b := &body{data: buf.Bytes(), md5: md5Sum}
	for _, c := range sums {
		want := c.want
		if c.fromTrailer {
			vals := dec.trailer.Values(checksumPrefix + c.alg)
			if len(vals) == 0 {
				return nil, errMalformedTrailer("The trailer x-amz-checksum-" + c.alg + " announced in x-amz-trailer was not sent.")
			}
			want = vals[0]
		}
		if c.h == nil {
			rec.Checksums = append(rec.Checksums, c.alg+":unsupported")
			continue
		}
		got := base64.StdEncoding.EncodeToString(c.h.Sum(nil))
		if got != strings.TrimSpace(want) {
			rec.Checksums = append(rec.Checksums, c.alg+":mismatch")
			return nil, newError(http.StatusBadRequest, "BadDigest",
				"The %s you specified did not match the calculated checksum (computed %s, provided %s).", strings.ToUpper(c.alg), got, want)
		}
		rec.Checksums = append(rec.Checksums, c.alg+":verified")
		if b.verified == nil {
			b.verified = map[string]string{}
		}
		b.verified[checksumPrefix+c.alg] = got
	}
	return b, nil
}
