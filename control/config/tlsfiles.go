package config

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/lib/certs"
)

// pemContents is what a PEM file holds that ober cares about.
type pemContents struct {
	certs []*pem.Block // CERTIFICATE blocks, in file order
	keys  []*pem.Block // private key blocks, in file order
}

func readPEM(path string) (pemContents, error) {
	data, err := readSmallFile(path)
	if err != nil {
		return pemContents{}, errors.New(fileProblem(err))
	}
	var pc pemContents
	pc.certs, pc.keys = certs.Split(data)
	return pc, nil
}

// parseCerts parses every CERTIFICATE block; the error names the block.
func parseCerts(blocks []*pem.Block) ([]*x509.Certificate, error) {
	if len(blocks) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	certs := make([]*x509.Certificate, len(blocks))
	for i, b := range blocks {
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of %d does not parse: %v", i+1, len(blocks), err)
		}
		certs[i] = c
	}
	return certs, nil
}

// checkCertAndKey checks a service's certificate chain and private key:
// both readable, every certificate parses and is unexpired, and the key
// belongs to the leaf (the first certificate). base is "services[i].tls";
// now gives the time against which certificates expire.
func checkCertAndKey(p *problems, base string, t *TLS, now func() time.Time) {
	certPath, certValue := base+".cert", quote(t.Cert)
	pc, err := readPEM(t.Cert)
	if err != nil {
		p.add(certPath, certValue, "%v", err)
		return
	}
	certs, err := parseCerts(pc.certs)
	if err != nil {
		p.add(certPath, certValue, "%v", err)
		return
	}
	at := now()
	for i, c := range certs {
		if !at.After(c.NotAfter) {
			continue
		}
		which := "certificate"
		if len(certs) > 1 {
			which = fmt.Sprintf("certificate %d of %d (%s)", i+1, len(certs), c.Subject)
		}
		p.add(certPath, certValue, "%s expired on %s", which, c.NotAfter.UTC().Format(time.RFC3339))
	}

	keyPath, keyValue, keys := certPath, certValue, pc.keys
	if t.Key != "" {
		keyPath, keyValue = base+".key", quote(t.Key)
		kc, err := readPEM(t.Key)
		if err != nil {
			p.add(keyPath, keyValue, "%v", err)
			return
		}
		if len(kc.keys) == 0 {
			p.add(keyPath, keyValue, "no PEM private key block")
			return
		}
		keys = kc.keys
	} else if len(keys) == 0 {
		p.add(certPath, certValue, "no private key in the file; add it or set tls.key")
		return
	}
	if len(keys) > 1 {
		p.add(keyPath, keyValue, "%d private keys; give exactly one", len(keys))
		return
	}
	key, err := parsePrivateKey(keys[0])
	if err != nil {
		p.add(keyPath, keyValue, "%v", err)
		return
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(certs[0].PublicKey) {
		if t.Key != "" {
			p.add(keyPath, keyValue, "private key does not match the certificate in %s", certValue)
		} else {
			p.add(keyPath, keyValue, "private key does not match the certificate")
		}
	}
}

// parsePrivateKey accepts unencrypted PKCS #1 (RSA), SEC 1 (EC) and
// PKCS #8 keys, whatever the block's label claims.
func parsePrivateKey(b *pem.Block) (crypto.Signer, error) {
	if strings.Contains(b.Type, "ENCRYPTED") || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, errors.New("private key is encrypted; HAProxy needs it unencrypted")
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

// checkCAFile checks that a backend's CA file holds certificates that
// parse.
func checkCAFile(p *problems, path, file string) {
	pc, err := readPEM(file)
	if err == nil {
		_, err = parseCerts(pc.certs)
	}
	if err != nil {
		p.add(path, quote(file), "%v", err)
	}
}
