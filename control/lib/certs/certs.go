// Package certs prepares the certificates HAProxy serves: it bundles a
// configured chain and key into the single PEM file HAProxy loads, and
// makes the self-signed certificate a lab or test node serves when no
// real one is configured. It is also the one place that reads a PEM
// chain and private key the way HAProxy will, for the configuration's
// validation, doctor and the wizard.
package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
)

// selfSignedLifetime is long enough that a lab never sees it expire and
// short enough that nobody mistakes it for a production certificate.
const selfSignedLifetime = 397 * 24 * time.Hour

// renewBefore regenerates a self-signed certificate this close to expiry.
const renewBefore = 30 * 24 * time.Hour

// SelfSigned returns the paths of a self-signed certificate and key in
// dir for the given names and addresses, generating them when missing,
// near expiry, or not covering every name and address.
func SelfSigned(dir string, names []string, addrs []netip.Addr) (certPath, keyPath string, err error) {
	certPath = filepath.Join(dir, "selfsigned.crt")
	keyPath = filepath.Join(dir, "selfsigned.key")
	if ok := covers(certPath, names, addrs); ok {
		return certPath, keyPath, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("self-signed certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("self-signed certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", "", fmt.Errorf("self-signed certificate: %w", err)
	}
	cn := "ober self-signed"
	if len(names) > 0 {
		cn = names[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"ober (self-signed, not for production)"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(selfSignedLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              names,
	}
	for _, a := range addrs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("self-signed certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("self-signed certificate: %w", err)
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", err
	}
	if err := atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// covers reports whether the certificate at path is valid for a while
// yet and names every name and address.
func covers(path string, names []string, addrs []netip.Addr) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return false
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || time.Until(c.NotAfter) < renewBefore {
		return false
	}
	for _, n := range names {
		if !slices.Contains(c.DNSNames, n) {
			return false
		}
	}
	for _, a := range addrs {
		if !slices.ContainsFunc(c.IPAddresses, func(ip net.IP) bool {
			b, ok := netip.AddrFromSlice(ip)
			return ok && b.Unmap() == a.Unmap()
		}) {
			return false
		}
	}
	return true
}

// Split returns the CERTIFICATE blocks and the private key blocks of a
// PEM text, each in file order; other blocks are ignored.
func Split(data []byte) (certs, keys []*pem.Block) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return certs, keys
		}
		switch {
		case b.Type == "CERTIFICATE":
			certs = append(certs, b)
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			keys = append(keys, b)
		}
	}
}

// Bundle returns the PEM HAProxy loads for a certificate: the chain from
// certPath followed by the private key from keyPath (or the key found in
// certPath when keyPath is empty). The configuration's validation has
// checked that the key is single, unencrypted and matches.
func Bundle(certPath, keyPath string) ([]byte, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	chain, keys := Split(cb)
	if keyPath != "" {
		kb, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, fmt.Errorf("read key: %w", err)
		}
		_, keys = Split(kb)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s holds no certificate", certPath)
	}
	if len(keys) == 0 {
		return nil, errors.New("no private key found")
	}
	var out bytes.Buffer
	for _, b := range append(chain, keys...) {
		_ = pem.Encode(&out, b)
	}
	return out.Bytes(), nil
}

// ParseChain parses every CERTIFICATE block of a chain, leaf first; the
// error names the block that does not parse.
func ParseChain(blocks []*pem.Block) ([]*x509.Certificate, error) {
	if len(blocks) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	chain := make([]*x509.Certificate, len(blocks))
	for i, b := range blocks {
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of %d does not parse: %v", i+1, len(blocks), err)
		}
		chain[i] = c
	}
	return chain, nil
}

// errEncryptedKey: HAProxy cannot load a key without its passphrase,
// and nobody is there to type it.
var errEncryptedKey = errors.New("private key is encrypted; HAProxy needs it unencrypted")

// ParsePrivateKey parses the key formats HAProxy loads without a
// passphrase: PKCS #1 (RSA), SEC 1 (EC) and PKCS #8, whatever the
// block's label claims.
func ParsePrivateKey(b *pem.Block) (crypto.Signer, error) {
	if strings.Contains(b.Type, "ENCRYPTED") || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, errEncryptedKey
	}
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("unsupported private key type %T", k)
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("%s block does not parse as a PKCS #1, PKCS #8 or EC private key", b.Type)
}

// KeyMatches reports whether key is the private key of cert: HAProxy
// refuses to start with a pair that is not.
func KeyMatches(key crypto.Signer, cert *x509.Certificate) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}
