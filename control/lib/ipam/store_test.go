package ipam

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadMissingFileIsEmpty(t *testing.T) {
	allocs, err := Load(filepath.Join(t.TempDir(), "ipam.json"))
	if err != nil || allocs == nil || len(allocs) != 0 {
		t.Errorf("Load of a missing file = %v, %v; want an empty map", allocs, err)
	}
}

func TestSaveWritesAVersionedPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Save(path, Allocations{"web": addr("10.0.0.2"), "db": addr("2001:db8::1")}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "version": 1,
  "allocations": {
    "db": "2001:db8::1",
    "web": "10.0.0.2"
  }
}
`
	if string(data) != want {
		t.Errorf("file:\n%s\nwant:\n%s", data, want)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".ipam.json-*"))
	if len(leftovers) > 0 {
		t.Errorf("left behind %v", leftovers)
	}

	if err := Save(path, nil); err != nil {
		t.Fatal(err)
	}
	if allocs, err := Load(path); err != nil || len(allocs) != 0 {
		t.Errorf("Save(nil) then Load = %v, %v", allocs, err)
	}
}

func TestLoadRefusesADamagedFile(t *testing.T) {
	for _, tc := range []struct{ content, want string }{
		{"", "not a state file: unexpected end of JSON input"},
		{`{"version": 1, "allocations": {"web": "10.0.0.2"`, "not a state file"},
		{`{"version": 1, "allocations": {"web": "10.0.0.2"}} {}`, "not a state file"},
		{`{"allocations": {"web": "10.0.0.2"}}`, "not a state file: no version"},
		{`{"version": 2, "allocations": {}}`, "version 2, written by a newer ober: this one reads version 1"},
		{`{"version": -1}`, "unknown version -1"},
		{`{"version": 1, "allocations": {"web": "10.0.0.300"}}`, "not a state file"},
		{`{"version": 1, "allocations": {"web": ""}}`, `service "web": no address`},
		{`{"version": 1, "allocations": {"": "10.0.0.1"}}`, "a service without a name"},
		{`{"version": 1, "allocations": {"web": "10.0.0.2", "db": "10.0.0.2"}}`, `services "db" and "web": both hold 10.0.0.2`},
	} {
		path := filepath.Join(t.TempDir(), "ipam.json")
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		allocs, err := Load(path)
		if err == nil || allocs != nil {
			t.Errorf("Load(%q) = %v, %v; want an error", tc.content, allocs, err)
			continue
		}
		prefix := "ipam state " + path + ": "
		if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tc.want) ||
			!strings.HasSuffix(msg, "; repair it, or remove it to give every pool's service a new address") {
			t.Errorf("Load(%q) error %q, want %q naming the file", tc.content, msg, tc.want)
		}
	}
}

func TestLoadUnreadable(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("Load of a directory = %v, want an error naming it", err)
	}
}

func TestSaveRefusesWhatLoadWould(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	err := Save(path, Allocations{"a": addr("10.0.0.1"), "b": addr("10.0.0.1")})
	if err == nil || err.Error() != `ipam state `+path+`: not saved: services "a" and "b": both hold 10.0.0.1` {
		t.Errorf("Save = %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a refused Save wrote the file: %v", err)
	}
	if err := Save(filepath.Join(path, "missing-dir", "ipam.json"), Allocations{}); err == nil {
		t.Error("Save into a missing directory succeeded")
	}
}
