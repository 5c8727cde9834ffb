package s3server

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
)

const (
	maxChunkHeaderLine = 4096
	maxTrailerBytes    = 64 << 10
)

// chunkSigner holds the state needed to verify a chain of aws-chunked
// signatures: each chunk (and the trailer) is signed over the previous
// signature, starting with the seed signature of the request headers.
type chunkSigner struct {
	key     []byte
	amzDate string
	scope   string
	prev    string
}

func (c *chunkSigner) chunkSignature(chunkSHA256 string) string {
	sts := "AWS4-HMAC-SHA256-PAYLOAD\n" + c.amzDate + "\n" + c.scope + "\n" + c.prev + "\n" + emptySHA256 + "\n" + chunkSHA256
	return hex.EncodeToString(hmacSHA256(c.key, sts))
}

func (c *chunkSigner) trailerSignature(trailerSHA256 string) string {
	sts := "AWS4-HMAC-SHA256-TRAILER\n" + c.amzDate + "\n" + c.scope + "\n" + c.prev + "\n" + trailerSHA256
	return hex.EncodeToString(hmacSHA256(c.key, sts))
}

// awsChunkedReader decodes a Content-Encoding: aws-chunked body:
//
//	hex-size[;chunk-signature=sig]\r\n data \r\n ... 0[;chunk-signature=sig]\r\n
//
// followed by "\r\n" or, in the trailer modes, by trailer lines
// ("name:value") and, when signed, "x-amz-trailer-signature:sig".
// Read returns *apiError values for protocol and signature failures.
type awsChunkedReader struct {
	br          *bufio.Reader
	signer      *chunkSigner // nil for unsigned chunks
	withTrailer bool
	maxChunk    int64

	left    int64     // data bytes left in the current chunk
	claimed string    // signature announced for the current chunk
	h       hash.Hash // sha256 of the current chunk (signed mode)
	done    bool
	err     error

	chunks  int
	trailer http.Header // decoded trailer headers, lower-case names
}

func newAWSChunkedReader(body io.Reader, signer *chunkSigner, withTrailer bool, maxChunk int64) *awsChunkedReader {
	c := &awsChunkedReader{
		br:          bufio.NewReaderSize(body, 64<<10),
		signer:      signer,
		withTrailer: withTrailer,
		maxChunk:    maxChunk,
		trailer:     http.Header{},
	}
	if signer != nil {
		c.h = sha256.New()
	}
	return c
}

func (c *awsChunkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if c.left == 0 {
		if c.done {
			return 0, io.EOF
		}
		if err := c.nextChunk(); err != nil {
			c.err = err
			return 0, err
		}
		if c.done {
			return 0, io.EOF
		}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= int64(n)
	if c.h != nil {
		c.h.Write(p[:n])
	}
	if c.left == 0 {
		if ferr := c.endChunk(); ferr != nil {
			c.err = ferr
			return n, ferr
		}
		return n, nil
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errIncompleteBody("The aws-chunked body ended in the middle of a chunk.")
		}
		c.err = err
		return n, err
	}
	return n, nil
}

// readLine reads one CRLF-terminated line (without the CRLF).
func (c *awsChunkedReader) readLine() (string, error) {
	b, err := c.br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull) || len(b) > maxChunkHeaderLine:
		return "", errMalformedChunk("chunk header line too long")
	case errors.Is(err, io.EOF):
		return "", errIncompleteBody("The aws-chunked body ended before the final chunk.")
	case err != nil:
		return "", err
	}
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		return "", errMalformedChunk("chunk header line not terminated by CRLF")
	}
	return string(b[:len(b)-2]), nil
}

