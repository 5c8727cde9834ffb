// Package upgrade replaces an installed ober binary with a newer GitHub
// release, verified by checksum and by running it, and reports and
// upgrades the distribution packages ober drives (haproxy, keepalived).
//
// The release layout is a contract with the release process: a release
// of ober-ingress/ober is tagged vX.Y.Z and carries the assets
// ober-linux-amd64, ober-linux-arm64 (static binaries) and SHA256SUMS
// (`sha256sum` output over them).
package upgrade

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// DefaultReleaseURL is GitHub's answer for the newest release (drafts
// and pre-releases excluded).
const DefaultReleaseURL = "https://api.github.com/repos/ober-ingress/ober/releases/latest"

// SumsAsset is the checksum file every release carries.
const SumsAsset = "SHA256SUMS"

// AssetName is the binary asset for an OS and architecture, in Go's
// names: ober-linux-amd64, ober-linux-arm64.
func AssetName(goos, goarch string) string { return "ober-" + goos + "-" + goarch }

// Release is one release as the GitHub REST API describes it.
type Release struct {
	// Tag is the tag name, vX.Y.Z.
	Tag     string
	Version Version
	// Assets maps an asset's name to its download URL.
	Assets map[string]string
	// URL is where the description came from.
	URL string
}

// releaseDoc is the part of GitHub's release object ober reads.
type releaseDoc struct {
	TagName string `json:"tag_name"`
	Assets  []struct {
		Name string `json:"name"`
		URL  string `json:"browser_download_url"`
	} `json:"assets"`
}

// maxDocBytes bounds the release description and SHA256SUMS: both are a
// few kilobytes; a mirror answering with something else must not fill
// memory.
const maxDocBytes = 4 << 20

// FetchRelease reads the release description at u.
func FetchRelease(ctx context.Context, c *http.Client, u, userAgent string) (*Release, error) {
	body, err := get(ctx, c, u, userAgent, "application/vnd.github+json")
	if err != nil {
		return nil, err
	}
	defer body.Close()
	var doc releaseDoc
	if err := json.NewDecoder(io.LimitReader(body, maxDocBytes)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("release %s: not a GitHub release description: %w", u, err)
	}
	if doc.TagName == "" {
		return nil, fmt.Errorf("release %s: no tag_name", u)
	}
	v, err := ParseVersion(doc.TagName)
	if err != nil {
		return nil, fmt.Errorf("release %s: tag_name: %w", u, err)
	}
	r := &Release{Tag: doc.TagName, Version: v, Assets: map[string]string{}, URL: u}
	for _, a := range doc.Assets {
		if a.Name == "" || a.URL == "" {
			continue
		}
		// Relative links resolve against the description, which lets a
		// mirror be a static directory.
		ref, err := url.Parse(a.URL)
		if err != nil {
			return nil, fmt.Errorf("release %s: asset %s: browser_download_url %q: %w", u, a.Name, a.URL, err)
		}
		base, err := url.Parse(u)
		if err != nil {
			return nil, fmt.Errorf("release URL %q: %w", u, err)
		}
		r.Assets[a.Name] = base.ResolveReference(ref).String()
	}
	return r, nil
}

// Asset returns the download URL of the asset called name.
func (r *Release) Asset(name string) (string, error) {
	if u, ok := r.Assets[name]; ok {
		return u, nil
	}
	names := make([]string, 0, len(r.Assets))
	for n := range r.Assets {
		names = append(names, n)
	}
	slices.Sort(names)
	have := "none"
	if len(names) > 0 {
		have = strings.Join(names, ", ")
	}
	return "", fmt.Errorf("release %s has no asset %s (it has: %s)", r.Tag, name, have)
}

// FetchSums downloads the release's SHA256SUMS and returns the digest
// listed for asset.
func (r *Release) FetchSums(ctx context.Context, c *http.Client, userAgent, asset string) ([]byte, error) {
	u, err := r.Asset(SumsAsset)
	if err != nil {
		return nil, err
	}
	body, err := get(ctx, c, u, userAgent, "")
	if err != nil {
		return nil, err
	}
	defer body.Close()
	sums, err := ParseSums(io.LimitReader(body, maxDocBytes))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	sum, ok := sums[asset]
	if !ok {
		return nil, fmt.Errorf("%s of %s lists no %s", SumsAsset, r.Tag, asset)
	}
	return sum, nil
}

// ParseSums reads sha256sum output: "<64 hex digits>  <name>" per line,
// with " *" before the name in binary mode. Names may carry a leading
// "./" or a directory; the file name is the key.
func ParseSums(r io.Reader) (map[string][]byte, error) {
	out := map[string][]byte{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		hexSum, name, ok := strings.Cut(line, " ")
		name = strings.TrimPrefix(strings.TrimLeft(name, " "), "*")
		sum, err := hex.DecodeString(hexSum)
		if !ok || err != nil || len(sum) != 32 || name == "" {
			return nil, fmt.Errorf("line %d: %q is not \"<sha256 hex>  <file>\"", n, line)
		}
		out[name[strings.LastIndex(name, "/")+1:]] = sum
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no checksums")
	}
	return out, nil
}

// get issues a GET and returns the body of a 200 answer. Errors name the
// URL once, in one line.
func get(ctx context.Context, c *http.Client, u, userAgent, accept string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if userAgent != "" {
		req.Header.Set("User-Agent", userAgent)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		// url.Error repeats the URL in quotes; say it once.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s%s", u, resp.Status, explain(b))
	}
	return resp.Body, nil
}

// explain turns an error body into a short suffix: GitHub's JSON message
// ("API rate limit exceeded for ...") or the first line of text.
func explain(b []byte) string {
	var doc struct {
		Message string `json:"message"`
	}
	msg := ""
	if json.Unmarshal(b, &doc) == nil && doc.Message != "" {
		msg = doc.Message
	} else {
		msg, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\n")
	}
	if msg = strings.TrimSpace(msg); msg == "" {
		return ""
	}
	if len(msg) > 160 {
		msg = msg[:160] + "..."
	}
	return ": " + msg
}
