package s3server

import (
	"encoding/xml"
	"fmt"
	"net/http"
)

// apiError is an S3 error response. It also implements error so that it can
// travel through io.Reader chains (the aws-chunked decoder returns it).
type apiError struct {
	Code    string
	Message string
	Status  int

	// auth marks authentication failures (bad or missing signature,
	// unknown key, skew, ...). They clear Request.AuthOK and count in
	// Server.AuthFailures.
	auth bool

	// Optional details echoed in the XML body, as S3 does for
	// SignatureDoesNotMatch, to make ingress tampering easy to diagnose.
	accessKey        string
	stringToSign     string
	canonicalRequest string
	signature        string
	headersNotSigned string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func authError(status int, code, format string, args ...any) *apiError {
	e := newError(status, code, format, args...)
	e.auth = true
	return e
}

func errAccessDenied(msg string) *apiError {
	return newError(http.StatusForbidden, "AccessDenied", "%s", msg)
}

func errSignatureMismatch(msg string) *apiError {
	return authError(http.StatusForbidden, "SignatureDoesNotMatch", "%s", msg)
}

func errIncompleteBody(msg string) *apiError {
	return newError(http.StatusBadRequest, "IncompleteBody", "%s", msg)
}

func errMalformedChunk(msg string) *apiError {
	return newError(http.StatusBadRequest, "IncompleteBody", "malformed aws-chunked body: %s", msg)
}

func errMalformedTrailer(msg string) *apiError {
	return newError(http.StatusBadRequest, "MalformedTrailerError", "%s", msg)
}

func errEntityTooLarge(limit int64) *apiError {
	return newError(http.StatusBadRequest, "EntityTooLarge",
		"Your proposed upload exceeds the maximum allowed object size (%d bytes).", limit)
}

func errNoSuchBucket() *apiError {
	return newError(http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
}

func errNoSuchKey() *apiError {
	return newError(http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
}

func errNoSuchUpload() *apiError {
	return newError(http.StatusNotFound, "NoSuchUpload",
		"The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed.")
}

func errInvalidArgument(format string, args ...any) *apiError {
	return newError(http.StatusBadRequest, "InvalidArgument", format, args...)
}

func errNotImplemented(what string) *apiError {
	return newError(http.StatusNotImplemented, "NotImplemented",
		"A header or query you provided implies functionality that is not implemented: %s", what)
}

func errMalformedXML() *apiError {
	return newError(http.StatusBadRequest, "MalformedXML",
		"The XML you provided was not well-formed or did not validate against our published schema.")
}

func errPrecondition() *apiError {
	return newError(http.StatusPreconditionFailed, "PreconditionFailed",
		"At least one of the pre-conditions you specified did not hold")
}

type errorXML struct {
	XMLName           xml.Name `xml:"Error"`
	Code              string
	Message           string
	Resource          string
	RequestID         string `xml:"RequestId"`
	BucketName        string `xml:",omitempty"`
	Key               string `xml:",omitempty"`
	AWSAccessKeyID    string `xml:"AWSAccessKeyId,omitempty"`
	SignatureProvided string `xml:",omitempty"`
	StringToSign      string `xml:",omitempty"`
	CanonicalRequest  string `xml:",omitempty"`
	HeadersNotSigned  string `xml:",omitempty"`
}

type owner struct {
	ID          string
	DisplayName string
}

type listBucketsXML struct {
	XMLName xml.Name    `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListAllMyBucketsResult"`
	Owner   owner       `xml:"Owner"`
	Buckets []bucketXML `xml:"Buckets>Bucket"`
}

type bucketXML struct {
	Name         string
	CreationDate string
}

type locationXML struct {
	XMLName  xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ LocationConstraint"`
	Location string   `xml:",chardata"`
}

type listEntryXML struct {
	Key          string
	LastModified string
	ETag         string
	Size         int64
	Owner        *owner `xml:",omitempty"`
	StorageClass string
}

type commonPrefixXML struct {
	Prefix string
}

type listV2XML struct {
	XMLName               xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
	Name                  string
	Prefix                string
	Delimiter             string `xml:",omitempty"`
	MaxKeys               int
	KeyCount              int
	IsTruncated           bool
	ContinuationToken     string `xml:",omitempty"`
	NextContinuationToken string `xml:",omitempty"`
	StartAfter            string `xml:",omitempty"`
	EncodingType          string `xml:",omitempty"`
	Contents              []listEntryXML
	CommonPrefixes        []commonPrefixXML
}

type listV1XML struct {
	XMLName        xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
	Name           string
	Prefix         string
	Marker         string
	NextMarker     string `xml:",omitempty"`
	Delimiter      string `xml:",omitempty"`
	MaxKeys        int
	IsTruncated    bool
	EncodingType   string `xml:",omitempty"`
	Contents       []listEntryXML
	CommonPrefixes []commonPrefixXML
}

type initiateMultipartXML struct {
	XMLName  xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ InitiateMultipartUploadResult"`
	Bucket   string
	Key      string
	UploadID string `xml:"UploadId"`
}

type completeMultipartXML struct {
	XMLName  xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ CompleteMultipartUploadResult"`
	Location string
	Bucket   string
	Key      string
	ETag     string
}

// completeMultipartRequest is the body of CompleteMultipartUpload. Element
// names are matched without namespace.
type completeMultipartRequest struct {
	Parts []struct {
		PartNumber int
		ETag       string
	} `xml:"Part"`
}

type createBucketRequest struct {
	LocationConstraint string
}

type deleteRequest struct {
	Quiet   bool
	Objects []struct {
		Key       string
		VersionID string `xml:"VersionId"`
	} `xml:"Object"`
}

type deleteResultXML struct {
	XMLName xml.Name         `xml:"http://s3.amazonaws.com/doc/2006-03-01/ DeleteResult"`
	Deleted []deletedXML     `xml:"Deleted"`
	Errors  []deleteErrorXML `xml:"Error"`
}

type deletedXML struct {
	Key string
}

type deleteErrorXML struct {
	Key     string
	Code    string
	Message string
}