func (c *awsChunkedReader) nextChunk() error {
	line, err := c.readLine()
	if err != nil {
		return err
	}
	sizeStr, exts, _ := strings.Cut(line, ";")
	size, perr := strconv.ParseInt(strings.TrimSpace(sizeStr), 16, 64)
	if perr != nil || size < 0 {
		return errMalformedChunk("invalid chunk size " + strconv.Quote(sizeStr))
	}
	if size > c.maxChunk {
		return errEntityTooLarge(c.maxChunk - 1)
	}
	c.claimed = ""
	if c.signer != nil {
		for _, ext := range strings.Split(exts, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(ext), "=")
			if k == "chunk-signature" {
				c.claimed = v
			}
		}
		if c.claimed == "" {
			return errSignatureMismatch("chunk " + strconv.Itoa(c.chunks+1) + " has no chunk-signature")
		}
		c.h.Reset()
	}
	c.chunks++
	if size == 0 {
		return c.finalChunk()
	}
	c.left = size
	return nil
}

// endChunk consumes the CRLF after chunk data and verifies its signature.
func (c *awsChunkedReader) endChunk() error {
	var crlf [2]byte
	if _, err := io.ReadFull(c.br, crlf[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errIncompleteBody("The aws-chunked body ended after chunk data.")
		}
		return err
	}
	if crlf != [2]byte{'\r', '\n'} {
		return errMalformedChunk("chunk data not followed by CRLF (chunk size does not match data)")
	}
	if c.signer != nil {
		return c.checkChunkSignature(hex.EncodeToString(c.h.Sum(nil)))
	}
	return nil
}

func (c *awsChunkedReader) checkChunkSignature(chunkSHA256 string) error {
	want := c.signer.chunkSignature(chunkSHA256)
	if !hmac.Equal([]byte(want), []byte(c.claimed)) {
		return errSignatureMismatch("The chunk signature of chunk " + strconv.Itoa(c.chunks) +
			" does not match the signature we calculated (aws-chunked body altered or mis-signed).")
	}
	c.signer.prev = want
	return nil
}

func (c *awsChunkedReader) finalChunk() error {
	if c.signer != nil {
		if err := c.checkChunkSignature(emptySHA256); err != nil {
			return err
		}
	}
	if c.withTrailer {
		if err := c.readTrailer(); err != nil {
			return err
		}
		c.done = true
		return nil
	}
	// The final chunk is followed by an empty line. Tolerate a body that
	// ends right after the final chunk header, reject any other data.
	rest, err := io.ReadAll(io.LimitReader(c.br, 3))
	if err != nil {
		return err
	}
	if len(rest) != 0 && string(rest) != "\r\n" {
		return errMalformedChunk("unexpected data after the final chunk")
	}
	c.done = true
	return nil
}

// readTrailer parses the trailer section after the final chunk. Lines are
// "name:value" terminated by LF or CRLF; empty lines are ignored (clients
// differ in how many they send). In signed mode the last header must be
// x-amz-trailer-signature, computed over "name:value\n" for each trailer.
func (c *awsChunkedReader) readTrailer() error {
	raw, err := io.ReadAll(io.LimitReader(c.br, maxTrailerBytes+1))
	if err != nil {
		return err
	}
	if len(raw) > maxTrailerBytes {
		return errMalformedTrailer("The trailer section is too large.")
	}
	var canonical strings.Builder
	var sig string
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return errMalformedTrailer("The request contained trailing data that was not well-formed: " + strconv.Quote(line))
		}
		name = strings.ToLower(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		if name == "x-amz-trailer-signature" {
			if sig != "" {
				return errMalformedTrailer("x-amz-trailer-signature appears twice")
			}
			sig = value
			continue
		}
		if sig != "" {
			return errMalformedTrailer("trailer header " + name + " follows x-amz-trailer-signature")
		}
		c.trailer.Add(name, value)
		canonical.WriteString(name + ":" + value + "\n")
	}
	if c.signer != nil {
		if sig == "" {
			return errSignatureMismatch("The signed trailer has no x-amz-trailer-signature.")
		}
		want := c.signer.trailerSignature(hexSHA256([]byte(canonical.String())))
		if !hmac.Equal([]byte(want), []byte(sig)) {
			return errSignatureMismatch("The trailer signature does not match the signature we calculated.")
		}
		c.signer.prev = want
	}
	return nil
}
