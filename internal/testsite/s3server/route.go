package s3server

import (
	"net/http"
	"strings"
)

// route is the S3 operation a request maps to (path-style addressing).
type route struct {
	op          string
	bucket, key string
	// objectData is set for operations whose body is object data
	// (PutObject, UploadPart): bounded by MaxObjectSize and subject to
	// x-amz-checksum-* verification. Other bodies are limited to 1 MiB.
	objectData bool
	// err is returned after authentication (NotImplemented, ...).
	err *apiError
}

// unsupportedSubresources are query parameters that select S3 features this
// server does not implement.
var unsupportedSubresources = []string{
	"accelerate", "acl", "analytics", "attributes", "cors", "encryption",
	"intelligent-tiering", "inventory", "legal-hold", "lifecycle", "logging",
	"metrics", "notification", "object-lock", "ownershipControls", "policy",
	"policyStatus", "publicAccessBlock", "replication", "requestPayment",
	"restore", "retention", "select", "tagging", "torrent", "versioning",
	"versions", "website",
}

func routeRequest(r *http.Request) route {
	p := strings.TrimPrefix(r.URL.Path, "/")
	bucket, key, _ := strings.Cut(p, "/")
	q := r.URL.Query()
	rt := route{bucket: bucket, key: key}
	m := r.Method

	for _, sub := range unsupportedSubresources {
		if q.Has(sub) {
			rt.op = "Unsupported"
			rt.err = errNotImplemented("?" + sub)
			return rt
		}
	}

	switch {
	case bucket == "":
		if m == http.MethodGet {
			rt.op = "ListBuckets"
		} else {
			rt.op = "Unsupported"
			rt.err = newError(http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
		}
	case key == "":
		switch m {
		case http.MethodPut:
			rt.op = "CreateBucket"
		case http.MethodHead:
			rt.op = "HeadBucket"
		case http.MethodDelete:
			rt.op = "DeleteBucket"
		case http.MethodGet:
			switch {
			case q.Has("location"):
				rt.op = "GetBucketLocation"
			case q.Has("uploads"):
				rt.op = "ListMultipartUploads"
				rt.err = errNotImplemented("ListMultipartUploads")
			case q.Get("list-type") == "2":
				rt.op = "ListObjectsV2"
			default:
				rt.op = "ListObjects"
			}
		case http.MethodPost:
			if q.Has("delete") {
				rt.op = "DeleteObjects"
			} else {
				rt.op = "PostObject"
				rt.err = errNotImplemented("POST object (browser form upload)")
			}
		}
	default:
		switch m {
		case http.MethodPut:
			switch {
			case q.Has("uploadId") || q.Has("partNumber"):
				rt.op = "UploadPart"
				rt.objectData = true
				if r.Header.Get("X-Amz-Copy-Source") != "" {
					rt.op = "UploadPartCopy"
					rt.err = errNotImplemented("UploadPartCopy")
				}
			case r.Header.Get("X-Amz-Copy-Source") != "":
				rt.op = "CopyObject"
				rt.err = errNotImplemented("CopyObject")
			default:
				rt.op = "PutObject"
				rt.objectData = true
			}
		case http.MethodGet:
			if q.Has("uploadId") {
				rt.op = "ListParts"
				rt.err = errNotImplemented("ListParts")
			} else {
				rt.op = "GetObject"
			}
		case http.MethodHead:
			rt.op = "HeadObject"
		case http.MethodDelete:
			if q.Has("uploadId") {
				rt.op = "AbortMultipartUpload"
			} else {
				rt.op = "DeleteObject"
			}
		case http.MethodPost:
			switch {
			case q.Has("uploads"):
				rt.op = "CreateMultipartUpload"
			case q.Has("uploadId"):
				rt.op = "CompleteMultipartUpload"
			default:
				rt.op = "Unsupported"
				rt.err = errNotImplemented("POST on an object")
			}
		}
	}
	if rt.op == "" {
		rt.op = "Unsupported"
		rt.err = newError(http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
	}
	return rt
}
