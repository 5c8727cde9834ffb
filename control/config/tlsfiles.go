package config

import (
	"encoding/pem"
	"errors"
	"fmt"
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
	chain, err := certs.ParseChain(pc.certs)
	if err != nil {
		p.add(certPath, certValue, "%v", err)
		return
	}
	at := now()
	for i, c := range chain {
		if !at.After(c.NotAfter) {
			continue
		}
		which := "certificate"
		if len(chain) > 1 {
			which = fmt.Sprintf("certificate %d of %d (%s)", i+1, len(chain), c.Subject)
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
	key, err := certs.ParsePrivateKey(keys[0])
	if err != nil {
		p.add(keyPath, keyValue, "%v", err)
		return
	}
	if !certs.KeyMatches(key, chain[0]) {
		if t.Key != "" {
			p.add(keyPath, keyValue, "private key does not match the certificate in %s", certValue)
		} else {
			p.add(keyPath, keyValue, "private key does not match the certificate")
		}
	}
}

// checkCAFile checks that a backend's CA file holds certificates that
// parse.
func checkCAFile(p *problems, path, file string) {
	pc, err := readPEM(file)
	if err == nil {
		_, err = certs.ParseChain(pc.certs)
	}
	if err != nil {
		p.add(path, quote(file), "%v", err)
	}
}
