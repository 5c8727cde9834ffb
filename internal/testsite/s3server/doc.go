// Package s3server is a small, in-memory, S3-compatible object server used
// by ober's tests and lab to prove that the ingress forwards S3 requests
// untouched.
//
// # Why it exists
//
// ober sits between S3 clients and S3 servers (Ceph RGW, MinIO, ...). Those
// servers authenticate every request with AWS Signature Version 4, which
// covers the method, the path exactly as sent on the wire, the query string,
// the Host header, every x-amz-* header the client signed and (depending on
// the payload mode) the body. If the ingress rewrote any of these, for
// instance normalised the path, changed Host, dropped or re-cased a signed
// header, re-chunked an aws-chunked body or altered a byte of payload, a
// real backend would reject the request. This server performs the same
// verification on every request and records the outcome, so tests can
// assert that requests that went through the ingress still verify, byte
// for byte.
//
// # What is verified
//
//   - Header authentication (Authorization: AWS4-HMAC-SHA256 ...) and
//     presigned URLs (X-Amz-Signature in the query, with expiry checks).
//     The canonical URI is the path exactly as received (no decoding, no
//     normalisation, no double encoding); the canonical query string is
//     rebuilt by decoding and SigV4-encoding each pair and sorting.
//   - Clock skew: more than 15 minutes is RequestTimeTooSkewed.
//   - Every x-amz-* header present must be signed (AccessDenied otherwise),
//     so an ingress cannot inject one unnoticed.
//   - Payload: a hex x-amz-content-sha256 must match the body
//     (XAmzContentSHA256Mismatch); UNSIGNED-PAYLOAD is accepted as is;
//     STREAMING-AWS4-HMAC-SHA256-PAYLOAD chunk signatures are verified as a
//     chain starting at the seed signature; STREAMING-UNSIGNED-PAYLOAD-TRAILER
//     and STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER are decoded, chunk and
//     trailer signatures (when signed) are verified and the announced
//     x-amz-checksum-* trailer is checked.
//   - Content-MD5 (BadDigest) and x-amz-checksum-{crc32,crc32c,crc64nvme,
//     sha1,sha256} headers or trailers. A checksum mismatch is reported as
//     400 BadDigest, which is the code AWS documents for "the Content-MD5
//     or checksum value that you specified did not match what the server
//     received". Unknown checksum algorithms are recorded as "unsupported"
//     in Request.Checksums and not verified.
//   - x-amz-decoded-content-length must match the decoded size.
//
// The body of every authenticated request is read completely and verified
// before any state changes, so a rejected upload never leaves an object
// behind.
//
// # What is served
//
// Path-style addressing only (/bucket/key). Buckets: CreateBucket,
// HeadBucket, DeleteBucket, GetBucketLocation, ListObjectsV2, ListObjects
// (v1), DeleteObjects, and ListBuckets on GET /. Objects: PutObject,
// GetObject (single byte range), HeadObject, DeleteObject and multipart
// uploads (CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
// AbortMultipartUpload). Other sub-resources answer 501 NotImplemented.
// Requests without any credentials get 403 AccessDenied (recorded with Op
// "Anonymous"); ingress health checks treat a 403 as "up".
//
// Objects are kept in memory as []byte. Every request is appended to a
// bounded log (the last 10000) that tests read with Server.Requests.
package s3server
