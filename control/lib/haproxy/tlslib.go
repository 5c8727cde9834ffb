package haproxy

import (
	"regexp"
	"strings"
)

// tlsLibraryRE matches the TLS library lines of `haproxy -vv`: "OpenSSL
// version" up to 2.x, "SSL library version" since 3.0 (which also names
// AWS-LC and wolfSSL).
var tlsLibraryRE = regexp.MustCompile(`(?m)^(Built with|Running on) (?:OpenSSL|SSL library) version : (.+)$`)

// TLSLibrary returns the TLS library named in `haproxy -vv` output: the
// one HAProxy runs on, which is what serves TLS, else the one it was
// built with; "" when the output names none.
func TLSLibrary(vv string) string {
	lib := ""
	for _, m := range tlsLibraryRE.FindAllStringSubmatch(vv, -1) {
		if m[1] == "Running on" || lib == "" {
			lib = strings.TrimSpace(m[2])
		}
	}
	return lib
}
