// Package e2e holds the end-to-end tests of the ober binary. TestMain
// builds it once from ./cmd/ober (stamped with a test version) and the
// tests run it as an operator would: in network namespaces with their own
// interfaces and bpffs, with real HAProxy, keepalived and BGP routers
// (BIRD, FRR), talking to the daemon through control/api's client. They
// need root and take minutes; run one with
//
//	go test ./e2e -run TestServeReload
//
// The CLI's own unit tests (flag parsing, usage errors, help) stay in
// cmd/ober. The package has no code of its own: only this file and tests.
package e2e
