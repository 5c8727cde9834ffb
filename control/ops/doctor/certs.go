package doctor

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/certs"
)

// renewWithin is how close to expiry a certificate is worth a warning:
// enough time to renew it by hand.
const renewWithin = 30 * 24 * time.Hour

// checkCerts checks every TLS service's certificate. The configuration's
// validation already refuses expired and mismatched files when it loads
// them; doctor repeats the checks because a certificate expires while
// the configuration stays the same, and adds the ones the loader does
// not make (near expiry, names).
func checkCerts(env Env, cfg *config.Config) []Result {
	var rs []Result
	for _, s := range cfg.Services {
		if s.Mode != "tls" || s.TLS == nil {
			continue
		}
		name := "cert " + s.Name
		if s.TLS.Cert == "" {
			rs = append(rs, Result{Name: name, Status: Pass,
				Detail: "self-signed, generated in node.state_dir: clients must trust it or skip verification (labs and tests)"})
			continue
		}
		rs = append(rs, checkCert(env, name, s, cfg.VIPs))
	}
	return rs
}

func checkCert(env Env, name string, s config.Service, allVIPs []config.Addr) Result {
	r := Result{Name: name}
	fail := func(detail, fix string) Result {
		r.Status, r.Detail, r.Fix = Fail, detail, fix
		return r
	}
	cb, err := os.ReadFile(s.TLS.Cert)
	if err != nil {
		return fail(fmt.Sprintf("cannot read %s: %v", s.TLS.Cert, err), "correct services[].tls.cert")
	}
	chain, keys := certs.Split(cb)
	keyFile := s.TLS.Cert
	if s.TLS.Key != "" {
		keyFile = s.TLS.Key
		kb, err := os.ReadFile(s.TLS.Key)
		if err != nil {
			return fail(fmt.Sprintf("cannot read %s: %v", s.TLS.Key, err), "correct services[].tls.key")
		}
		_, keys = certs.Split(kb)
	}
	if len(chain) == 0 {
		return fail(s.TLS.Cert+" holds no certificate", "put the PEM certificate chain, leaf first, in "+s.TLS.Cert)
	}
	parsed, err := certs.ParseChain(chain)
	if err != nil {
		return fail(fmt.Sprintf("%s: %v", s.TLS.Cert, err), "replace the file with a valid PEM chain")
	}
	leaf := parsed[0]
	now := env.Now()
	renew := "renew the certificate and reload ober (`systemctl reload ober`)"
	// The first certificate of the chain to expire ends the chain's use.
	soonest := leaf
	for _, c := range parsed[1:] {
		if c.NotAfter.Before(soonest.NotAfter) {
			soonest = c
		}
	}
	which := "the certificate"
	if soonest != leaf {
		which = fmt.Sprintf("the chain's %q", soonest.Subject.CommonName)
	}
	if now.After(soonest.NotAfter) {
		return fail(fmt.Sprintf("%s: %s expired on %s", s.TLS.Cert, which, soonest.NotAfter.UTC().Format(time.DateOnly)), renew)
	}
	if now.Before(leaf.NotBefore) {
		return fail(fmt.Sprintf("%s: not valid before %s (check the clock)", s.TLS.Cert, leaf.NotBefore.UTC().Format(time.DateTime)), "check the node's clock (NTP), or the certificate")
	}
	if len(keys) != 1 {
		return fail(fmt.Sprintf("%s holds %d private keys, want 1", keyFile, len(keys)), "put exactly one unencrypted private key in "+keyFile)
	}
	key, err := certs.ParsePrivateKey(keys[0])
	if err != nil {
		return fail(fmt.Sprintf("%s: %v", keyFile, err), "use an unencrypted PKCS #1, PKCS #8 or EC key")
	}
	if !certs.KeyMatches(key, leaf) {
		return fail(fmt.Sprintf("the key in %s does not match the certificate in %s", keyFile, s.TLS.Cert), "pair the certificate with its own key")
	}
	left := soonest.NotAfter.Sub(now)
	r.Status = Pass
	r.Detail = fmt.Sprintf("%s, expires %s (%d days)", subjectNames(leaf), soonest.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24))
	if left < renewWithin {
		r.Status = Warn
		r.Detail = fmt.Sprintf("%s: %s expires in %d days (%s)", s.TLS.Cert, which, int(left.Hours()/24), soonest.NotAfter.UTC().Format(time.DateOnly))
		r.Fix = renew
		return r
	}
	// Clients verify a host name or an IP address against the SANs;
	// modern clients ignore the Common Name. A certificate that names
	// neither a DNS name nor one of the service's VIPs verifies for no
	// one.
	vips := s.VIPs
	if len(vips) == 0 {
		vips = allVIPs
	}
	coversVIP := false
	for _, v := range vips {
		if leaf.VerifyHostname(v.String()) == nil {
			coversVIP = true
		}
	}
	if len(leaf.DNSNames) == 0 && !coversVIP {
		r.Status = Warn
		r.Detail = fmt.Sprintf("%s names no DNS name and none of the VIPs in its subject alternative names: clients cannot verify it", s.TLS.Cert)
		r.Fix = "issue a certificate whose SANs hold the S3 endpoint's names (or the VIPs)"
	}
	return r
}

// subjectNames summarises what a certificate is for.
func subjectNames(c *x509.Certificate) string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, net.IP(ip).String())
	}
	if len(names) == 0 {
		return "CN=" + c.Subject.CommonName
	}
	if len(names) > 4 {
		names = append(names[:4], fmt.Sprintf("+%d more", len(names)-4))
	}
	return strings.Join(names, ", ")
}
