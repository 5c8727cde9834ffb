package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sort"
)

// Manifest records what bootstrap put on the node, so that uninstall
// removes exactly that: the files with their checksums (to flag the ones
// changed since), the fstab line, the vendor repository and the
// directories it had to create to hold its files. Packages it installed
// are listed for the operator; uninstall keeps them.
type Manifest struct {
	Version int          `json:"version"`
	OS      string       `json:"os,omitempty"`
	Files   []FileRecord `json:"files"`
	// Dirs are ober's own directories, removed with what is in them.
	Dirs []string `json:"dirs"`
	// Parents are directories bootstrap created to hold its files
	// (/etc/systemd/system.conf.d, ...); uninstall removes them when empty.
	Parents []string `json:"parents,omitempty"`
	// FstabLine is the bpffs line bootstrap added to /etc/fstab under
	// FstabMarker; FstabCreated says the file did not exist before.
	FstabLine    string `json:"fstab_line,omitempty"`
	FstabCreated bool   `json:"fstab_created,omitempty"`
	// Packages are those bootstrap installed (with apt-get or dnf).
	Packages []string `json:"packages_installed,omitempty"`
	// Repo is the vendor HAProxy repository bootstrap configured.
	Repo *Repo `json:"repo,omitempty"`
	// Users and Groups are the system accounts bootstrap created (the
	// HAProxy instances' ober-haproxy); uninstall removes those and no
	// account that was there before.
	Users  []string `json:"users_created,omitempty"`
	Groups []string `json:"groups_created,omitempty"`
}

// FileRecord is one file bootstrap wrote.
type FileRecord struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// Repo is a package repository bootstrap added: its source list and the
// keyring it is signed with.
type Repo struct {
	Source  string `json:"source"`
	Keyring string `json:"keyring"`
	Line    string `json:"line"`
}

const manifestVersion = 1

// ReadManifest reads root's manifest; a missing one is (nil, nil).
func ReadManifest(root string) (*Manifest, error) {
	b, err := os.ReadFile(host(root, ManifestPath))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ManifestPath, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w (remove it to uninstall by the known paths only)", ManifestPath, err)
	}
	if m.Version != manifestVersion {
		return nil, fmt.Errorf("%s: version %d, this ober reads version %d", ManifestPath, m.Version, manifestVersion)
	}
	return &m, nil
}

// file records path with content's checksum, replacing an older record.
func (m *Manifest) file(path string, content []byte) {
	m.dropFile(path)
	m.Files = append(m.Files, FileRecord{Path: path, SHA256: sha(content)})
}

func (m *Manifest) dropFile(path string) {
	m.Files = slices.DeleteFunc(m.Files, func(f FileRecord) bool { return f.Path == path })
}

func (m *Manifest) sum(path string) (string, bool) {
	for _, f := range m.Files {
		if f.Path == path {
			return f.SHA256, true
		}
	}
	return "", false
}

// encode is the manifest's file content: sorted, so that a run that
// changes nothing writes the same bytes.
func (m *Manifest) encode() []byte {
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	sort.Strings(m.Dirs)
	sort.Strings(m.Parents)
	sort.Strings(m.Packages)
	sort.Strings(m.Users)
	sort.Strings(m.Groups)
	b, _ := json.MarshalIndent(m, "", "  ")
	return append(b, '\n')
}
